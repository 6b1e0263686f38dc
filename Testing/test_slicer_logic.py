"""The Slicer module logic on a real MRML scene (slicer-core): geometry, nodes, provenance, hierarchy.

Expected grids come from JointSRSegLib.geometry (the protocols) on the volume as ITK reads it;
the output nodes' IJK-to-RAS matrices must equal them converted LPS -> RAS.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import nodes  # noqa: E402
from JointSRSegModule.logic import JointSRSegLogic, likely_wrong_text  # noqa: E402
from slicer_grid import grid_from_slicer  # noqa: E402

from JointSRSegLib.geometry import insert_grid, subdivide_grid  # noqa: E402
from JointSRSegLib.io import read_volume  # noqa: E402
from JointSRSegLib.volume import Grid, Volume  # noqa: E402

ORIENTATION = sorted((ROOT / "Testing" / "Data" / "orientation").glob("*.nii.gz"))
LABELS = [
    {"value": 1, "name": "Grey matter", "color": [200, 120, 90],
     "snomed": {"category": {"code": "123037004", "meaning": "Anatomical Structure"},
                "type": {"code": "389081007", "meaning": "Gray Matter"}}},
    {"value": 2, "name": "White matter", "color": [240, 240, 200]},
]


@pytest.fixture()
def app():
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def thick_volume(name: str = "thick") -> Volume:
    """Anisotropic, oblique, non-axis-aligned: 1.0 x 0.9 x 4 mm, slice axis K."""
    rng = np.random.default_rng(1)
    array = rng.normal(100, 20, size=(18, 20, 7)).astype(np.float32)
    angle = np.deg2rad(20)
    direction = np.array([[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    return Volume(array, (1.0, 0.9, 4.0), (15.0, -7.5, 30.0), direction, source=name)


def add_volume(scene, volume: Volume, name: str):
    node = nodes.new_scalar_volume_node(volume, name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def expected_ijk_to_ras(grid) -> np.ndarray:
    return nodes.RAS_FROM_LPS @ grid.index_to_physical_matrix()


def corners(grid: Grid) -> np.ndarray:
    size = np.array(grid.size) - 1
    indices = [[i, j, k] for i in (0, size[0]) for j in (0, size[1]) for k in (0, size[2])]
    points = grid.physical_points(np.array(indices))
    return points[np.lexsort(points.T[::-1])]


def assert_matrix(node, grid) -> None:
    np.testing.assert_allclose(nodes.node_ijk_to_ras(node), expected_ijk_to_ras(grid), atol=1e-4)
    assert node.GetImageData().GetDimensions() == grid.size


def test_orientation_files_match_protocol_grids(app):
    """Eight orientations read by Slicer's own reader; explicit axis (they are near-isotropic)."""
    assert len(ORIENTATION) == 8
    logic = JointSRSegLogic(app.scene)
    for index, path in enumerate(ORIENTATION):
        node = app.io_manager.load_volumes(str(path))[0]
        grid = grid_from_slicer(node)
        # Slicer's reader may reverse an axis of a left-handed file (ITK does not): same voxel centres
        np.testing.assert_allclose(corners(grid), corners(read_volume(path).grid), atol=1e-3, err_msg=path.name)
        axis = index % 3
        outputs = logic.process(node, model="linear", tasks=("sr", "interp"), scale=2, axis=axis)
        assert_matrix(outputs["sr"], subdivide_grid(grid, 2, axis))
        assert_matrix(outputs["interp"], insert_grid(grid, 2, axis))
        mean_in = slicer.util.arrayFromVolume(node).mean()
        assert slicer.util.arrayFromVolume(outputs["sr"]).mean() == pytest.approx(mean_in, rel=0.05)


