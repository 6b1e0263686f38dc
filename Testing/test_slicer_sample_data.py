"""The Sample Data entries: registered as Slicer's SampleData module takes them, downloaded and loaded
the way it does (file:// URI into the cache, SHA256 check, Slicer's own volume reader), exact geometry,
and the module runs on the real thick-slice scan.

Slicer's SampleData module needs Qt, so ``registerCustomSampleDataSource`` is a stand-in with the
parameter lists of Slicer's SampleData.py (the current one, where ``loadFileType`` is a deprecated
alias of ``loadFileTypes``, and the older one that only has ``loadFileType``): an argument Slicer does
not take fails here too.  Loading goes through slicer-core's ``vtkSlicerVolumesLogic.AddArchetypeVolume``
(what Slicer's VolumeFile reader calls).

Slicer's volume storage node forces a right-handed IJK frame (``vtkMRMLVolumeArchetypeStorageNode::
ForceRightHandedIJKCoordinateSystem``): the ds000011 file is stored LAS, left-handed, so Slicer keeps
its K axis reversed -- same spacing, same physical voxel centres, origin at the file's last slice.
"""

from __future__ import annotations

import hashlib
import sys
import types
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "JointSRSeg")]

import slicer  # noqa: E402
from JointSRSegModule import nodes, sample_data  # noqa: E402
from JointSRSegModule.logic import JointSRSegLogic  # noqa: E402

from JointSRSegLib.geometry import subdivide_grid, through_plane_axis  # noqa: E402
from JointSRSegLib.io import read_volume  # noqa: E402
from JointSRSegLib.volume import Grid  # noqa: E402

sys.path.insert(0, str(ROOT / "Resources" / "SampleData"))
import make_sample_data  # noqa: E402

SOURCE = Path("/work/shared/data/openfmri_ds000011")
THICK = sample_data.sample_dir() / sample_data.THICK_SAMPLE.file
FACTOR = 4


def current_signature(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                      customDownloader=None, thumbnailFileName=None, loadFileTypes=None, loadFiles=None,
                      loadFileProperties={}, checksums=None, loadFileType=None):  # noqa: B006 (Slicer's own)
    if loadFileType is not None and loadFileTypes is not None:
        raise ValueError("loadFileType and loadFileTypes cannot be specified at the same time")
    return dict(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                thumbnailFileName=thumbnailFileName, loadFileTypes=loadFileTypes or loadFileType,
                checksums=checksums)


def older_signature(category="Custom", sampleName=None, uris=None, fileNames=None, nodeNames=None,
                    customDownloader=None, thumbnailFileName=None, loadFileType="VolumeFile", loadFiles=None,
                    loadFileProperties={}, checksums=None):  # noqa: B006
    return dict(category=category, sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                thumbnailFileName=thumbnailFileName, loadFileTypes=loadFileType, checksums=checksums)


def registered(signature) -> list[dict]:
    calls = []
    module = types.ModuleType("SampleData")
    module.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kw: calls.append(signature(**kw)))
    sys.modules["SampleData"] = module
    try:
        sample_data.register_sample_data(ROOT / "JointSRSeg" / "Resources" / "Icons" / "JointSRSeg.png")
    finally:
        del sys.modules["SampleData"]
    return calls


@pytest.mark.parametrize("signature", [current_signature, older_signature])
def test_entries_register_with_slicers_parameters(signature):
    calls = registered(signature)
    assert [c["sampleName"] for c in calls] == [s.name for s in sample_data.SAMPLES]
    assert "ds000011" in calls[0]["sampleName"] and "5 mm" in calls[0]["sampleName"]
    for call, sample in zip(calls, sample_data.SAMPLES):
        assert call["category"] == "JointSRSeg" and Path(call["thumbnailFileName"]).is_file()
        assert call["fileNames"] == "JointSRSeg-" + sample.file  # no clash in Slicer's shared cache
        assert call["loadFileTypes"] == sample.load_type and call["nodeNames"] == sample.node
        shipped = sample_data.sample_dir() / sample.file
        assert call["checksums"] == "SHA256:" + hashlib.sha256(shipped.read_bytes()).hexdigest()


def download(call: dict, cache: Path) -> Path:
    """SampleDataLogic.downloadFile for a file:// URI: urlretrieve into the cache, then the checksum."""
    path = cache / call["fileNames"]
    urllib.request.urlretrieve(call["uris"], path)
    algo, digest = call["checksums"].split(":")
    assert hashlib.new(algo.lower(), path.read_bytes()).hexdigest() == digest
    return path


@pytest.fixture(scope="module")
def app():
    from trame_slicer.core import SlicerApp

    return SlicerApp()


def load(app, call: dict, cache: Path):
    node = app.io_manager.load_volumes(str(download(call, cache)))[0]
    node.SetName(call["nodeNames"])
    return node


