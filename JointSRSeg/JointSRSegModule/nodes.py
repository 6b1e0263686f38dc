"""MRML <-> ``JointSRSegLib.Volume`` conversion and the output nodes of a run.

Slicer stores a volume as IJK voxels plus an IJK-to-RAS matrix; the library works in LPS
(ITK).  Both use the same IJK order, so the conversion is exactly ``RAS = diag(-1, -1, 1) LPS``
applied to the library's index-to-physical matrix -- no resampling, no reorientation.
``slicer.util.arrayFromVolume`` returns ``(K, J, I)``; the library wants ``(C, I, J, K)``.

Everything here needs only slicer-core (MRML, vtkSegmentationCore), so it runs headless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from JointSRSegLib.errors import InputError
from JointSRSegLib.terminology import label_terminology, slicer_terminology_entry
from JointSRSegLib.vocabulary import RAW_UNCERTAINTY_UNIT
from JointSRSegLib.volume import Grid, Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ATTRIBUTE_PREFIX = "JointSRSeg."
ROLE_ATTRIBUTE = ATTRIBUTE_PREFIX + "role"
SOURCE_ATTRIBUTE = ATTRIBUTE_PREFIX + "inputNodeID"
UNCERTAINTY_COLOR_NAME = "JointSRSeg uncertainty (inferno)"
UNCERTAIN_SEGMENT_NAME = "uncertain voxels"
UNCERTAIN_SEGMENT_ID = "uncertain_voxels"
UNIT_ATTRIBUTE = "JointSRSeg.uncertaintyUnit"  # what the map's value means (the legend's title)
GEOMETRY_TOLERANCE_MM = 1e-4
# The segmentation's source volume: Segment Editor selects it, DICOM SEG export references it.
SOURCE_VOLUME_ROLE = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
# Inferno (Smith & van der Walt, matplotlib): perceptually uniform, readable in grey print.
_INFERNO_ANCHORS = (
    (0.000, (0.001, 0.000, 0.014)),
    (0.125, (0.092, 0.045, 0.235)),
    (0.250, (0.258, 0.039, 0.406)),
    (0.375, (0.417, 0.090, 0.433)),
    (0.500, (0.578, 0.148, 0.404)),
    (0.625, (0.735, 0.216, 0.330)),
    (0.750, (0.865, 0.317, 0.226)),
    (0.875, (0.955, 0.478, 0.097)),
    (1.000, (0.988, 0.998, 0.645)),
)


# --------------------------------------------------------------------------- geometry


def ijk_to_ras_matrix(grid: Grid) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix Slicer needs for a library grid (LPS)."""
    return RAS_FROM_LPS @ grid.index_to_physical_matrix()


def grid_from_ijk_to_ras(matrix: np.ndarray, size: Sequence[int]) -> Grid:
    """The library grid of a Slicer volume: inverse of :func:`ijk_to_ras_matrix`."""
    lps = RAS_FROM_LPS @ np.asarray(matrix, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return Grid.create(size, spacing, lps[:3, 3], lps[:3, :3] / spacing[None, :])


def node_ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def node_grid(node) -> Grid:
    """Geometry of a volume node as a library :class:`Grid`."""
    image = node.GetImageData()
    if image is None:
        raise InputError(node.GetName(), "the volume has no voxels (empty node); load an image first")
    return grid_from_ijk_to_ras(node_ijk_to_ras(node), image.GetDimensions())


def set_node_grid(node, grid: Grid) -> None:
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(grid)))


# --------------------------------------------------------------------------- voxels


def volume_from_nodes(nodes: Sequence[Any], channel_names: Sequence[str] | None = None) -> Volume:
    """Stack the input volume nodes (one channel each, or one vector volume) into one Volume.

    Arrays are copied, so the computation may run in another thread while the scene changes.
    All inputs must share one grid: the models take co-registered channels voxel by voxel.
    """
    if not nodes:
        raise InputError(None, "select an input volume")
    first = nodes[0]
    grid = node_grid(first)
    channels = []
    for node in nodes:
        other = node_grid(node)
        if not other.almost_equal(grid, GEOMETRY_TOLERANCE_MM):
            raise InputError(
                node.GetName(),
                f"its voxel grid differs from {first.GetName()!r}; register and resample it onto that volume "
                "(Registration / Resample Scalar Volume modules) before running",
            )
        array = slicer.util.arrayFromVolume(node)  # (K, J, I) or (K, J, I, C)
        array = array[..., None] if array.ndim == 3 else array
        channels.extend(np.array(array[..., c].transpose(2, 1, 0), copy=True) for c in range(array.shape[-1]))
    names = tuple(channel_names) if channel_names and len(channel_names) == len(channels) else None
    return Volume.from_grid(np.stack(channels), grid, source=first.GetName(), channel_names=names)


def image_data_from_array(array: np.ndarray) -> vtk.vtkImageData:
    """A vtkImageData holding ``array`` (``(I, J, K)``) with unit spacing at the origin.

    Geometry lives in the node's IJK-to-RAS matrix (Slicer's convention), not in the image.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a single-channel (I, J, K) array, got shape {array.shape}")
    if array.dtype == np.float64 or array.dtype == bool:
        array = array.astype(np.float32 if array.dtype == np.float64 else np.uint8)
    flat = np.ascontiguousarray(array.transpose(2, 1, 0)).ravel()  # VTK: I varies fastest
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape)
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    return image


def single_channel(volume: Volume, what: str) -> np.ndarray:
    if volume.channels != 1:
        raise InputError(what, f"expected one channel, the model returned {volume.channels}")
    return volume.array[0]


def new_scalar_volume_node(volume: Volume, name: str):
    """A scalar volume node (not yet in a scene) with the volume's voxels and exact geometry."""
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    node.SetAndObserveImageData(image_data_from_array(single_channel(volume, name)))
    set_node_grid(node, volume.grid)
    return node


def oriented_image(array: np.ndarray, grid: Grid) -> Any:
    """A vtkOrientedImageData (segmentation storage) on ``grid``."""
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(image_data_from_array(array))
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(grid)))
    return image


# --------------------------------------------------------------------------- segmentation


def label_color(label: Mapping[str, Any]) -> tuple[float, float, float]:
    return tuple(float(c) / 255.0 for c in label["color"])


def terminology_entry(label: Mapping[str, Any]) -> str | None:
    """Slicer's ``TerminologyEntry`` string for a label: the package's SNOMED codes, else the codes
    of its tissue name (``JointSRSegLib.terminology``); ``None`` for a label with neither."""
    codes = label_terminology(label)
    return slicer_terminology_entry(codes) if codes else None


def fill_segmentation(
    segmentation_node, labels: Volume, label_meta: Sequence[Mapping[str, Any]], reference_grid: Grid | None = None
) -> None:
    """Replace the segments of ``segmentation_node`` by one segment per model label.

    All segments share one labelmap (Slicer's shared-labelmap layout), so no voxel is copied per
    label; names, colours and terminology come from the model package.  Values present in the
    labels but missing from the package's list still get a segment, so nothing is hidden.
    """
    array = single_channel(labels, segmentation_node.GetName())
    if not np.issubdtype(array.dtype, np.integer):
        array = np.rint(array).astype(np.int32)
    array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    shared = oriented_image(array, labels.grid)
    described = {int(label["value"]): label for label in label_meta if int(label["value"]) != 0}
    for value in sorted(set(described) | {int(v) for v in np.unique(array) if v != 0}):
        label = described.get(value, {"name": f"Label {value}", "color": _fallback_color(value)})
        segment = slicer.vtkSegment()
        segment.SetName(str(label["name"]))
        segment.SetColor(*label_color(label))
        segment.SetLabelValue(value)
        entry = terminology_entry(label)
        if entry:
            segment.SetTerminology(entry)
        segment.AddRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), shared)
        segmentation.AddSegment(segment, f"label_{value}")
    set_reference_geometry(segmentation_node, reference_grid or labels.grid)


def add_uncertain_voxels_segment(segmentation_node, uncertainty: Volume, threshold: float) -> str:
    """Add (or replace) the ``uncertain voxels`` segment: uncertainty at or above ``threshold``, drawn
    as an outline only in the slice views (the labels underneath stay visible: "likely wrong" regions)."""
    mask = (single_channel(uncertainty, UNCERTAIN_SEGMENT_NAME) >= threshold).astype(np.uint8)
    segmentation = segmentation_node.GetSegmentation()
    segment_id = segmentation.GetSegmentIdBySegmentName(UNCERTAIN_SEGMENT_NAME)
    if segment_id:
        segmentation.RemoveSegment(segment_id)
    segment = slicer.vtkSegment()
    segment.SetName(UNCERTAIN_SEGMENT_NAME)
    segment.SetColor(1.0, 1.0, 0.0)
    segment.SetLabelValue(1)
    segment.AddRepresentation(
        slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName(), oriented_image(mask, uncertainty.grid)
    )
    segmentation.AddSegment(segment, UNCERTAIN_SEGMENT_ID)
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetSegmentVisibility2DFill(UNCERTAIN_SEGMENT_ID, False)
        display.SetSegmentVisibility2DOutline(UNCERTAIN_SEGMENT_ID, True)
    return UNCERTAIN_SEGMENT_ID


