"""Opening the panel imports neither torch nor the model code, and the widget only uses names the .ui has.

The Qt layer cannot run here, so ``JointSRSeg.py`` is imported in a fresh interpreter with a thin
stand-in for the Qt-only names it touches (``qt``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper``, ``slicer.util`` GUI helpers, ``slicer.app``) on top of slicer-core's
real MRML scene.  The stand-in ``ui`` answers only the widget names found in the .ui file, so any
other name fails; then the widget is set up (model list, parameter node, device line), a model is
picked and the scene is closed -- what opening the module and touching the selector does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = r'''
import sys, types, unittest, xml.etree.ElementTree as ET
from pathlib import Path
ROOT = Path(sys.argv[1])
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]
import slicer, vtk

class Signal:
    def __init__(self): self.slots = []
    def connect(self, slot): self.slots.append(slot)

class Widget:
    """A .ui widget: any property can be set and read; signals are recorded."""
    def __init__(self, name):
        self.__dict__.update(name=name, items=[], _signals={}, currentIndex=0, currentText="auto", text="")
    def __getattr__(self, attr):
        if attr.endswith("Changed") or attr in ("clicked", "timeout"):
            return self._signals.setdefault(attr, Signal())
        raise AttributeError(f"{self.name}.{attr}")
    def connect(self, signal, slot): self._signals.setdefault(signal, Signal()).connect(slot)
    def blockSignals(self, on): pass
    def clear(self): self.items.clear()
    def addItem(self, text, data=None): self.items.append((text, data))
    def setItemData(self, index, value, role): pass
    def findData(self, data): return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)
    def setCurrentIndex(self, index): self.__dict__["currentIndex"] = index
    def itemData(self, index): return self.items[index][1]
    def setMRMLScene(self, scene): pass

names = {w.get("name") for w in ET.parse(ROOT / "JointSRSeg/Resources/UI/JointSRSeg.ui").iter("widget")}
class UI:
    def __init__(self): self.__dict__["_w"] = {n: Widget(n) for n in names}
    def __getattr__(self, name):
        if name not in self._w:
            raise AssertionError(f"the widget uses ui.{name}, which JointSRSeg.ui does not have")
        return self._w[name]

qt = types.ModuleType("qt")
class QTimer:
    def __init__(self): self.timeout = Signal(); self.active = False
    def setInterval(self, ms): pass
    def start(self): self.active = True
    def stop(self): self.active = False
qt.QTimer = QTimer
qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=3)
qt.QEventLoop = types.SimpleNamespace(ExcludeUserInputEvents=1)
qt.QApplication = types.SimpleNamespace(setOverrideCursor=lambda c: None, restoreOverrideCursor=lambda: None)
sys.modules["qt"] = qt

scene = slicer.vtkMRMLScene()
slicer.mrmlScene = scene
slicer.app = types.SimpleNamespace(connect=lambda *a: None, processEvents=lambda *a: None)
errors = []
util = slicer.util
util.loadUI = lambda path: Widget("JointSRSeg")
util.childWidgetVariables = lambda widget: UI()
util.errorDisplay = lambda text, **kw: errors.append(text)
util.confirmOkCancelDisplay = lambda *a, **k: False
class NodeModify:
    def __init__(self, node): pass
    def __enter__(self): return self
    def __exit__(self, *a): return False
util.NodeModify = NodeModify
class VTKObservationMixin:
    def __init__(self): self.observed = []
    def addObserver(self, obj, event, method): self.observed.append((obj, event, method))
    def removeObserver(self, obj, event, method): pass
    def removeObservers(self): self.observed = []
util.VTKObservationMixin = VTKObservationMixin

from JointSRSegModule._compat import ScriptedLoadableModuleLogic
slm = types.ModuleType("slicer.ScriptedLoadableModule")
class ScriptedLoadableModule:
    def __init__(self, parent): self.parent = parent
class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda w: None)
    def setup(self): pass
    def resourcePath(self, name): return str(ROOT / "JointSRSeg" / "Resources" / name)
slm.ScriptedLoadableModule, slm.ScriptedLoadableModuleWidget = ScriptedLoadableModule, ScriptedLoadableModuleWidget
slm.ScriptedLoadableModuleTest, slm.ScriptedLoadableModuleLogic = unittest.TestCase, ScriptedLoadableModuleLogic
sys.modules["slicer.ScriptedLoadableModule"] = slicer.ScriptedLoadableModule = slm

pnw = types.ModuleType("slicer.parameterNodeWrapper")
pnw.Choice = lambda values: ("choice", tuple(values))
pnw.WithinRange = lambda lo, hi: ("range", lo, hi)
def parameterNodeWrapper(cls):
    fields = dict(cls.__annotations__)
    class Wrapper:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            for name in fields:
                object.__setattr__(self, name, getattr(cls, name, None))
        def __setattr__(self, name, value):
            assert name in fields, f"no parameter {name}"
            object.__setattr__(self, name, value)
        def connectGui(self, ui): return "tag"
        def disconnectGui(self, tag): pass
    Wrapper.fields = fields
    return Wrapper
pnw.parameterNodeWrapper = parameterNodeWrapper
sys.modules["slicer.parameterNodeWrapper"] = slicer.parameterNodeWrapper = pnw

import JointSRSeg
module = JointSRSeg.JointSRSeg(types.SimpleNamespace())
widget = JointSRSeg.JointSRSegWidget()
widget.setup()
p = widget._parameterNode
assert p.parameterNode.GetAttribute("ModuleName") == "JointSRSeg", "parameter node tagged by the module's logic"
assert p.modelId in widget._models, p.modelId
assert widget.ui.deviceLabel.text.startswith("Device: ")
for signal in ("currentIndexChanged(int)", "clicked(bool)"):
    assert any(s.slots for n, w in widget.ui._w.items() for k, s in w._signals.items() if k == signal), signal
# the user picks B-spline: tasks adapt, the card text shows
index = widget.ui.modelSelector.findData("bspline")
widget.ui.modelSelector.setCurrentIndex(index)
widget.onModelSelected(index)
assert p.modelId == "bspline" and "B-spline" in widget.ui.modelInfoLabel.text
# the Method menu is the engine's methods; its tooltip says which apply to the selected model
from JointSRSegLib.vocabulary import DEVICES, UNCERTAINTY_METHODS
hints = {name: eval(text, vars(JointSRSeg)).__metadata__[0] for name, text in type(p).fields.items()
         if "Choice" in str(text)}
assert hints["uncertaintyMethod"] == ("choice", UNCERTAINTY_METHODS), hints["uncertaintyMethod"]
assert set(DEVICES) <= set(hints["device"][1]), hints["device"]
assert not widget.ui.uncertaintyCheckBox.enabled and "This model: none." in widget.ui.uncertaintyMethodComboBox.toolTip
index = widget.ui.modelSelector.findData("swinsr-unetr-brain-small")
widget.onModelSelected(index)
assert widget.ui.uncertaintyCheckBox.enabled, "the shipped package has uncertainty methods"
tip = widget.ui.uncertaintyMethodComboBox.toolTip
assert tip.startswith("auto: ") and tip.endswith("This model: auto, tta."), tip
widget.onSceneStartClose(None, None)
assert not errors, errors
bad = [m for m in ("torch", "JointSRSegLib.models", "JointSRSegLib.inference", "monai") if m in sys.modules]
assert not bad, f"opening the panel imported {bad}"
print("ok")
'''


def test_opening_the_panel_imports_no_torch_and_uses_only_ui_names():
    result = subprocess.run(
        [sys.executable, "-c", STAND_IN, str(ROOT)], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr
