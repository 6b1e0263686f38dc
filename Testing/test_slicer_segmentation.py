"""Segmentation output as Slicer expects it (slicer-core): names, colours, terminology, source volume.

The terminology strings are checked with Slicer's own terminology logic against Slicer's own lists
(the General Anatomy and DICOM master contexts trame-slicer ships, copies of Slicer's
``Modules/Loadable/Terminologies/Resources``): each code must be found there, under the context the
package names, and the entry must survive Slicer's deserialise/serialise round trip and a
``.seg.nrrd`` save.  The reference geometry must be exactly what Slicer's
``SetReferenceImageGeometryParameterFromVolumeNode`` writes for the SR volume, with the node
reference Segment Editor uses to pick the source volume.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import checks, nodes  # noqa: E402
from JointSRSegModule.logic import JointSRSegLogic  # noqa: E402

from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.geometry import subdivide_grid  # noqa: E402
from JointSRSegLib.package_schema import validate_metadata  # noqa: E402
from JointSRSegLib.terminology import slicer_terminology_entry, terminology_for_name  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402

MODELS = ROOT / "Resources" / "Models"
PACKAGE = MODELS / "swinsr-unetr-brain-small" / "model.json"
# Slicer's own label for each code in its lists (3dSlicerLabel): proves the code was found there.
SLICER_LABELS = {"389081007": "gray matter", "389080008": "white matter", "65216001": "cerebro-spinal fluid"}


def shipped_labels() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(MODELS.glob("*/model.json")):
        for label in json.loads(path.read_text(encoding="utf-8"))["labels"]:
            found.append((f"{path.parent.name}:{label['name']}", label))
    found += [(f"atropos:{label['name']}", label) for label in checks.TISSUE_LABELS]
    return found


@pytest.fixture(scope="module")
def terminologies():
    """Slicer's terminology logic with Slicer's segmentation contexts loaded."""
    import trame_slicer

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    folder = Path(trame_slicer.__file__).parent / "resources" / "terminologies"
    for name in ("SlicerGeneralAnatomy", "DICOM-Master"):
        path = folder / f"SegmentationCategoryTypeModifier-{name}.term.json"
        assert logic.LoadContextFromFile(str(path)), name
    return logic


def found_in_slicer(logic, entry_text: str) -> slicer.vtkSlicerTerminologyEntry:
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(entry_text, entry), entry_text
    assert logic.UpdateEntryFromLoadedTerminologies(entry, [], []), entry_text
    return entry


def test_every_shipped_label_has_codes_slicer_knows(terminologies):
    labels = shipped_labels()
    assert len(labels) == 12  # five segmenting packages and atropos, GM and WM each
    for where, label in labels:
        assert "snomed" in label, f"{where} has no SNOMED codes in model.json"
        text = nodes.terminology_entry(label)
        entry = found_in_slicer(terminologies, text)
        code = label["snomed"]["type"]["code"]
        assert entry.GetTypeObject().GetSlicerLabel() == SLICER_LABELS[code], where
        assert entry.GetTerminologyContextName() == label["snomed"]["context"], where
        assert terminologies.SerializeTerminologyEntry(entry) == text, f"{where}: Slicer rewrites the entry"
        assert code == terminology_for_name(label["name"])["type"]["code"], where


def test_tissue_names_map_to_codes_slicer_knows(terminologies):
    for name in ("Grey matter", "gray  Matter", "White matter", "CSF", "Cerebrospinal fluid"):
        entry = found_in_slicer(terminologies, slicer_terminology_entry(terminology_for_name(name)))
        assert entry.GetTypeObject().GetSlicerLabel() in SLICER_LABELS.values(), name
    assert terminology_for_name("Tumour") is None


def test_a_wrong_code_is_not_found_in_slicers_list(terminologies):
    """The check above can fail: 39607008 (an old fixture's "grey matter") is Lung in SNOMED CT."""
    wrong = {"category": {"code": "123037004", "meaning": "Anatomical Structure"},
             "type": {"code": "39607008", "meaning": "Grey matter"}}
    entry = found_in_slicer(terminologies, slicer_terminology_entry(wrong))
    assert entry.GetTypeObject().GetSlicerLabel() != "gray matter"


@pytest.mark.parametrize("snomed, problem", [
    ({"type": {"code": "389081007", "meaning": "Gray Matter"}}, "snomed.category"),
    ({"category": {"code": "123037004", "meaning": "Anatomical Structure"}, "type": {"code": "389081007"}},
     "snomed.type.meaning"),
    ({"category": {"code": "123037004", "meaning": "Anatomical Structure"},
      "type": {"code": "389081007", "meaning": "Gray~Matter"}}, "must not contain"),
    ("SCT 389081007", "must be an object"),
])
def test_package_schema_refuses_unusable_codes(snomed, problem):
    meta = json.loads(PACKAGE.read_text(encoding="utf-8"))
    meta["labels"][0]["snomed"] = snomed
    with pytest.raises(InputError, match=problem):
        validate_metadata(meta, "model.json")


@pytest.fixture()
def scene():
    from trame_slicer.core import SlicerApp

    return SlicerApp().scene


def thick_input(scene, transformed: bool):
    rng = np.random.default_rng(3)
    angle = np.deg2rad(15)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, -1.0]])
    volume = Volume(rng.normal(100, 10, (16, 18, 6)).astype(np.float32), (0.9, 1.1, 5.0), (20.0, -12.5, 33.0),
                    direction, source="T2")
    node = nodes.new_scalar_volume_node(volume, "T2")
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    if transformed:  # outputs follow the input's parent transform; the geometry must not be moved twice
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
        matrix = np.eye(4)
        matrix[:3, 3] = (4.0, -2.0, 7.5)
        transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
        node.SetAndObserveTransformNodeID(transform.GetID())
    return node, volume


