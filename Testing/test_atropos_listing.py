"""Every model listing takes the baselines' tasks from one place (``JointSRSegLib.baselines.baseline_tasks``):
``packaging.available_models``, ``jointsrseg models`` and the Slicer module's model selector; and the Slicer
module's "Segment SR output with" choice reaches ``predict`` as ``seg_model`` on a real MRML scene.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

from JointSRSegLib.baselines import baseline_tasks  # noqa: E402
from JointSRSegLib.cli import main  # noqa: E402
from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.packaging import available_models, model_info  # noqa: E402
from JointSRSegLib.vocabulary import BASELINE_NAMES, SEGMENTATION_BASELINES  # noqa: E402


def test_baseline_tasks_come_from_one_place():
    assert baseline_tasks("atropos") == ("sr", "interp", "seg") and baseline_tasks("bspline") == ("sr", "interp")
    rows = {r.id: r for r in available_models() if r.source == "baseline"}
    assert set(rows) == set(BASELINE_NAMES)
    for name, row in rows.items():
        assert row.tasks == baseline_tasks(name), name
        assert model_info(name).tasks == baseline_tasks(name), name


def test_cli_models_lists_atropos_with_segmentation(capsys):
    assert main(["models"]) == 0
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    for name in BASELINE_NAMES:
        assert lines[name][1] == "baseline" and lines[name][2] == ",".join(baseline_tasks(name)), lines[name]


def test_slicer_selector_and_seg_model_choice():
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from JointSRSegModule import checks
    from JointSRSegModule.logic import SEG_MODELS, JointSRSegLogic

    assert set(checks.BASELINES) == set(BASELINE_NAMES) and checks.BASELINES[0] == "bspline"
    for name in checks.BASELINES:
        assert checks.describe_baseline(name).tasks == baseline_tasks(name), name
    listed = {m.id: m for m in JointSRSegLogic().availableModels()}
    assert listed["atropos"].tasks == baseline_tasks("atropos")
    assert [label["name"] for label in listed["atropos"].labels] == ["Grey matter", "White matter"]
    assert SEG_MODELS == ("none",) + SEGMENTATION_BASELINES
    # the panel's parameter offers exactly these choices
    tree = ast.parse((ROOT / "JointSRSeg" / "JointSRSeg.py").read_text())
    field = next(
        n for n in ast.walk(tree) if isinstance(n, ast.AnnAssign) and getattr(n.target, "id", None) == "segModel"
    )
    assert "Choice(list(SEG_MODELS))" in ast.unparse(field.annotation) and ast.literal_eval(field.value) == "none"
    logic = JointSRSegLogic()
    bspline = listed["bspline"]
    assert not logic.modelFits(bspline, ("sr", "seg"), None, 4)
    with_atropos = logic.modelsWithSegmentation({"bspline": bspline}, "atropos")["bspline"]
    assert logic.modelFits(with_atropos, ("sr", "seg"), None, 4) and with_atropos.labels == listed["atropos"].labels
    assert logic.modelsWithSegmentation({"bspline": bspline}, "none")["bspline"] is bspline
    with pytest.raises(InputError, match="label maps"):
        logic.withSegmentationModel(listed["contour"], "atropos")


@pytest.fixture()
def app():
    pytest.importorskip("ants", reason="antspyx (extra 'atropos') is not installed")
    pytest.importorskip("trame_slicer", reason="slicer-core is not installed")
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def test_slicer_segments_with_atropos_on_mrml(app):
    """model=atropos and model=bspline + segModel=atropos give the same GM/WM segmentation nodes."""
    from JointSRSegModule import nodes
    from JointSRSegModule.logic import JointSRSegLogic
    from test_atropos import FACTOR, ITERATIONS, PHANTOM_MASK, PHANTOM_PRIORS, dice, phantom

    from JointSRSegLib.api import predict
    from JointSRSegLib.degradation import simulate_thick_slices

    hr, truth, _ = phantom("t1")
    lr = simulate_thick_slices(hr, FACTOR, 2)
    node = nodes.new_scalar_volume_node(lr, "T1")
    app.scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    logic = JointSRSegLogic(app.scene)
    calls = []

    def spy(*args, **kwargs):
        calls.append(dict(kwargs))
        return predict(*args, atropos_iterations=ITERATIONS, atropos_priors=PHANTOM_PRIORS, atropos_mask=PHANTOM_MASK,
                       **kwargs)

    logic.predictFunction = spy
    with pytest.raises(InputError, match="not seg"):  # B-spline alone does no segmentation
        logic.process(node, model="bspline", tasks=("sr", "seg"), scale=FACTOR)
    arrays = {}
    for model, seg_model in (("atropos", None), ("bspline", "atropos")):
        outputs = logic.process(node, model=model, tasks=("sr", "seg"), scale=FACTOR, segModel=seg_model)
        seg = outputs["seg"]
        segmentation = seg.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        assert names == ["Grey matter", "White matter"], names
        assert nodes.provenance_of(seg)["model"] == model
        arrays[model] = [_segment_voxels(seg, segmentation.GetNthSegmentID(i)) for i in range(2)]
    assert calls[-2].get("seg_model") is None and calls[-2]["model"] == "atropos"
    assert calls[-1]["seg_model"] == "atropos" and calls[-1]["model"] == "bspline"
    assert '"segModel": "atropos"' in nodes.provenance_of(outputs["sr"])["parameters"]
    result = predict(lr, model="atropos", tasks=("sr", "seg"), scale=FACTOR, atropos_iterations=ITERATIONS,
                     atropos_priors=PHANTOM_PRIORS, atropos_mask=PHANTOM_MASK)
    labels = result.outputs["seg"].array[0]
    assert dice(labels, truth, 1) >= 0.8 and dice(labels, truth, 2) >= 0.9
    assert arrays["atropos"][0] > 0 and arrays["atropos"][1] > 0
    np.testing.assert_allclose(arrays["bspline"], arrays["atropos"], rtol=0.005)  # MRF threads: a few voxels
    assert arrays["atropos"][1] == pytest.approx(int((labels == 2).sum()), rel=0.005)


def _segment_voxels(segmentation_node, segment_id) -> int:
    import slicer
    from vtk.util import numpy_support

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return int((values == segment.GetLabelValue()).sum())