def set_reference_geometry(segmentation_node, grid: Grid) -> None:
    """Editing in Segment Editor happens on this grid (the SR grid, not the thick input)."""
    matrix = slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(grid))
    extent = [0, grid.size[0] - 1, 0, grid.size[1] - 1, 0, grid.size[2] - 1]
    geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(matrix, extent)
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    segmentation_node.GetSegmentation().SetConversionParameter(name, geometry)


def set_source_volume(segmentation_node, volume_node, grid: Grid) -> None:
    """Make ``volume_node`` the segmentation's source, with reference geometry ``grid`` (the labels' grid).

    When the volume lies on that grid (the SR volume), Slicer's own
    ``SetReferenceImageGeometryParameterFromVolumeNode`` sets both the geometry and the node reference;
    a segmentation of a thick input without an SR output keeps the SR grid as its geometry (edits stay at
    full resolution) and references the input.  Call it once both nodes are in the same transform.
    """
    if node_grid(volume_node).almost_equal(grid, GEOMETRY_TOLERANCE_MM):
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    else:
        set_reference_geometry(segmentation_node, grid)
        segmentation_node.SetNodeReferenceID(SOURCE_VOLUME_ROLE, volume_node.GetID())


def reference_grid(segmentation_node) -> Grid:
    """The reference geometry stored on a segmentation node, as a library Grid."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    image = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(
        segmentation_node.GetSegmentation().GetConversionParameter(name), image, False
    )
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    extent = image.GetExtent()
    size = (extent[1] - extent[0] + 1, extent[3] - extent[2] + 1, extent[5] - extent[4] + 1)
    return grid_from_ijk_to_ras(slicer.util.arrayFromVTKMatrix(matrix), size)


def _fallback_color(value: int) -> list[int]:
    rng = np.random.default_rng(value)
    return [int(c) for c in rng.integers(64, 256, size=3)]


# --------------------------------------------------------------------------- uncertainty display


def uncertainty_color_table(scene):
    """The shared inferno colour table (0 = certain ... 1 = uncertain), created once per scene."""
    for node in _nodes_of_class(scene, "vtkMRMLColorTableNode"):
        if node.GetName() == UNCERTAINTY_COLOR_NAME:
            return node
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(UNCERTAINTY_COLOR_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    positions = [p for p, _ in _INFERNO_ANCHORS]
    for i in range(256):
        t = i / 255.0
        rgb = [float(np.interp(t, positions, [c[k] for _, c in _INFERNO_ANCHORS])) for k in range(3)]
        table.SetColor(i, f"{t:.3f}", *rgb, 1.0)
    table.SetAttribute("Category", "JointSRSeg")
    scene.AddNode(table)
    return table


def inferno_rgb(value: float) -> tuple[float, float, float]:
    """The colour an uncertainty value gets (0-1 floats); used by tests and the legend docs."""
    positions = [p for p, _ in _INFERNO_ANCHORS]
    return tuple(float(np.interp(value, positions, [c[k] for _, c in _INFERNO_ANCHORS])) for k in range(3))


def show_uncertainty(
    uncertainty_node, display_threshold: float = 0.02, legend: bool = True, unit: str = RAW_UNCERTAINTY_UNIT,
    top: float = 1.0,
) -> None:
    """Inferno on a fixed window from 0 to ``top`` (the top of the map's unit scale, so maps stay
    comparable); voxels below ``display_threshold`` are transparent, so the anatomy shows through where
    the model is certain.  The colour legend's title is the map's ``unit`` (e.g. ``P(label wrong)``)."""
    scene = uncertainty_node.GetScene()
    if uncertainty_node.GetDisplayNode() is None:
        uncertainty_node.CreateDefaultDisplayNodes()
    uncertainty_node.SetAttribute(UNIT_ATTRIBUTE, unit)
    display = uncertainty_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(uncertainty_color_table(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, float(top))
    display.SetAutoThreshold(False)
    display.SetThreshold(display_threshold * float(top), float(top))
    display.SetApplyThreshold(True)
    display.SetInterpolate(False)
    if legend:
        legend_node = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(uncertainty_node)
        if legend_node is None:  # what vtkSlicerColorLogic::AddDefaultColorLegendDisplayNode does
            legend_node = slicer.vtkMRMLColorLegendDisplayNode()
            scene.AddNode(legend_node)
            legend_node.SetAndObservePrimaryDisplayNode(display)
            uncertainty_node.AddAndObserveDisplayNodeID(legend_node.GetID())
        legend_node.SetTitleText(unit)
        legend_node.SetVisibility(True)


def show_in_slice_views(scene, background=None, foreground=None, opacity: float = 0.5) -> None:
    """Like ``slicer.util.setSliceViewerLayers`` but for any scene (no application needed)."""
    for composite in _nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(opacity))


def copy_display(source_node, target_node) -> None:
    """Show an SR volume like its input (same colour map and window/level)."""
    if target_node.GetDisplayNode() is None:
        target_node.CreateDefaultDisplayNodes()
    source, target = source_node.GetDisplayNode(), target_node.GetDisplayNode()
    if source is None or target is None:
        return
    if source.GetColorNodeID():
        target.SetAndObserveColorNodeID(source.GetColorNodeID())
    if source.GetAutoWindowLevel():
        target.AutoWindowLevelOn()
    else:
        target.AutoWindowLevelOff()
        target.SetWindowLevel(source.GetWindow(), source.GetLevel())


# --------------------------------------------------------------------------- hierarchy and provenance


def place_next_to(scene, output_node, input_node) -> int:
    """Put ``output_node`` in the input's study (or its parent folder) in the subject hierarchy."""
    sh = scene.GetSubjectHierarchyNode()
    input_item = sh.GetItemByDataNode(input_node) or sh.CreateItem(sh.GetSceneItemID(), input_node)
    parent = sh.GetItemAncestorAtLevel(input_item, "Study") or sh.GetItemParent(input_item)
    item = sh.GetItemByDataNode(output_node) or sh.CreateItem(parent, output_node)
    sh.SetItemParent(item, parent)
    return item


