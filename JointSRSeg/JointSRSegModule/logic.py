"""The JointSRSeg module logic: scene in, ``JointSRSegLib.predict``, output nodes back.

Needs only slicer-core (MRML), numpy and JointSRSegLib -- no Qt -- so it runs in Slicer's
Python console, in a ``PythonSlicer`` script and in plain pytest on a real ``vtkMRMLScene``::

    from JointSRSegModule.logic import JointSRSegLogic
    logic = JointSRSegLogic()
    nodes = logic.process(slicer.util.getNode("T2 axial"), model="bspline", tasks=("sr",), scale=4)
    nodes["sr"]  # vtkMRMLScalarVolumeNode "T2 axial SR ×4"

A run has three steps so the GUI stays responsive: :meth:`prepare` (main thread: copy voxels,
check the request), :meth:`compute` (any thread: the network, cancellable), :meth:`importResults`
(main thread: build every node first, then commit them in one transaction that is undone if
anything fails, so a failed or cancelled run leaves the scene exactly as it was).
"""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import slicer

from JointSRSegLib.api import CancelToken, Prediction, predict
from JointSRSegLib.calibration import display_scale, fraction_above, map_units
from JointSRSegLib.defaults import DefaultChoice, choose_default, fits, request_protocol
from JointSRSegLib.errors import CancelledError, InputError
from JointSRSegLib.foreground import head_mask
from JointSRSegLib.report import package_versions
from JointSRSegLib.vocabulary import (
    AUTO,
    IMAGE_TASKS,
    RAW_UNCERTAINTY_UNIT,
    SCALE_FACTORS,
    TASKS,
    UNCERTAINTY_METHODS,
    check_axis_choice,
    check_device,
    check_protocol,
    check_uncertainty_method,
    parse_tasks,
)
from JointSRSegLib.volume import Volume

from . import checks, nodes
from .worker_run import WorkerRun

try:  # Slicer (and PythonSlicer): the real base class, so the parameter node is tagged "JointSRSeg"
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
except ImportError:  # slicer-core alone (tests, plain Python): the same contract, without Qt
    from ._compat import ScriptedLoadableModuleLogic

ProgressCallback = Callable[[float, str], None]
UNCERTAINTY_OUTPUTS = ("uncertainty_seg", "uncertainty_sr", "uncertainty_interp")  # the outline's map, first found
STAGES = ("checking input", "preparing", "running", "importing results")
DEFAULT_UNCERTAIN_THRESHOLD = 0.5
# The panel's "SR direction" -> the request's protocol (None: thick slices, or gapped when interpolating).
SR_DIRECTIONS = {"through-plane": None, "in-plane": "inplane"}
# The panel's "Segment SR output with" choices (none, or a classical method: predict's ``seg_model``).
SEG_MODELS = checks.SEG_MODELS


@dataclass
class RunRequest:
    """Everything a run needs, copied out of the scene so ``compute`` may run in a thread."""

    inputNodes: list[Any]
    volume: Volume
    model: checks.ModelDescription
    modelRef: str  # what predict() takes: a baseline name, "self", "adapt" or the verified package's path
    tasks: tuple[str, ...]
    scale: int
    axis: int
    device: str
    uncertainty: bool
    uncertaintyMethod: str  # one of JointSRSegLib.vocabulary.UNCERTAINTY_METHODS
    opacity: float
    uncertainThreshold: float | None
    outputNodes: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    estimatedBytes: int = 0
    segModel: str | None = None  # predict's seg_model: segments the model's SR output (None: the model's own)

    @property
    def inputNode(self) -> Any:
        return self.inputNodes[0]


