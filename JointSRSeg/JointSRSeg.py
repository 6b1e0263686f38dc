"""JointSRSeg: joint super-resolution, slice interpolation and segmentation in 3D Slicer.

Module / Widget / Logic / Test as in Slicer's scripted-module template.  The widget only binds
``Resources/UI/JointSRSeg.ui`` to the parameter node and drives a run in a worker process; everything
testable lives in the ``JointSRSegModule`` package (importable with slicer-core alone, no Qt) and
``JointSRSegLib``.  This is the only ``.py`` file at the top of the module folder: Slicer loads each
of those as a module.  Opening the panel imports neither torch nor the model code.
"""

from __future__ import annotations

from typing import Annotated

import qt
import slicer
import vtk
from JointSRSegModule.checks import DEVICES, SEG_MODEL_NONE
from JointSRSegModule.dependencies import DependencyInstaller
from JointSRSegModule.logic import (  # noqa: F401 (re-exported)
    SEG_MODELS,
    CancelledError,
    InputError,
    JointSRSegLogic,
    likely_wrong_text,
)
from JointSRSegModule.sample_data import register_sample_data
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from JointSRSegLib.vocabulary import AUTO, MAX_FACTOR, MIN_FACTOR, UNCERTAINTY_METHOD_TEXT, UNCERTAINTY_METHODS

MAX_INPUTS = 4
POLL_MS = 100
# The uncertainty Method menu's tooltip; the .ui carries the same text (Testing/test_vocabulary.py).
METHODS_TOOLTIP = "; ".join(f"{name}: {text}" for name, text in UNCERTAINTY_METHOD_TEXT.items())


class JointSRSeg(ScriptedLoadableModule):
    """Module description shown in Slicer's Help & Acknowledgement panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "JointSRSeg"
        self.parent.categories = ["Segmentation", "Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["JointSRSeg developers"]
        self.parent.helpText = """
<p>Makes thick-slice MRI/CT volumes usable in 3D, with a per-voxel uncertainty map:</p>
<ul>
<li><b>Super-resolution</b> (SR): each thick slice is subdivided into R thin slices
(output grid = the high-resolution grid the thick slices were averaged from).</li>
<li><b>Slice interpolation</b>: R-1 slices are inserted between neighbouring slices
(gapped acquisitions).</li>
<li><b>Segmentation</b>: labels on the SR grid, as a segmentation node with the model's
segment names and colours, SNOMED CT terminology, and the SR volume as its source volume.</li>
<li><b>Uncertainty</b>: shown over the SR volume, its legend in the map's unit: the probability
that a label is wrong (Atropos) or the expected absolute error as a fraction of the intensity range
(self, adapt), calibrated on held-out scans; a package's own maps are uncalibrated 0-1 scores.</li>
</ul>
<p>Models: classical interpolators (B-spline, Lanczos...) and trained packages based on
<a href="https://arxiv.org/abs/2108.10257">SwinIR</a> /
<a href="https://arxiv.org/abs/2201.01266">Swin UNETR</a>,
<a href="https://github.com/jointsrseg/JointSRSeg/blob/main/docs/architectures/disentangled_sr.md"
>CNN+ViT disentangled SR</a>,
the self-SR prior fine-tuned on the scan (<i>adapt</i>) and
<a href="https://arxiv.org/abs/1703.04977">aleatoric/epistemic uncertainty (Kendall &amp; Gal 2017)</a>.
See <a href="https://github.com/jointsrseg/JointSRSeg/blob/main/docs/slicer.md">the user guide</a>.
To try it: Sample Data module, JointSRSeg, <i>T2 5 mm slices (OpenNeuro ds000011)</i>, then Apply.
Needs Slicer 5.10 or later.</p>
<p><b>For research use only, not for diagnosis or treatment.</b></p>
"""
        self.parent.acknowledgementText = """