def test_synthetic_anisotropic_auto_axis(app):
    scene = app.scene
    volume = thick_volume()
    node = add_volume(scene, volume, "thick")
    outputs = JointSRSegLogic(scene).process(node, model="bspline", tasks=("sr", "interp"), scale=4)
    assert outputs["sr"].GetName() == "thick SR ×4"
    assert outputs["interp"].GetName() == "thick interpolated ×4"
    assert_matrix(outputs["sr"], subdivide_grid(volume.grid, 4, 2))
    assert_matrix(outputs["interp"], insert_grid(volume.grid, 4, 2))
    assert slicer.util.arrayFromVolume(outputs["sr"]).shape == (28, 20, 18)  # (K, J, I)
    # input voxels come back exactly through node -> Volume
    np.testing.assert_array_equal(nodes.volume_from_nodes([node]).array[0], volume.array[0])


def test_provenance_and_subject_hierarchy(app):
    scene = app.scene
    node = add_volume(scene, thick_volume(), "T2")
    sh = scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient 1")
    study = sh.CreateStudyItem(patient, "MR brain")
    sh.SetItemParent(sh.GetItemByDataNode(node) or sh.CreateItem(study, node), study)
    outputs = JointSRSegLogic(scene).process(node, model="bspline", tasks=("sr",), scale=4)
    sr = outputs["sr"]
    assert sh.GetItemParent(sh.GetItemByDataNode(sr)) == study
    info = nodes.provenance_of(sr)
    for key in ("model", "modelVersion", "weightsSha256", "device", "parameters", "runTimeSeconds",
                "packageVersions", "inputs", "created", "report"):
        assert info.get(key), key
    assert info["model"] == "bspline" and info["device"] == "cpu"
    assert '"scale": 4' in info["parameters"] and "numpy" in info["packageVersions"]


def test_rerun_updates_outputs_in_place(app):
    scene = app.scene
    node = add_volume(scene, thick_volume(), "T2")
    logic = JointSRSegLogic(scene)
    first = logic.process(node, model="bspline", tasks=("sr",), scale=4)["sr"]
    count = scene.GetNumberOfNodes()
    second = logic.process(node, model="linear", tasks=("sr",), scale=4)["sr"]
    assert second is first and scene.GetNumberOfNodes() == count
    assert first.GetAttribute("JointSRSeg.model") == "linear"


def _two_tissue_run(scene):
    """A thick-slice input node, the logic, its x4 SR grid and a two-tissue label map on that grid."""
    volume = thick_volume()
    node = add_volume(scene, volume, "T1")
    grid = subdivide_grid(volume.grid, 4, 2)
    labels = np.zeros(grid.size, np.uint8)
    labels[2:9, 3:12, 4:20] = 1
    labels[10:16, 5:15, 6:24] = 2
    return node, JointSRSegLogic(scene), grid, labels


def test_segmentation_node_from_labels(app):
    scene = app.scene
    node, logic, sr_grid, labels = _two_tissue_run(scene)
    labels[0, 0, 0] = 7  # a value the package does not name still gets a segment
    sr = Volume.from_grid(np.ones((1, *sr_grid.size), np.float32), sr_grid)
    uncertainty = sr.with_array(np.where(labels > 0, 0.8, 0.1)[None].astype(np.float32))
    outputs = logic.createOutputNodes(
        node, {"sr": sr, "seg": sr.with_array(labels[None]), "uncertainty_seg": uncertainty},
        scale=4, labels=LABELS, provenance={"model": "test"}, uncertainThreshold=0.5,
    )
    seg = outputs["seg"]
    assert seg.GetName() == "T1 segmentation" and seg.IsA("vtkMRMLSegmentationNode")
    segmentation = seg.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Grey matter", "White matter", "Label 7", "uncertain voxels"]
    grey = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Grey matter"))
    np.testing.assert_allclose(grey.GetColor(), np.array([200, 120, 90]) / 255.0, atol=1e-6)
    assert "SCT^389081007^Gray Matter" in grey.GetTerminology()
    assert nodes.reference_grid(seg).almost_equal(sr_grid, 1e-4)
    for name, value in (("Grey matter", 1), ("White matter", 2)):
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        mask = _segment_mask(seg, segment_id)
        assert mask.sum() == (labels == value).sum()
    uncertain = _segment_mask(seg, segmentation.GetSegmentIdBySegmentName("uncertain voxels"))
    assert uncertain.sum() == (labels > 0).sum()
    unc = outputs["uncertainty_seg"]
    assert unc.GetName() == "T1 segmentation uncertainty"
    assert unc.GetDisplayNode().GetColorNode().GetName() == nodes.UNCERTAINTY_COLOR_NAME