def input_modality(scene, node) -> str | None:
    """DICOM modality of an input (node attribute or its subject-hierarchy item), if known."""
    value = node.GetAttribute("DICOM.Modality")
    if not value and scene is not None:
        sh = scene.GetSubjectHierarchyNode()
        item = sh.GetItemByDataNode(node)
        value = sh.GetItemAttribute(item, "DICOM.Modality") if item else ""
    return value or None


def set_provenance(node, provenance: Mapping[str, Any]) -> None:
    """Store provenance as ``JointSRSeg.*`` attributes (saved with the scene, visible in Data)."""
    for key, value in provenance.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        node.SetAttribute(ATTRIBUTE_PREFIX + key, text)


def provenance_of(node) -> dict[str, str]:
    return {
        name[len(ATTRIBUTE_PREFIX) :]: node.GetAttribute(name)
        for name in node.GetAttributeNames() or ()
        if name.startswith(ATTRIBUTE_PREFIX)
    }


def _nodes_of_class(scene, class_name: str) -> Iterable[Any]:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def find_output_node(scene, class_name: str, name: str, role: str, input_node) -> Any | None:
    """An earlier output of this role for this input (updated in place rather than duplicated)."""
    for node in _nodes_of_class(scene, class_name):
        if (
            node.GetName() == name
            and node.GetAttribute(ROLE_ATTRIBUTE) == role
            and node.GetAttribute(SOURCE_ATTRIBUTE) == input_node.GetID()
        ):
            return node
    return None


def outputs_of(scene, input_node) -> list[Any]:
    """Every output node (volumes and segmentations) an earlier run made from ``input_node``."""
    found = []
    for class_name in ("vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"):
        found += [n for n in _nodes_of_class(scene, class_name)
                  if n.GetAttribute(SOURCE_ATTRIBUTE) == input_node.GetID() and n.GetAttribute(ROLE_ATTRIBUTE)]
    return found


def output_role(node) -> str:
    """Which output a node is (``sr``, ``seg``, ``uncertainty_seg``, ...)."""
    return node.GetAttribute(ROLE_ATTRIBUTE) or ""


def segmentation_mask(segmentation_node, grid: Grid) -> np.ndarray:
    """Voxels of ``grid`` in any segment but the 'uncertain voxels' outline (the segmented tissue), read from
    the binary labelmaps when they lie on ``grid`` (they do for the labels this module writes)."""
    segmentation = segmentation_node.GetSegmentation()
    mask = np.zeros(tuple(grid.size), dtype=bool)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    for i in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(i)
        image = segment.GetRepresentation(name)
        if segment.GetName() == UNCERTAIN_SEGMENT_NAME or image is None:
            continue
        if tuple(image.GetDimensions()) != tuple(grid.size):
            raise InputError(segmentation_node.GetName(), "its labelmap does not lie on the uncertainty map's grid")
        values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
        mask |= (values == segment.GetLabelValue()).reshape(tuple(grid.size)[::-1]).transpose(2, 1, 0)
    return mask


def scene_node_ids(scene) -> list[str]:
    return [scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())]