Built on 3D Slicer, MONAI, PyTorch and SimpleITK. Sample data: MNI152 (McConnell Brain Imaging Centre) and
OpenNeuro ds000011 (Foerde, Knowlton &amp; Poldrack 2006; public domain, acknowledging OpenfMRI and NSF grant
OCI-1131441).
Inspired by the TotalSegmentator, MONAIAuto3DSeg and nnU-Net Slicer extensions."""
        # Sample Data entries (a real 5 mm T2 and the MNI152 sample), once the application has started.
        slicer.app.connect("startupCompleted()", lambda: _registerSampleData(self.parent))


def _registerSampleData(parent) -> None:
    try:
        register_sample_data(_iconPath())
    except Exception as error:  # the SampleData module may be disabled: the module still works
        print(f"JointSRSeg: sample data not registered: {error}")


def _iconPath() -> str:
    import os

    return os.path.join(os.path.dirname(__file__), "Resources", "Icons", "JointSRSeg.png")


@parameterNodeWrapper
class JointSRSegParameterNode:
    """Everything the module panel shows; saved with the scene so a run can be repeated."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    inputVolume2: slicer.vtkMRMLScalarVolumeNode
    inputVolume3: slicer.vtkMRMLScalarVolumeNode
    inputVolume4: slicer.vtkMRMLScalarVolumeNode
    # Synced by hand with modelSelector (entries: name and id, data: id), not through SlicerParameterName:
    # the list of models is only known at run time, and a bound QComboBox needs a fixed Choice.
    # "" = preselect the default for the request (JointSRSegLogic.defaultModel).
    modelId: str = ""
    # "Segment the SR output with": none (the model's own segmentation) or atropos (predict's seg_model).
    segModel: Annotated[str, Choice(list(SEG_MODELS))] = "none"
    taskSR: bool = True
    taskInterp: bool = False
    taskSeg: bool = False
    scale: Annotated[int, WithinRange(MIN_FACTOR, MAX_FACTOR)] = 4
    srDirection: Annotated[str, Choice(["through-plane", "in-plane"])] = "through-plane"
    axis: Annotated[str, Choice(["auto", "I", "J", "K"])] = "auto"
    # cuda = GPU 0; cuda:N = GPU N; mps = Apple GPU (the worker sets CUDA_VISIBLE_DEVICES for cuda:N).
    device: Annotated[str, Choice(list(DEVICES))] = AUTO
    uncertainty: bool = False
    # The engine's methods (auto, tta, mc_dropout, uasr: JointSRSegLib.vocabulary); the map each gives per task
    # is the run report's model.uncertainty_kinds.
    uncertaintyMethod: Annotated[str, Choice(list(UNCERTAINTY_METHODS))] = AUTO
    markUncertainVoxels: bool = False
    uncertainThreshold: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    outputSR: slicer.vtkMRMLScalarVolumeNode
    outputInterp: slicer.vtkMRMLScalarVolumeNode
    outputSegmentation: slicer.vtkMRMLSegmentationNode
    outputUncertainty: slicer.vtkMRMLScalarVolumeNode


class JointSRSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: parameter binding, model info, dependency install, background run with progress."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: JointSRSegLogic | None = None
        self._parameterNode: JointSRSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._models: dict = {}
        self._modelIsDefault = True  # the selection follows the request until the user picks a model
        self._segModelIsDefault = True  # "Segment SR output with" follows the default until the user sets it
        self._choice = None  # why the default was preselected (JointSRSegLib.defaults.DefaultChoice)
        self._request = None  # ((tasks, protocol, scale), segModel) the selection was made for
        self._syncing = False
        self._run = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/JointSRSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = JointSRSegLogic()
        self._populateModels()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelSelected)
        self.ui.deviceComboBox.currentTextChanged.connect(self._updateDeviceLabel)
        self.ui.overlayOpacitySlider.valueChanged.connect(lambda value: self.logic.setOverlayOpacity(value))
        self.ui.uncertainThresholdSlider.valueChanged.connect(self.onThresholdChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.cancelButton.enabled = False
        self.ui.progressBar.visible = False
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()
        self._timer.stop()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        # The logic is a ScriptedLoadableModuleLogic: its node is the singleton tagged ModuleName=JointSRSeg.
        self.setParameterNode(JointSRSegParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: JointSRSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._modelIsDefault = not self._parameterNode.modelId  # a saved scene keeps its model if it fits
            self._request = None
            self._onParameterNodeModified()

    # ------------------------------------------------------------------ model information

    def _populateModels(self) -> None:
        """Model menu: packages, ``self`` and baselines; each entry shows the name, its tooltip the card."""
        try:
            models = self.logic.availableModels()
        except Exception as error:  # a broken user package must not hide the module
            slicer.util.errorDisplay(f"Could not list models: {error}")
            models = []
        self._models = {m.id: m for m in models}
        selector = self.ui.modelSelector
        selector.blockSignals(True)
        selector.clear()
        for index, model in enumerate(models):
            selector.addItem(model.menu_text(), model.id)
            selector.setItemData(index, model.card_text(), qt.Qt.ToolTipRole)
        selector.blockSignals(False)

    def _currentRequest(self) -> tuple:
        p = self._parameterNode
        tasks = tuple(t for t, on in (("sr", p.taskSR), ("interp", p.taskInterp), ("seg", p.taskSeg)) if on)
        return tasks, self.logic.requestProtocol(tasks, p.srDirection), p.scale

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Tasks, direction or scale changed: preselect the default model for them (logic.modelForRequest)."""
        p = self._parameterNode
        if p is None or self._syncing:
            return
        self._syncing = True
        try:
            request = self._currentRequest()
            if self._request is not None and request == self._request[0] and p.segModel != self._request[1]:
                self._segModelIsDefault = False  # the user set "Segment SR output with": it stays
            if (request, p.segModel) != self._request or p.modelId not in self._models:
                tasks, protocol, scale = request
                model, self._choice = self.logic.modelForRequest(
                    self.logic.modelsWithSegmentation(self._models, p.segModel),
                    p.modelId, self._modelIsDefault, tasks, protocol, scale, self._segModelIsDefault,
                )
                self._modelIsDefault = self._choice is not None
                if self._modelIsDefault and self._segModelIsDefault:  # e.g. SR + seg: adapt, Atropos segments
                    p.segModel = self._choice.seg_model or SEG_MODEL_NONE
                if model != p.modelId:
                    p.modelId = model
                self._request = (request, p.segModel)
            self._showModel(p.modelId)
        finally:
            self._syncing = False
        self._checkCanApply()

    def onModelSelected(self, index: int) -> None:
        """The user picked a model: it stays selected; the tasks, direction and scale adapt to it."""
        p, model = self._parameterNode, self._models.get(self.ui.modelSelector.itemData(index))
        if p is None or model is None or self._syncing:
            return
        effective = self.logic.modelsWithSegmentation({model.id: model}, p.segModel)[model.id]
        tasks, direction, scale = self.logic.requestForModel(
            effective, self._currentRequest()[0], p.srDirection, p.scale
        )
        self._syncing = True
        try:
            with slicer.util.NodeModify(p.parameterNode):
                p.modelId = model.id
                p.taskSR, p.taskInterp, p.taskSeg = ("sr" in tasks), ("interp" in tasks), ("seg" in tasks)
                p.srDirection, p.scale = direction, scale
            self._modelIsDefault, self._choice = False, None
            self._request = (self._currentRequest(), p.segModel)
            self._showModel(model.id)
        finally:
            self._syncing = False
        self._checkCanApply()

    def _showModel(self, modelId: str) -> None:
        """Selector, card text and the controls that depend on the model (texts come from the logic)."""
        model = self._models.get(modelId)
        if model is None:
            return
        selector = self.ui.modelSelector
        selector.blockSignals(True)
        selector.setCurrentIndex(selector.findData(modelId))
        selector.blockSignals(False)
        self.ui.modelInfoLabel.text = self.logic.modelInfoText(model, self._choice if self._modelIsDefault else None)
        selector.toolTip = model.card_text()
        self.ui.uncertaintyCheckBox.enabled = bool(model.uncertainty_methods)
        if not model.uncertainty_methods:
            self.ui.uncertaintyCheckBox.checked = False
        methods = ", ".join(model.uncertainty_methods) or "none"
        self.ui.uncertaintyMethodComboBox.toolTip = f"{METHODS_TOOLTIP}\nThis model: {methods}."
        selectors = [
            self.ui.inputVolumeSelector,
            self.ui.inputVolume2Selector,
            self.ui.inputVolume3Selector,
            self.ui.inputVolume4Selector,
        ]
        labels = [
            self.ui.inputVolumeLabel,
            self.ui.inputVolume2Label,
            self.ui.inputVolume3Label,
            self.ui.inputVolume4Label,
        ]
        for index, (volumeSelector, label) in enumerate(zip(selectors, labels)):
            needed = index < max(1, len(model.inputs))
            volumeSelector.visible = label.visible = needed
            if needed and index < len(model.inputs):
                name, modality = model.inputs[index]
                label.text = f"{name} ({modality}):" if modality != "any" else "Input volume:"
        self._updateDeviceLabel()

    def _updateDeviceLabel(self, *_) -> None:
        model = self._models.get(self._parameterNode.modelId if self._parameterNode else "")
        if model is None:
            return
        self.ui.deviceLabel.text = "Device: " + self.logic.describeDevice(self.ui.deviceComboBox.currentText, model)

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        ready = bool(p and p.inputVolume and (p.taskSR or p.taskInterp or p.taskSeg)) and self._run is None
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = "Run the selected tasks" if ready else "Select an input volume and a task"

    # ------------------------------------------------------------------ dependencies

    def ensureDependencies(self, model, segModel: str | None = None) -> bool:
        """What the model (and the "segment with" method) needs: PyTorch through the PyTorch extension,
        requirements.txt, the contour/atropos extras; asks first, shows every failure with its reason."""
        installer = DependencyInstaller(
            slicer,
            confirm=lambda text, title: slicer.util.confirmOkCancelDisplay(text, title),
            error=lambda text: slicer.util.errorDisplay(text, windowTitle="JointSRSeg: installation failed"),
            busy=_busy,
        )
        try:
            return installer.ensure(model, segModel)
        except Exception as error:  # never an exception outside a dialog
            slicer.util.errorDisplay(f"Checking the Python packages failed: {type(error).__name__}: {error}")
            return False

    # ------------------------------------------------------------------ running

    def onApplyButton(self) -> None:
        p = self._parameterNode
        model = self._models.get(p.modelId)
        if model is None or not self.ensureDependencies(model, p.segModel if p.taskSeg else None):
            return
        tasks = [t for t, on in (("sr", p.taskSR), ("interp", p.taskInterp), ("seg", p.taskSeg)) if on]
        outputs = {
            k: n
            for k, n in (
                ("sr", p.outputSR),
                ("interp", p.outputInterp),
                ("seg", p.outputSegmentation),
                ("uncertainty_sr", p.outputUncertainty),
            )
            if n
        }
        self._showProgress(0.0, "checking input")
        try:
            request = self.logic.prepare(
                [p.inputVolume, p.inputVolume2, p.inputVolume3, p.inputVolume4][: max(1, len(model.inputs))],
                model=p.modelId,
                tasks=tasks,
                scale=p.scale,
                axis="auto" if p.axis == "auto" else "IJK".index(p.axis),
                device=p.device,
                uncertainty=p.uncertainty,
                uncertaintyMethod=p.uncertaintyMethod,
                opacity=p.overlayOpacity,
                uncertainThreshold=p.uncertainThreshold if p.markUncertainVoxels else None,
                outputNodes=outputs,
                progress=self._showProgress,
                protocol=self._currentRequest()[1],
                segModel=p.segModel,
            )
        except InputError as error:
            self._finish(f"Cannot run: {error}", error=True)
            return
        self.ui.warningsLabel.text = "\n".join(request.warnings)
        self.ui.deviceLabel.text = "Device: " + self.logic.describeDevice(request.device, request.model)
        try:
            self._run = self.logic.runInWorker(request)  # a child process: Cancel kills it at once
        except Exception as error:
            self._finish(f"Could not start the worker process: {type(error).__name__}: {error}", error=True)
            return
        self.ui.cancelButton.enabled = True
        self._checkCanApply()
        self._timer.start()

    def onThresholdChanged(self, value: float) -> None:
        """Live: outline the last run's 'likely wrong' voxels at the new threshold and say how much they cover."""
        p = self._parameterNode
        if p is None or not p.markUncertainVoxels or p.inputVolume is None or self._run is not None:
            return
        try:
            found = self.logic.outlineLikelyWrong(p.inputVolume, value)
        except InputError as error:
            self.ui.statusLabel.text = f"Cannot outline: {error}"
            return
        if found is not None:
            self.ui.statusLabel.text = likely_wrong_text(found, value)

    def onCancelButton(self) -> None:
        if self._run is not None:
            self._run.cancel()  # kills the worker's process tree; _poll then reports "Cancelled"
            self.ui.statusLabel.text = "Cancelling..."

    def _poll(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        self._showProgress(run.fraction, run.stage)
        if getattr(run, "device", None):
            self.ui.deviceLabel.text = "Device: " + run.device
        if not run.done:
            return
        self._timer.stop()
        try:
            outputs = run.finish(self._showProgress)
        except CancelledError:
            self._finish("Cancelled; the scene is unchanged.")
            return
        except InputError as error:
            self._finish(f"Cannot run: {error}", error=True)
            return
        except Exception as error:
            import traceback

            traceback.print_exc()
            self._finish(f"Failed: {error}", error=True)
            return
        p = self._parameterNode
        with slicer.util.NodeModify(p.parameterNode):
            p.outputSR = outputs.get("sr", p.outputSR)
            p.outputInterp = outputs.get("interp", p.outputInterp)
            p.outputSegmentation = outputs.get("seg", p.outputSegmentation)
            p.outputUncertainty = outputs.get("uncertainty_sr", p.outputUncertainty)
        seconds = outputs[next(iter(outputs))].GetAttribute("JointSRSeg.runTimeSeconds") if outputs else "?"
        message = f"Done in {seconds} s: {', '.join(n.GetName() for n in outputs.values())}"
        if p.markUncertainVoxels and p.inputVolume is not None:
            found = self.logic.outlineLikelyWrong(p.inputVolume, p.uncertainThreshold)
            message += f"\n{likely_wrong_text(found, p.uncertainThreshold)}" if found else ""
        self._finish(message)

    def _showProgress(self, fraction: float, stage: str) -> None:
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = stage.capitalize() + "..."
        slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)

    def _finish(self, message: str, error: bool = False) -> None:
        self._run = None
        self.ui.progressBar.visible = False
        self.ui.cancelButton.enabled = False
        self.ui.statusLabel.text = message
        self._checkCanApply()
        if error:
            slicer.util.errorDisplay(message)


class _busy:
    """Wait cursor while installing packages."""

    def __enter__(self):
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)

    def __exit__(self, *exc):
        qt.QApplication.restoreOverrideCursor()


class JointSRSegTest(ScriptedLoadableModuleTest):
    """Self-test (Reload and Test): synthetic anisotropic volumes through the logic, geometry checked;
    B-spline in-process, and a shipped package in the worker process the panel uses."""

    MODEL_ID = "bspline"
    # A shipped package that does thick-slice SR + segmentation x4 with uncertainty, so one small run
    # covers every output a package produces: the panel's default for SR x4 when it is such a package.
    PACKAGE_REQUEST = (("sr",), "sr", 4)
    PACKAGE_TASKS = ("sr", "seg")

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (
            self.test_super_resolution_geometry,
            self.test_bad_input_message,
            self.test_default_model_card,
            self.test_parameter_node_tag,
            self.test_shipped_package_in_worker,
        ):
            self.setUp()
            test()

    def _thick_volume(self, size=(20, 24, 8), spacing=(1.0, 0.9, 4.0)):
        import numpy as np
        from JointSRSegModule import nodes

        from JointSRSegLib.volume import Volume

        i, j, k = np.meshgrid(*(np.arange(n) for n in size), indexing="ij")
        array = (100 * np.sin(i / 3.0) * np.cos(j / 4.0) + 10 * k + 200).astype(np.float32)
        direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
        volume = Volume(array, spacing, (12.0, -30.0, 40.0), direction, source="thick")
        node = nodes.new_scalar_volume_node(volume, "thick")
        slicer.mrmlScene.AddNode(node)
        node.CreateDefaultDisplayNodes()
        return node, volume

    def test_super_resolution_geometry(self) -> None:
        from JointSRSegModule import nodes

        from JointSRSegLib.geometry import subdivide_grid

        self.delayDisplay("Super-resolution of a synthetic thick-slice volume")
        node, volume = self._thick_volume()
        outputs = JointSRSegLogic().process(node, model=self.MODEL_ID, tasks=("sr",), scale=4)
        sr = outputs["sr"]
        self.assertEqual(sr.GetName(), "thick SR ×4")
        self.assertTrue(nodes.node_grid(sr).almost_equal(subdivide_grid(volume.grid, 4, 2)))
        self.assertEqual(sr.GetAttribute("JointSRSeg.model"), self.MODEL_ID)
        self.assertEqual(slicer.util.arrayFromVolume(sr).shape, (32, 24, 20))
        self.delayDisplay("Test passed")

    def test_bad_input_message(self) -> None:
        node, _ = self._thick_volume()
        node.SetSpacing(1.0, 1.0, 1.0)
        with self.assertRaises(InputError) as raised:
            JointSRSegLogic().process(node, model=self.MODEL_ID, tasks=("sr",), scale=4)
        self.assertIn("choose the axis explicitly", str(raised.exception))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), 1)

    def test_default_model_card(self) -> None:
        """The selector's default per request is a listed model whose card says research use only."""
        self.delayDisplay("Default model per task, with its model card")
        logic = JointSRSegLogic()
        models = {m.id: m for m in logic.availableModels()}
        for tasks in (("sr", "seg"), ("interp", "seg"), ("seg",)):
            model = logic.defaultModel(tasks, None, 4)
            self.assertIn(model, models)
            self.assertIn("not for diagnosis", models[model].card_text())
        self.assertEqual(logic.defaultModel(("sr",), "sr", 7), "bspline")  # no shipped package does x7
        self.delayDisplay("Test passed")

    def test_parameter_node_tag(self) -> None:
        node = JointSRSegLogic().getParameterNode()
        self.assertEqual(node.GetAttribute("ModuleName"), "JointSRSeg")
        self.assertIs(JointSRSegLogic().getParameterNode(), node)

    def test_shipped_package_in_worker(self) -> None:
        """The panel's path through the logic: a shipped package (not a classical method) in the worker
        process on a small input; SR, segmentation (names, terminology, source volume) and uncertainty
        imported back on the SR grid, with the package's provenance."""
        import importlib.util

        import numpy as np
        from JointSRSegModule import nodes

        from JointSRSegLib.geometry import subdivide_grid
        from JointSRSegLib.packaging import resolve_model

        logic = JointSRSegLogic()
        models = {m.id: m for m in logic.availableModels()}
        tasks, protocol, scale = self.PACKAGE_REQUEST
        candidates = sorted(
            m.id for m in models.values()
            if m.source == "builtin" and set(self.PACKAGE_TASKS) <= set(m.tasks) and protocol in m.protocols
            and scale in m.factors and m.uncertainty
        )
        self.assertTrue(candidates, "no shipped package does thick-slice SR + segmentation x4")
        preferred = logic.defaultModel(tasks, protocol, scale)
        package = preferred if preferred in candidates else candidates[0]
        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("Skipped the shipped-package test: PyTorch is not installed (press Apply once)")
            return
        self.delayDisplay(f"{package} in the worker process")
        node, volume = self._thick_volume(size=(32, 32, 8))
        request = logic.prepare(node, model=package, tasks=self.PACKAGE_TASKS, scale=4, device="cpu",
                                uncertainty=True)
        run = logic.runInWorker(request)
        self.assertTrue(run.wait(600), "the worker did not finish within 10 minutes")
        outputs = run.finish()
        grid = subdivide_grid(volume.grid, 4, 2)
        sr = outputs["sr"]
        self.assertTrue(nodes.node_grid(sr).almost_equal(grid))
        self.assertEqual(sr.GetAttribute("JointSRSeg.model"), package)
        self.assertEqual(sr.GetAttribute("JointSRSeg.weightsSha256"), resolve_model(package).metadata["weights_sha256"])
        segmentation = outputs["seg"].GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertEqual(names, [label["name"] for label in models[package].labels])
        for i in range(segmentation.GetNumberOfSegments()):
            self.assertIn("~SCT^", segmentation.GetNthSegment(i).GetTerminology())
        self.assertEqual(outputs["seg"].GetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE), sr.GetID())
        uncertainty = outputs["uncertainty_sr"]
        self.assertTrue(nodes.node_grid(uncertainty).almost_equal(grid))
        values = slicer.util.arrayFromVolume(uncertainty)
        self.assertTrue(np.isfinite(values).all() and values.min() >= 0.0 and values.max() <= 1.0)
        self.delayDisplay("Test passed")
