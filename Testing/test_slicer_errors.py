"""Failures leave the scene as it was; bad input gives the one-line message the widget shows."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import checks, nodes  # noqa: E402
from JointSRSegModule.logic import CancelledError, CancelToken, InputError, JointSRSegLogic, SceneTransaction  # noqa: E402

from JointSRSegLib.volume import Volume  # noqa: E402


@pytest.fixture()
def scene():
    from trame_slicer.core import SlicerApp

    return SlicerApp().scene


def add(scene, spacing=(1.0, 1.0, 4.0), name="T2", shape=(16, 16, 6)):
    rng = np.random.default_rng(0)
    volume = Volume(rng.normal(50, 10, size=shape).astype(np.float32), spacing, (0, 0, 0), np.eye(3), source=name)
    node = nodes.new_scalar_volume_node(volume, name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def node_list(scene) -> list[tuple[str, str]]:
    return [(scene.GetNthNode(i).GetID(), scene.GetNthNode(i).GetName()) for i in range(scene.GetNumberOfNodes())]


def test_cancel_while_running_leaves_scene_unchanged(scene):
    node = add(scene)
    before = node_list(scene)
    token = CancelToken()

    def progress(fraction, stage):
        if stage == "running":
            token.cancel()

    with pytest.raises(CancelledError):
        JointSRSegLogic(scene).process(node, model="bspline", scale=4, progress=progress, cancel=token)
    assert node_list(scene) == before


def test_cancel_while_importing_restores_previous_outputs(scene):
    node = add(scene)
    logic = JointSRSegLogic(scene)
    first = logic.process(node, model="bspline", tasks=("sr",), scale=4)["sr"]
    first_voxels = slicer.util.arrayFromVolume(first).copy()
    before = node_list(scene)
    token = CancelToken()

    def progress(fraction, stage):
        if stage == "importing results" and fraction > 0.9:  # after the first output was written
            token.cancel()

    with pytest.raises(CancelledError):
        logic.process(node, model="nearest", tasks=("sr", "interp"), scale=4, progress=progress, cancel=token)
    assert node_list(scene) == before
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(first), first_voxels)
    assert first.GetAttribute("JointSRSeg.model") == "bspline"


def test_background_run_cancel(scene):
    node = add(scene)
    logic = JointSRSegLogic(scene)
    before = node_list(scene)
    run = logic.runInBackground(logic.prepare(node, model="bspline", scale=4))
    run.cancel()
    assert run.wait(30)
    with pytest.raises(CancelledError):
        run.finish()
    assert node_list(scene) == before


def test_background_run_completes(scene):
    node = add(scene)
    logic = JointSRSegLogic(scene)
    run = logic.runInBackground(logic.prepare(node, model="bspline", scale=2))
    assert run.wait(30)
    assert run.finish()["sr"].GetName() == "T2 SR ×2"


def test_failing_model_leaves_scene_unchanged(scene):
    node = add(scene)
    logic = JointSRSegLogic(scene)
    before = node_list(scene)

    def broken(*args, **kwargs):
        kwargs["progress"](0.5, "running")
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    logic.predictFunction = broken
    with pytest.raises(RuntimeError, match="illegal memory access"):
        logic.process(node, model="bspline", scale=4)
    assert node_list(scene) == before


def test_transaction_rolls_back_added_and_changed_nodes(scene):
    node = add(scene)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    before = node_list(scene)
    voxels = slicer.util.arrayFromVolume(node).copy()
    with pytest.raises(ValueError), SceneTransaction(scene) as transaction:
        transaction.rememberVolume(node)
        transaction.rememberSegmentation(segmentation)
        node.SetAndObserveImageData(nodes.image_data_from_array(np.zeros((3, 3, 3), np.float32)))
        node.SetAttribute("JointSRSeg.model", "x")
        segmentation.GetSegmentation().AddEmptySegment("added")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node)  # the source-volume reference
        scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "partial output").CreateDefaultDisplayNodes()
        raise ValueError("failure in the middle of an import")
    assert node_list(scene) == before
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), voxels)
    assert node.GetAttribute("JointSRSeg.model") is None
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert segmentation.GetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE) is None
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    assert not segmentation.GetSegmentation().GetConversionParameter(parameter)


def error_text(scene, *inputs, **kwargs) -> str:
    before = node_list(scene)
    with pytest.raises(InputError) as raised:
        JointSRSegLogic(scene).process(list(inputs), **kwargs)
    assert node_list(scene) == before
    return str(raised.value)


def test_isotropic_input_with_auto_axis(scene):
    node = add(scene, spacing=(1.0, 1.0, 1.0))
    text = error_text(scene, node, model="bspline", scale=4, axis="auto")
    assert "nearly isotropic" in text and "choose the axis explicitly" in text


def test_wrong_channel_count(scene):
    a, b = add(scene, name="T1"), add(scene, name="T2")
    assert "takes one volume; 2 given" in error_text(scene, a, b, model="bspline", scale=4)
    two_channel = checks.ModelDescription(
        id="brats-x4", name="", description="", tasks=("sr", "seg"), inputs=(("T1", "MR"), ("FLAIR", "MR")),
        factors=(4,),
    )
    volume = nodes.volume_from_nodes([a])
    with pytest.raises(InputError, match=r"takes 2 input volume\(s\) \(T1, FLAIR\); 1 given"):
        checks.check_request(volume, two_channel, ("sr",), 4, "auto", [None], "cpu", False)


def test_other_fixable_problems(scene):
    node = add(scene)
    assert "not seg" in error_text(scene, node, model="bspline", tasks=("seg",), scale=4)
    assert "no uncertainty map" in error_text(scene, node, model="bspline", scale=4, uncertainty=True)
    assert "outside 2-8" in error_text(scene, node, model="bspline", scale=9)
    other = add(scene, name="moved", shape=(16, 16, 5))
    assert "register and resample" in error_text(scene, node, other, model="bspline", scale=4)
    mr_model = checks.ModelDescription(id="m", name="", description="", tasks=("sr",), inputs=(("T2", "MR"),))
    with pytest.raises(InputError, match="must be MR, the selected volume is CT"):
        checks.check_request(nodes.volume_from_nodes([node]), mr_model, ("sr",), 4, 2, ["CT"], "cpu", False)
    with pytest.raises(InputError, match="GiB of memory.*crop the volume"):
        checks.check_request(nodes.volume_from_nodes([node]), mr_model, ("sr",), 4, 2, ["MR"], "cpu", False,
                             available_bytes=1024)