def _segment_mask(segmentation_node, segment_id) -> np.ndarray:
    """Voxels of one segment of a (possibly shared) labelmap, from the stored representation."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    from vtk.util import numpy_support

    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return values == segment.GetLabelValue()


def test_uncertainty_display_setup(app):
    scene = app.scene
    volume = thick_volume()
    node = add_volume(scene, volume, "T2")
    composite = slicer.vtkMRMLSliceCompositeNode()
    scene.AddNode(composite)
    logic = JointSRSegLogic(scene)
    sr = logic.process(node, model="bspline", tasks=("sr",), scale=4)["sr"]
    srv = nodes.volume_from_nodes([sr])
    out = logic.createOutputNodes(node, {"uncertainty_sr": srv.with_array(np.full_like(srv.array, 0.3))},
                                  scale=4, opacity=0.7)
    unc = out["uncertainty_sr"]
    assert unc.GetName() == "T2 uncertainty"
    assert composite.GetForegroundVolumeID() == unc.GetID() and composite.GetForegroundOpacity() == pytest.approx(0.7)
    display = unc.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0) and display.GetApplyThreshold()
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(unc) is not None


def test_likely_wrong_outline_follows_the_threshold_and_the_legend_says_the_unit(app):
    """Issue #17: the legend of a calibrated map names its unit, and the panel's live threshold slider
    re-outlines the last run's 'likely wrong' voxels and reports the share of the segmented tissue."""
    scene = app.scene
    node, logic, grid, labels = _two_tissue_run(scene)
    ramp = np.linspace(0.0, 1.0, labels.size, dtype=np.float32).reshape(labels.shape)
    sr = Volume.from_grid(np.ones((1, *grid.size), np.float32), grid)
    report = {"model": {"id": "bspline", "seg_model": {"id": "atropos", "uncertainty": {
        "uncertainty_seg": {"unit": "P(label wrong)", "threshold": 0.5}}}}}
    outputs = logic.createOutputNodes(
        node, {"sr": sr, "seg": sr.with_array(labels[None]), "uncertainty_seg": sr.with_array(ramp[None])},
        scale=4, labels=LABELS, provenance={"report": report}, uncertainThreshold=0.5,
    )
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(outputs["uncertainty_seg"])
    assert legend.GetTitleText() == "P(label wrong)"
    seg = outputs["seg"]
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName(nodes.UNCERTAIN_SEGMENT_NAME)
    display = seg.GetDisplayNode()
    assert display.GetSegmentVisibility2DOutline(segment_id) and not display.GetSegmentVisibility2DFill(segment_id)
    tissue = labels > 0
    for threshold in (0.3, 0.8):
        found = logic.outlineLikelyWrong(node, threshold)
        outlined = _segment_mask(seg, seg.GetSegmentation().GetSegmentIdBySegmentName(nodes.UNCERTAIN_SEGMENT_NAME))
        assert outlined.sum() == (ramp >= threshold).sum()
        assert found["fraction"] == pytest.approx((ramp[tissue] >= threshold).mean())
        assert found["unit"] == "P(label wrong)" and found["region"] == "of the segmented tissue"
    assert "P(label wrong) >= 0.80" in likely_wrong_text(found, 0.8)
    assert logic.outlineLikelyWrong(add_volume(scene, thick_volume(), "other"), 0.5) is None  # no run yet: nothing
