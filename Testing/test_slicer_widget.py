"""Opening the panel imports neither torch nor the model code, and the widget only uses names the .ui has.

The Qt layer cannot run here, so ``JointSRSeg.py`` is imported in a fresh interpreter with a thin
stand-in for the Qt-only names it touches (``Testing/slicer_stand_in.py``: ``qt``,
``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``, ``slicer.util`` GUI helpers,
``slicer.app``) on top of slicer-core's real MRML scene.  The stand-in ``ui`` answers only the widget
names found in the .ui file, so any other name fails; then the widget is set up (model list, parameter
node, device line), a model is picked and the scene is closed -- what opening the module and touching the selector does.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STAND_IN = r'''
import sys, types
from pathlib import Path
ROOT = Path(sys.argv[1])
sys.path.insert(0, str(ROOT / "Testing"))
import slicer_stand_in
slicer = slicer_stand_in.install(ROOT)
errors = slicer_stand_in.ERRORS

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
# SR + segmentation with nothing picked: the default is adapt SR segmented by Atropos (defaults rule), the
# "Segment SR output with" menu follows; once the user sets that menu, it stays and the default adapts
widget._modelIsDefault = True
p.taskSR, p.taskInterp, p.taskSeg, p.scale = True, False, False, 4
widget._onParameterNodeModified()
p.taskSeg = True
widget._onParameterNodeModified()
assert (p.modelId, p.segModel) == ("adapt", "atropos"), (p.modelId, p.segModel)
assert "Atropos on its output" in widget.ui.modelInfoLabel.text, widget.ui.modelInfoLabel.text
p.segModel = "none"
widget._onParameterNodeModified()
assert (p.modelId, p.segModel) == ("atropos", "none"), (p.modelId, p.segModel)
p.taskSeg = False
widget._onParameterNodeModified()
assert (p.modelId, p.segModel) == ("adapt", "none"), (p.modelId, p.segModel)
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