def file_ijk_to_ras(path: Path) -> np.ndarray:
    """The NIfTI sform, the file's own voxel-to-RAS matrix (qform and sform agree in these files)."""
    image = nib.load(str(path))
    assert np.array_equal(image.get_qform(), image.get_sform())
    return image.get_sform()


def test_thick_sample_is_the_recorded_real_scan():
    """Provenance: the shipped bytes are the ds000011 file the script records (and the source, where present)."""
    digest = hashlib.sha256(THICK.read_bytes()).hexdigest()
    assert digest == make_sample_data.THICK_SHA256
    assert THICK.stat().st_size < 1_000_000
    licence = (sample_data.sample_dir() / "LICENSE.txt").read_text(encoding="utf-8")
    assert "ds000011" in licence and "Public Domain Dedication and License" in licence and digest in licence
    if SOURCE.is_dir():
        assert hashlib.sha256((SOURCE / make_sample_data.THICK_SOURCE).read_bytes()).hexdigest() == digest


def test_thick_sample_loads_with_the_files_geometry(app, tmp_path):
    call = registered(current_signature)[0]
    node = load(app, call, tmp_path)
    assert node.GetName() == "T2 5mm" and node.GetImageData().GetDimensions() == (128, 128, 30)
    file_matrix = file_ijk_to_ras(THICK)
    slicer_matrix = nodes.node_ijk_to_ras(node)
    # spacing and in-plane axes exactly the file's; K reversed (right-handed IJK), same voxel centres
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, 29.0  # k_file = 29 - k_slicer
    assert np.array_equal(slicer_matrix, file_matrix @ flip)
    np.testing.assert_array_equal(np.linalg.norm(slicer_matrix[:3, :3], axis=0), [1.5625, 1.5625, 5.0])
    voxels = slicer.util.arrayFromVolume(node)  # (K, J, I)
    np.testing.assert_array_equal(voxels[::-1].transpose(2, 1, 0), np.asanyarray(nib.load(str(THICK)).dataobj))
    # the library reads the same physical grid (without the reversal)
    library = read_volume(THICK).grid
    assert np.array_equal(nodes.ijk_to_ras_matrix(library), file_matrix)


def test_mni_sample_loads_with_the_files_geometry(app, tmp_path):
    call = registered(current_signature)[1]
    node = load(app, call, tmp_path)
    path = sample_data.sample_dir() / sample_data.SAMPLES[1].file
    assert np.array_equal(nodes.node_ijk_to_ras(node), file_ijk_to_ras(path))
    assert node.GetImageData().GetDimensions() == nib.load(str(path)).shape


def test_module_runs_on_the_thick_sample(app, tmp_path):
    """B-spline xR along the 5 mm axis: R thin slices per slab, origin moved by -(R-1)/2 HR voxels."""
    node = load(app, registered(current_signature)[0], tmp_path)
    grid = nodes.node_grid(node)
    assert through_plane_axis(grid) == 2
    sr = JointSRSegLogic(app.scene).process(node, model="bspline", tasks=("sr",), scale=FACTOR)["sr"]
    sr_grid = nodes.node_grid(sr)
    assert sr.GetName() == f"T2 5mm SR ×{FACTOR}"
    assert sr_grid.size == (128, 128, 30 * FACTOR)
    assert sr_grid.almost_equal(subdivide_grid(grid, FACTOR, 2), 1e-9)
    np.testing.assert_allclose(sr_grid.spacing, (1.5625, 1.5625, 5.0 / FACTOR), atol=1e-12)
    np.testing.assert_allclose(sr_grid.direction, grid.direction, atol=1e-12)
    shift = -(FACTOR - 1) / 2 * (5.0 / FACTOR) * np.asarray(grid.direction)[:, 2]
    np.testing.assert_allclose(np.asarray(sr_grid.origin) - np.asarray(grid.origin), shift, atol=1e-9)
    # the same physical thin-slice grid as subdividing the file's own (K not reversed) grid
    file_sr = subdivide_grid(read_volume(THICK).grid, FACTOR, 2)
    assert sorted_centres(sr_grid) == sorted_centres(file_sr)
    thin = slicer.util.arrayFromVolume(sr)
    assert thin.shape == (30 * FACTOR, 128, 128) and np.isfinite(thin).all()


def sorted_centres(grid: Grid) -> list[tuple[float, ...]]:
    """Voxel centres (every 8th in plane, every slice), rounded to 1 um, in sorted order."""
    axes = [sorted({0, n - 1} | set(range(0, n, 8))) for n in grid.size[:2]] + [range(grid.size[2])]
    index = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    points = np.round(grid.physical_points(index), 3)
    return sorted(map(tuple, points.tolist()))