class BackgroundRun:
    """``compute`` in a worker thread; the GUI polls ``fraction``/``stage`` and imports on the main thread.

    MRML is not thread-safe, so the worker only touches numpy arrays copied by ``prepare``.
    """

    def __init__(self, logic: JointSRSegLogic, request: RunRequest):
        self.logic, self.request = logic, request
        self.cancelToken = CancelToken()
        self.fraction, self.stage = 0.0, "running"
        self.prediction: Prediction | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="JointSRSeg", daemon=True)

    def start(self) -> BackgroundRun:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self.cancelToken.cancel()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive() and (self.prediction is not None or self.error is not None)

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return self.done

    def _report(self, fraction: float, stage: str) -> None:
        self.fraction, self.stage = fraction, stage

    def _work(self) -> None:
        try:
            self.prediction = self.logic.compute(self.request, self._report, self.cancelToken)
        except BaseException as error:  # handed to the main thread, which shows it
            self.error = error

    def finish(self, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Main thread: re-raise the worker's error or import the outputs (cancellable until commit)."""
        if self.error is not None:
            raise self.error
        if self.prediction is None:
            raise RuntimeError("the run has not finished yet")
        return self.logic.importResults(self.request, self.prediction, progress, self.cancelToken)


class SceneTransaction:
    """Undo log of one import: nodes added are removed and nodes changed restored on failure."""

    def __init__(self, scene):
        self.scene = scene
        self._before: set[str] = set()
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> SceneTransaction:
        self._before = set(nodes.scene_node_ids(self.scene))
        return self

    def rememberVolume(self, node) -> None:
        image, matrix = node.GetImageData(), nodes.node_ijk_to_ras(node)
        attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}

        def restore() -> None:
            node.SetAndObserveImageData(image)
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
            _restore_attributes(node, attributes)

        self._restore.append(restore)

    def rememberSegmentation(self, node) -> None:
        saved = slicer.vtkSegmentation()
        saved.DeepCopy(node.GetSegmentation())
        attributes = {name: node.GetAttribute(name) for name in node.GetAttributeNames() or ()}
        source = node.GetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE)

        def restore() -> None:
            node.GetSegmentation().DeepCopy(saved)
            _restore_attributes(node, attributes)
            node.SetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE, source)

        self._restore.append(restore)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            return False
        for restore in reversed(self._restore):
            restore()
        for node_id in reversed(nodes.scene_node_ids(self.scene)):
            if node_id not in self._before:
                node = self.scene.GetNodeByID(node_id)
                if node is not None:
                    self.scene.RemoveNode(node)
        return False


def _restore_attributes(node, attributes: Mapping[str, str]) -> None:
    for name in list(node.GetAttributeNames() or ()):
        if name not in attributes:
            node.RemoveAttribute(name)
    for name, value in attributes.items():
        node.SetAttribute(name, value)


def output_name(input_name: str, key: str, scale: int) -> str:
    """Node names users find in the Data module, e.g. ``"T2 SR ×4"``, ``"T2 segmentation"``."""
    names = {
        "sr": f"{input_name} SR ×{scale}",
        "interp": f"{input_name} interpolated ×{scale}",
        "seg": f"{input_name} segmentation",
        "uncertainty_sr": f"{input_name} uncertainty",
        "uncertainty_interp": f"{input_name} interpolation uncertainty",
        "uncertainty_seg": f"{input_name} segmentation uncertainty",
    }
    return names.get(key, f"{input_name} {key}")


