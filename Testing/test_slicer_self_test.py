"""The module's own self-test (what *Reload and Test* runs in Slicer) passes on slicer-core.

``JointSRSeg.py`` is imported in a fresh interpreter with the Qt stand-in (``slicer_stand_in``), the
module is constructed (it registers ``slicer.selfTests["JointSRSeg"]`` as Slicer's
ScriptedLoadableModule does) and that entry is called the way the Reload-and-Test button calls it.
The self-test then runs on the real MRML scene: B-spline in-process, and the shipped package the panel
preselects for x4 SR in the worker process -- with PyTorch installed here it must really run, not skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUN_SELF_TEST = r"""
import json, sys, types
from pathlib import Path
ROOT = Path(sys.argv[1])
sys.path.insert(0, str(ROOT / "Testing"))
import slicer_stand_in
slicer = slicer_stand_in.install(ROOT)
import JointSRSeg
JointSRSeg.JointSRSeg(types.SimpleNamespace(path=str(ROOT / "JointSRSeg" / "JointSRSeg.py")))
slicer.selfTests["JointSRSeg"](msec=0)
print(json.dumps({"messages": slicer_stand_in.MESSAGES, "errors": slicer_stand_in.ERRORS}))
"""


def test_module_self_test_runs_a_shipped_package():
    result = subprocess.run([sys.executable, "-c", RUN_SELF_TEST, str(ROOT)], capture_output=True, text=True,
                            timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    messages = report["messages"]
    assert not report["errors"], report["errors"]
    assert not [m for m in messages if m.startswith("Skipped")], messages
    shipped = {path.parent.name for path in (ROOT / "Resources" / "Models").glob("*/model.json")}
    ran = [m[: -len(" in the worker process")] for m in messages if m.endswith(" in the worker process")]
    assert len(ran) == 1 and ran[0] in shipped, messages  # a shipped package, not a classical method
    assert messages.count("Test passed") == 3, messages  # SR geometry, default model card, shipped package