def tissue_labels(grid) -> np.ndarray:
    labels = np.zeros(grid.size, np.uint8)
    labels[2:8, 3:12, 4:18] = 1
    labels[9:15, 5:15, 6:22] = 2
    return labels


def tag(segment, name: str) -> str | None:
    """A vtkSegment tag (``TerminologyEntry`` is what Slicer's terminology code reads)."""
    import vtk

    assert segment.GetTerminologyEntryTagName() == "TerminologyEntry"
    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def slicer_geometry(volume_node) -> str:
    """What Slicer serialises as the reference geometry of this volume."""
    matrix = slicer.util.vtkMatrixFromArray(nodes.node_ijk_to_ras(volume_node))
    return slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, volume_node.GetImageData())


@pytest.mark.parametrize("transformed", [False, True])
def test_segments_terminology_and_source_volume(scene, transformed):
    node, volume = thick_input(scene, transformed)
    labels_meta = json.loads(PACKAGE.read_text(encoding="utf-8"))["labels"]
    grid = subdivide_grid(volume.grid, 4, 2)
    sr = Volume.from_grid(np.ones((1, *grid.size), np.float32), grid)
    outputs = JointSRSegLogic(scene).createOutputNodes(
        node, {"sr": sr, "seg": sr.with_array(tissue_labels(grid)[None])}, scale=4, labels=labels_meta)
    seg, sr_node = outputs["seg"], outputs["sr"]
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == [
        "Grey matter", "White matter"]
    for label in labels_meta:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(label["name"]))
        np.testing.assert_allclose(segment.GetColor(), np.array(label["color"]) / 255.0, atol=1e-7)
        assert tag(segment, "TerminologyEntry") == slicer_terminology_entry(label["snomed"])
    # the source volume Segment Editor picks, and exactly Slicer's geometry string for it
    assert seg.GetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE) == sr_node.GetID()
    parameter = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    assert segmentation.GetConversionParameter(parameter) == slicer_geometry(sr_node)
    assert nodes.reference_grid(seg).almost_equal(nodes.node_grid(sr_node), 1e-9)
    assert seg.GetParentTransformNode() is node.GetParentTransformNode() is sr_node.GetParentTransformNode()


def test_segmentation_without_sr_output_references_the_input(scene):
    """Labels on the SR grid of a thick input with no SR node: full-resolution geometry, input as source."""
    node, volume = thick_input(scene, transformed=False)
    grid = subdivide_grid(volume.grid, 4, 2)
    labels = Volume.from_grid(tissue_labels(grid)[None], grid)
    seg = JointSRSegLogic(scene).createOutputNodes(node, {"seg": labels}, scale=4,
                                                   labels=checks.TISSUE_LABELS)["seg"]
    assert seg.GetNodeReferenceID(nodes.SOURCE_VOLUME_ROLE) == node.GetID()
    assert nodes.reference_grid(seg).almost_equal(grid, 1e-6)
    assert not nodes.reference_grid(seg).almost_equal(volume.grid, 1e-3)


def test_terminology_survives_a_seg_nrrd_round_trip(scene, tmp_path):
    node, volume = thick_input(scene, transformed=False)
    grid = subdivide_grid(volume.grid, 4, 2)
    sr = Volume.from_grid(np.ones((1, *grid.size), np.float32), grid)
    seg = JointSRSegLogic(scene).createOutputNodes(
        node, {"sr": sr, "seg": sr.with_array(tissue_labels(grid)[None])}, scale=4,
        labels=checks.TISSUE_LABELS)["seg"]
    path = tmp_path / "tissue.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(path))
    assert writer.WriteData(seg)
    loaded = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(loaded)
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
    tags = {}
    for i in range(loaded.GetSegmentation().GetNumberOfSegments()):
        segment = loaded.GetSegmentation().GetNthSegment(i)
        tags[segment.GetName()] = tag(segment, "TerminologyEntry")
    assert tags == {label["name"]: slicer_terminology_entry(label["snomed"]) for label in checks.TISSUE_LABELS}