class JointSRSegLogic(ScriptedLoadableModuleLogic):
    """Runs JointSRSegLib on volume nodes and turns the result into nodes; no GUI needed.

    A ``ScriptedLoadableModuleLogic``: ``moduleName`` is "JointSRSeg", so :meth:`getParameterNode`
    returns the scene's singleton parameter node tagged ``ModuleName = JointSRSeg``.
    """

    def __init__(self, scene=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._scene = scene
        self.predictFunction: Callable[..., Prediction] = predict

    def getParameterNode(self):
        """The module's singleton parameter node in :attr:`scene` (Slicer's rule, on this logic's scene)."""
        scene = self.scene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node.SetAttribute("ModuleName", self.moduleName)
            node = scene.AddNode(node)
        elif node.GetAttribute("ModuleName") != self.moduleName:
            node.SetAttribute("ModuleName", self.moduleName)
        return node

    @property
    def scene(self):
        return self._scene if self._scene is not None else slicer.mrmlScene

    # ------------------------------------------------------------------ models

    def availableModels(self) -> list[checks.ModelDescription]:
        """Installed packages first (built-in, then the user's), then ``self`` and the classical baselines.

        A user package with a built-in id replaces the built-in entry (``resolve_model`` runs the user's).
        Listing reads only model.json, so it works before PyTorch is installed.
        """
        found: dict[str, checks.ModelDescription] = {}
        try:
            from JointSRSegLib.packaging import available_models as registry
            from JointSRSegLib.packaging import load_package
        except ImportError:  # a dependency missing: only the baselines can run until it is installed
            registry = None
        if registry is not None:
            for info in registry(check_architectures=False):  # model.json only: no torch in Slicer's process
                if info.source != "baseline" and info.path is not None:
                    package = load_package(info.path, verify_weights=False, check_architecture=False)
                    found[info.id] = checks.describe_package(package, info.source)
        baselines = [checks.describe_baseline(name) for name in checks.BASELINES]
        learned = [checks.describe_self_supervised(), checks.describe_adaptation()]
        return list(found.values()) + learned + baselines

    # ------------------------------------------------------------------ default model per request

    def requestProtocol(self, tasks: str | Sequence[str], srDirection: str = "through-plane") -> str:
        """The protocol the panel's tasks and SR direction ask for: sr, interp or inplane."""
        interp = "interp" in parse_tasks(tasks, allow_empty=True)
        return request_protocol(tasks, SR_DIRECTIONS[srDirection] if not interp else None)

    def defaultChoice(
        self, tasks: str | Sequence[str], protocol: str | None = None, scale: int = 4, chainSegmentation: bool = True
    ) -> DefaultChoice:
        """The shipped package that best fits the request and why (``JointSRSegLib.defaults``), else bspline;
        its ``seg_model`` (e.g. ``"atropos"``) is the "Segment SR output with" choice that goes with it.
        ``chainSegmentation=False``: the user set that menu, so no default SR + Atropos pair is offered."""
        return choose_default(
            tasks, protocol, scale, fallback=checks.BASELINES[0], chain_segmentation=chainSegmentation
        )

    def defaultModel(self, tasks: str | Sequence[str], protocol: str | None = None, scale: int = 4) -> str:
        """Id of the model the selector preselects, e.g. ``defaultModel("interp", None, 4)`` -> the TASC package."""
        return self.defaultChoice(tasks, protocol, scale).model or checks.BASELINES[0]

    @staticmethod
    def modelFits(model: checks.ModelDescription, tasks: Sequence[str], protocol: str | None, scale: int) -> bool:
        return fits(model.tasks, model.protocols, model.factors, tasks, protocol, scale)

    def modelForRequest(
        self,
        models: Mapping[str, checks.ModelDescription],
        currentId: str,
        currentIsDefault: bool,
        tasks: Sequence[str],
        protocol: str | None,
        scale: int,
        chainSegmentation: bool = True,
    ) -> tuple[str, DefaultChoice | None]:
        """After the tasks, direction or scale changed: keep a model the user picked while it still fits,
        else preselect the default for the new request.  Returns the model id and, when it is the
        default, the :class:`DefaultChoice` (None: the user's pick was kept)."""
        current = models.get(currentId)
        if current is not None and not currentIsDefault and self.modelFits(current, tasks, protocol, scale):
            return currentId, None
        choice = self.defaultChoice(tasks, protocol, scale, chainSegmentation)
        if choice.model not in models:  # e.g. a package that no longer loads
            fallback = checks.BASELINES[0]
            choice = DefaultChoice(fallback, f"{choice.reason}; {choice.model} is not available, using {fallback}")
        return choice.model, choice

    @staticmethod
    def requestForModel(
        model: checks.ModelDescription, tasks: Sequence[str], srDirection: str, scale: int
    ) -> tuple[tuple[str, ...], str, int]:
        """After the user picked ``model``: the tasks, SR direction and scale adjusted so that it fits
        (tasks it cannot do unticked, its protocol's task ticked, the nearest factor it supports)."""
        kept = [t for t in parse_tasks(tasks, allow_empty=True) if t in model.tasks]
        protocol = model.protocols[0] if len(model.protocols) == 1 else None
        if protocol == "interp" and "interp" in model.tasks:
            kept = [t for t in kept if t != "sr"] + ([] if "interp" in kept else ["interp"])
        if not kept:
            kept = [model.tasks[0]]
        direction = "in-plane" if protocol == "inplane" else "through-plane"
        factor, usable = int(scale), [f for f in model.factors if f in SCALE_FACTORS]  # the panel's range
        if usable and factor not in usable:
            factor = min(usable, key=lambda f: (abs(f - factor), f))
        return tuple(t for t in TASKS if t in kept), direction, factor

    def modelInfoText(self, model: checks.ModelDescription, choice: DefaultChoice | None = None) -> str:
        """The box under the selector: the model card text, and why the model was preselected."""
        text = model.card_text()
        if choice is not None:
            text += f"\nPreselected: {choice.reason}."
        return text

    def resolveModel(self, model: str | Path) -> tuple[checks.ModelDescription, Any]:
        """The model's description and what ``predict`` takes (baseline name or verified package)."""
        if str(model) in checks.BASELINES:
            return checks.describe_baseline(str(model)), str(model)
        if str(model) == checks.SELF_SUPERVISED:
            return checks.describe_self_supervised(), checks.SELF_SUPERVISED
        if str(model) == checks.ADAPTATION:
            return checks.describe_adaptation(), checks.ADAPTATION
        from JointSRSegLib.packaging import resolve_model

        package = resolve_model(model)  # verifies the weights' sha256 before anything runs
        return checks.describe_package(package), str(package.path)

    @staticmethod
    def withSegmentationModel(model: checks.ModelDescription, segModel: str | None) -> checks.ModelDescription:
        """``model`` as the run sees it when ``segModel`` (e.g. ``"atropos"``) segments its SR output:
        it then does segmentation too, with GM/WM labels (and, for a classical SR, the posterior uncertainty)."""
        if segModel in (None, "", checks.SEG_MODEL_NONE):
            return model
        if segModel not in checks.SEG_MODELS:
            raise InputError(
                None, f"unknown segmentation method {segModel!r}; choose from {', '.join(checks.SEG_MODELS)}"
            )
        if not set(IMAGE_TASKS) & set(model.tasks):
            raise InputError(model.id, f"does no super-resolution for {segModel} to segment; choose an SR model")
        if "contour" == model.id:
            raise InputError(model.id, f"interpolates label maps; {segModel} segments images")
        tasks = tuple(t for t in TASKS if t in model.tasks or t == "seg")
        peer = checks.describe_baseline(segModel)
        uncertainty = model.uncertainty or (peer.uncertainty if model.is_baseline else ())
        # The segmenter maps its own posterior (auto) whatever method samples the model's SR.
        methods = tuple(m for m in UNCERTAINTY_METHODS if m == AUTO or m in model.uncertainty_methods)
        return replace(
            model, tasks=tasks, labels=list(checks.TISSUE_LABELS), uncertainty=uncertainty, uncertainty_methods=methods
        )

    def modelsWithSegmentation(
        self, models: Mapping[str, checks.ModelDescription], segModel: str | None
    ) -> dict[str, checks.ModelDescription]:
        """The selector's models as :meth:`withSegmentationModel` sees them (those it refuses unchanged),
        so a model without segmentation fits a request with segmentation ticked when ``segModel`` segments."""
        result = {}
        for key, model in models.items():
            try:
                result[key] = self.withSegmentationModel(model, segModel)
            except InputError:
                result[key] = model
        return result

    # ------------------------------------------------------------------ the three steps

    def prepare(
        self,
        inputVolume: Any | Sequence[Any],
        model: str | Path = "bspline",
        tasks: Sequence[str] = ("sr",),
        scale: int = 4,
        axis: int | str = AUTO,
        device: str = AUTO,
        uncertainty: bool = False,
        uncertaintyMethod: str = AUTO,
        opacity: float = 0.5,
        uncertainThreshold: float | None = None,
        outputNodes: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        protocol: str | None = None,
        segModel: str | None = None,
    ) -> RunRequest:
        """Main thread: check the request and copy the voxels; raises InputError with the fix.

        ``protocol`` (sr, interp, inplane; the panel's tasks and SR direction) makes a model made for
        another kind of input fail here with the fix; None runs the model on its own protocol.
        ``segModel`` ("none" or "atropos", the panel's "Segment SR output with") segments the model's
        SR output with that classical method (``predict``'s ``seg_model``) when segmentation is ticked.
        ``device`` and ``uncertaintyMethod`` take the library's words (``JointSRSegLib.vocabulary``;
        ``cuda:N`` picks GPU N) and the method must be one the model has.
        """
        notify = progress or (lambda fraction, stage: None)
        notify(0.0, "checking input")
        inputs = list(inputVolume) if isinstance(inputVolume, (list, tuple)) else [inputVolume]
        inputs = [n for n in inputs if n is not None]
        if not inputs:
            raise InputError(None, "select an input volume")
        tasks = parse_tasks(tasks, allow_empty=True)  # none ticked: check_request says what to tick
        device = check_device(device, gpu_index=True)
        uncertaintyMethod = check_uncertainty_method(uncertaintyMethod)
        axis = check_axis_choice(axis)
        if protocol is not None:
            check_protocol(protocol)
        description, reference = self.resolveModel(model)
        if "seg" not in tasks or segModel in (None, "", checks.SEG_MODEL_NONE):
            segModel = None
        description = self.withSegmentationModel(description, segModel)
        notify(0.02, "preparing")
        volume = nodes.volume_from_nodes(inputs, [name for name, _ in description.inputs])
        modalities = [nodes.input_modality(self.scene, n) for n in inputs]
        result = checks.check_request(
            volume,
            description,
            tasks,
            scale,
            axis,
            modalities,
            device,
            uncertainty,
            protocol=protocol,
            uncertainty_method=uncertaintyMethod,
        )
        return RunRequest(
            inputNodes=inputs,
            volume=volume,
            model=description,
            modelRef=reference,
            tasks=tasks,
            scale=int(scale),
            axis=result.axis,
            device=checks.resolve_device(device, description),
            uncertainty=bool(uncertainty),
            uncertaintyMethod=uncertaintyMethod,
            opacity=float(opacity),
            uncertainThreshold=uncertainThreshold,
            outputNodes=dict(outputNodes or {}),
            warnings=result.warnings,
            estimatedBytes=result.estimated_bytes,
            segModel=segModel,
        )

    def compute(
        self, request: RunRequest, progress: ProgressCallback | None = None, cancel: CancelToken | None = None
    ) -> Prediction:
        """Any thread: run the model on the copied voxels (no MRML access)."""
        notify = progress or (lambda fraction, stage: None)
        options = {}
        if request.uncertainty and request.uncertaintyMethod != AUTO:
            options["uncertainty_method"] = request.uncertaintyMethod
        if request.segModel:
            options["seg_model"] = request.segModel

        def scaled(fraction: float, stage: str) -> None:
            notify(0.05 + 0.85 * float(fraction), "running" if stage in ("done", "checking input") else stage)

        notify(0.05, "running")
        device = request.device
        if device.startswith("cuda:"):  # in-process: make GPU N current, the library takes "cuda"
            import torch

            torch.cuda.set_device(int(device.split(":", 1)[1]))
            device = "cuda"
        return self.predictFunction(
            request.volume,
            model=request.modelRef,
            tasks=request.tasks,
            scale=request.scale,
            axis=request.axis,
            device=device,
            uncertainty=request.uncertainty,
            progress=scaled,
            cancel=cancel,
            **options,
        )

    def importResults(
        self,
        request: RunRequest,
        prediction: Prediction,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> dict[str, Any]:
        """Main thread: outputs to nodes, all-or-nothing."""
        report = prediction.report
        model_report = report.get("model", {})
        provenance = {
            "model": request.model.id,
            "modelVersion": model_report.get("version") or request.model.version or _library_version(report),
            "weightsSha256": model_report.get("weights_sha256") or "none (classical interpolation)",
            "device": model_report.get("device", request.device),
            "parameters": {
                "tasks": list(request.tasks),
                "scale": request.scale,
                "axis": int(request.axis),
                "uncertainty": request.uncertainty,
                "uncertaintyMethod": request.uncertaintyMethod,
                "segModel": request.segModel or checks.SEG_MODEL_NONE,
            },
            "runTimeSeconds": report.get("timings_s", {}).get("total"),
            "packageVersions": report.get("versions") or package_versions(),
            "inputs": [n.GetName() for n in request.inputNodes],
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "report": report,
        }
        return self.createOutputNodes(
            request.inputNode,
            prediction.outputs,
            scale=request.scale,
            labels=request.model.labels,
            provenance=provenance,
            opacity=request.opacity,
            uncertainThreshold=request.uncertainThreshold,
            outputNodes=request.outputNodes,
            progress=progress,
            cancel=cancel,
        )

    # ------------------------------------------------------------------ one call for the console

    def process(self, inputVolume: Any | Sequence[Any], model: str | Path = "bspline", **kwargs) -> dict[str, Any]:
        """Synchronous run (console, scripts, tests): returns the output nodes by name.

        Keyword arguments are those of :meth:`prepare` plus ``cancel`` (a ``CancelToken``).
        """
        cancel = kwargs.pop("cancel", None) or CancelToken()
        progress = kwargs.get("progress")
        started = time.perf_counter()
        request = self.prepare(inputVolume, model=model, **kwargs)
        prediction = self.compute(request, progress, cancel)
        outputs = self.importResults(request, prediction, progress, cancel)
        slicer_log(f"JointSRSeg: {model} finished in {time.perf_counter() - started:.1f} s")
        return outputs

    def describeDevice(self, device: str, model: checks.ModelDescription) -> str:
        """The device line of the panel, e.g. "CPU (8 threads)" or "GPU: NVIDIA H100 (80 GiB)"."""
        return checks.describe_device(checks.resolve_device(device.lower(), model))

    def runInBackground(self, request: RunRequest) -> BackgroundRun:
        """In-process thread (console scripts); the panel uses :meth:`runInWorker`."""
        return BackgroundRun(self, request).start()

    def runInWorker(self, request: RunRequest, python: str | None = None, env: Mapping[str, str] | None = None):
        """The run in a child process (``python -m JointSRSegLib.worker``): the GUI keeps its GIL, Cancel
        kills the process tree at once, and a crash leaves Slicer and the scene as they were."""
        return WorkerRun(self, request, python=python, env=dict(env or {})).start()

    # ------------------------------------------------------------------ nodes

    def createOutputNodes(
        self,
        inputNode,
        outputs: Mapping[str, Volume],
        scale: int,
        labels: Sequence[Mapping[str, Any]] = (),
        provenance: Mapping[str, Any] | None = None,
        opacity: float = 0.5,
        uncertainThreshold: float | None = None,
        outputNodes: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> dict[str, Any]:
        """Create or update one node per output volume; a failure or cancel undoes everything.

        ``outputs`` uses ``predict``'s keys (sr, interp, seg, uncertainty_sr, uncertainty_seg);
        ``labels`` is the package's label list (value, name, colour, optional snomed).
        """
        notify = progress or (lambda fraction, stage: None)
        token = cancel or CancelToken()
        scene = self.scene
        explicit = dict(outputNodes or {})
        notify(0.9, "importing results")
        token.raise_if_cancelled()
        result: dict[str, Any] = {}
        with SceneTransaction(scene) as transaction:
            for index, key in enumerate(sorted(outputs, key=_output_order)):
                token.raise_if_cancelled()
                name = output_name(inputNode.GetName(), key, scale)
                node = explicit.get(key) or nodes.find_output_node(scene, _class_of(key), name, key, inputNode)
                result[key] = self._writeOutput(transaction, node, key, name, outputs[key], labels, result)
                node = result[key]
                node.SetAttribute(nodes.ROLE_ATTRIBUTE, key)
                node.SetAttribute(nodes.SOURCE_ATTRIBUTE, inputNode.GetID())
                nodes.set_provenance(node, dict(provenance or {}, output=key))
                nodes.place_next_to(scene, node, inputNode)
                if inputNode.GetParentTransformNode() is not None:  # outputs live in the input's frame
                    node.SetAndObserveTransformNodeID(inputNode.GetParentTransformNode().GetID())
                notify(0.9 + 0.1 * (index + 1) / max(1, len(outputs)), "importing results")
            if "seg" in result:  # after the transforms: segmentation and its source share one frame
                nodes.set_source_volume(result["seg"], self._sourceVolume(inputNode, result), outputs["seg"].grid)
            self._addUncertainVoxels(transaction, inputNode, result, outputs, uncertainThreshold)
            self._display(inputNode, result, opacity, map_units((provenance or {}).get("report") or {}))
        notify(1.0, "done")
        return result

    def _writeOutput(self, transaction, node, key, name, volume, labels, written) -> Any:
        scene = self.scene
        if key == "seg":
            if node is None:
                node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
                node.CreateDefaultDisplayNodes()
            else:
                transaction.rememberSegmentation(node)
            nodes.fill_segmentation(node, volume, labels)
            return node
        fresh = nodes.new_scalar_volume_node(volume, name)
        if node is None:
            scene.AddNode(fresh)
            return fresh
        transaction.rememberVolume(node)
        node.SetAndObserveImageData(fresh.GetImageData())
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(nodes.node_ijk_to_ras(fresh)))
        return node

    @staticmethod
    def _sourceVolume(inputNode, result: Mapping[str, Any]):
        """The volume Segment Editor and DICOM SEG export should take as the segmentation's source:
        the SR (or interpolated) volume, on whose grid the labels lie; else the input itself."""
        return result.get("sr") or result.get("interp") or inputNode

    def _addUncertainVoxels(self, transaction, inputNode, result, outputs, threshold) -> None:
        key = next((k for k in UNCERTAINTY_OUTPUTS if k in outputs), None)
        if threshold is None or key is None:
            return
        target = result.get("seg") or self._uncertainTarget(inputNode, result, outputs[key].grid, transaction)
        if target is not result.get("seg"):
            result["uncertain"] = target
        nodes.add_uncertain_voxels_segment(target, outputs[key], float(threshold))

    def _uncertainTarget(self, inputNode, result, grid, transaction=None):
        """The segmentation that carries the 'uncertain voxels' outline when the run has no segmentation."""
        name = f"{inputNode.GetName()} uncertain voxels"
        target = nodes.find_output_node(self.scene, "vtkMRMLSegmentationNode", name, "uncertain", inputNode)
        if target is None:
            target = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            target.CreateDefaultDisplayNodes()
            target.SetAttribute(nodes.ROLE_ATTRIBUTE, "uncertain")
            target.SetAttribute(nodes.SOURCE_ATTRIBUTE, inputNode.GetID())
            nodes.place_next_to(self.scene, target, inputNode)
        elif transaction is not None:
            transaction.rememberSegmentation(target)
        if inputNode.GetParentTransformNode() is not None:
            target.SetAndObserveTransformNodeID(inputNode.GetParentTransformNode().GetID())
        nodes.set_source_volume(target, self._sourceVolume(inputNode, result), grid)
        return target

    def outlineLikelyWrong(self, inputNode, threshold: float) -> dict[str, Any] | None:
        """The panel's live threshold slider: outline, on the segmentation of ``inputNode``'s last run, the
        voxels whose uncertainty is at or above ``threshold`` (in the map's unit), and say what share of the
        region they cover -- the segmented tissue for a segmentation map, the head for an SR map.  None when
        the input has no uncertainty output yet."""
        outputs = {nodes.output_role(n): n for n in nodes.outputs_of(self.scene, inputNode)}
        key = next((k for k in UNCERTAINTY_OUTPUTS if k in outputs), None)
        if key is None:
            return None
        uncertainty = nodes.volume_from_nodes([outputs[key]])
        found = {k: v for k, v in outputs.items() if k in TASKS}
        target = outputs.get("seg") or self._uncertainTarget(inputNode, found, uncertainty.grid)
        nodes.add_uncertain_voxels_segment(target, uncertainty, float(threshold))
        if key == "uncertainty_seg" and "seg" in outputs:
            region, where = nodes.segmentation_mask(outputs["seg"], uncertainty.grid), "of the segmented tissue"
        elif "sr" in outputs or "interp" in outputs:
            image = nodes.volume_from_nodes([outputs.get("sr") or outputs["interp"]])
            region, where = head_mask(image), "of the head"
        else:
            region, where = None, "of the volume"
        unit = outputs[key].GetAttribute(nodes.UNIT_ATTRIBUTE) or RAW_UNCERTAINTY_UNIT
        fraction = fraction_above(uncertainty.array[0], float(threshold), region)
        return {"segmentation": target, "key": key, "unit": unit, "fraction": fraction, "region": where}

    def _display(self, inputNode, result: Mapping[str, Any], opacity: float, units: Mapping[str, str]) -> None:
        """SR (or interpolated) volume as background, uncertainty as foreground, segmentation on top; each
        uncertainty map's legend says its unit (the run report's, :func:`JointSRSegLib.calibration.map_units`)."""
        background = result.get("sr") or result.get("interp")
        for key in IMAGE_TASKS:
            if key in result:
                nodes.copy_display(inputNode, result[key])
        uncertainty_keys = [k for k in ("uncertainty_sr", "uncertainty_interp", "uncertainty_seg") if k in result]
        for key in uncertainty_keys:
            unit, top = display_scale(key, units.get(key, RAW_UNCERTAINTY_UNIT))
            nodes.show_uncertainty(result[key], unit=unit, top=top)
        foreground = result[uncertainty_keys[0]] if uncertainty_keys else None
        if background is not None or foreground is not None:
            nodes.show_in_slice_views(self.scene, background, foreground, opacity)

    def setOverlayOpacity(self, opacity: float) -> None:
        """Live opacity slider: only the slice views' foreground opacity changes."""
        for composite in nodes._nodes_of_class(self.scene, "vtkMRMLSliceCompositeNode"):
            composite.SetForegroundOpacity(float(opacity))


def likely_wrong_text(found: Mapping[str, Any], threshold: float) -> str:
    """The panel's one-line summary of :meth:`JointSRSegLogic.outlineLikelyWrong`, in the map's unit."""
    return (f"Likely wrong ({found['unit']} >= {float(threshold):.2f}): "
            f"{100.0 * found['fraction']:.1f} % {found['region']}")


def _output_order(key: str) -> int:
    """Volumes before the segmentation (its reference geometry is the SR grid), uncertainty last."""
    return {"sr": 0, "interp": 1, "seg": 2}.get(key, 3)


def _class_of(key: str) -> str:
    return "vtkMRMLSegmentationNode" if key == "seg" else "vtkMRMLScalarVolumeNode"


def _library_version(report: Mapping[str, Any]) -> str:
    return f"jointsrseg {report.get('versions', {}).get('jointsrseg', 'unknown')}"


def slicer_log(message: str) -> None:
    """Console log in Slicer (and in scripts); quiet under pytest."""
    if "PYTEST_CURRENT_TEST" not in os.environ:
        print(message)


__all__ = [
    "SR_DIRECTIONS",
    "BackgroundRun",
    "CancelToken",
    "CancelledError",
    "InputError",
    "JointSRSegLogic",
    "RunRequest",
    "SceneTransaction",
    "WorkerRun",
    "likely_wrong_text",
    "output_name",
]
