"""Reading every supported format into one LPS convention, and exact round trips."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATA

from JointSRSegLib.errors import InputError
from JointSRSegLib.io import read_volume, read_volumes, write_volume
from JointSRSegLib.volume import Volume


def _oblique_volume(channels: int = 1, dtype=np.float32) -> Volume:
    rng = np.random.default_rng(3)
    a = 0.4
    direction = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    array = (rng.random((channels, 9, 8, 7)) * 1000).astype(dtype)
    return Volume(array, (0.7, 0.9, 3.3), (-12.25, 40.5, 7.125), direction, source="synthetic")


def _assert_same(a: Volume, b: Volume, atol: float = 1e-6):
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


def test_dicom_series_loads_with_slice_spacing_and_first_slice_origin():
    vol = read_volume(DATA / "dicom")
    assert vol.shape == (512, 512, 3)
    assert vol.spacing[2] == pytest.approx(1.5, abs=1e-4)
    # Origin = ImagePositionPatient of the first slice along the slice normal.
    positions = []
    for f in sorted((DATA / "dicom").glob("*.dcm")):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(f))
        reader.ReadImageInformation()
        positions.append([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
    normal = vol.direction[:, 2]
    first = min(positions, key=lambda p: float(np.dot(p, normal)))
    np.testing.assert_allclose(vol.origin, first, atol=1e-4)
    # Voxel (0, 0, 2) lies on the third slice's position.
    third = max(positions, key=lambda p: float(np.dot(p, normal)))
    np.testing.assert_allclose(vol.grid.physical_points([[0, 0, 2]])[0], third, atol=1e-3)


@pytest.mark.parametrize(
    "chain", [(".nii.gz", ".nrrd", ".mha"), (".nrrd", ".mha", ".nii"), (".mha", ".nii.gz", ".nhdr")]
)
def test_round_trips_are_exact(tmp_path, chain):
    original = _oblique_volume()
    current = original
    for i, suffix in enumerate(chain):
        path = write_volume(current, tmp_path / f"step{i}{suffix}")
        current = read_volume(path)
        _assert_same(current, original)


def test_multichannel_write_and_integer_dtype_round_trip(tmp_path):
    labels = _oblique_volume(dtype=np.uint8)
    _assert_same(read_volume(write_volume(labels, tmp_path / "l.nrrd")), labels)
    assert read_volume(tmp_path / "l.nrrd").array.dtype == np.uint8


def test_mgz_is_read_in_lps(tmp_path):
    import nibabel as nib

    original = _oblique_volume()
    write_volume(original, tmp_path / "v.nii.gz")
    nii = nib.load(str(tmp_path / "v.nii.gz"))
    nib.save(nib.MGHImage(np.asarray(nii.dataobj), nii.affine), str(tmp_path / "v.mgz"))
    _assert_same(read_volume(tmp_path / "v.mgz"), original, atol=1e-4)


def test_multimodal_stacking_and_mismatch(tmp_path):
    a = _oblique_volume()
    b = a.with_array(a.array * 2)
    pa, pb = write_volume(a, tmp_path / "t1.nii.gz"), write_volume(b, tmp_path / "t2.nii.gz")
    both = read_volumes([pa, pb])
    assert both.channels == 2 and both.channel_names == ("t1", "t2")
    np.testing.assert_array_equal(both.array[1], b.array[0])
    shifted = Volume(b.array, b.spacing, np.asarray(b.origin) + 1.0, b.direction)
    pc = write_volume(shifted, tmp_path / "flair.nii.gz")
    with pytest.raises(InputError, match="flair.nii.gz: grid .* does not match"):
        read_volumes([pa, pc])


def test_write_is_atomic_and_keeps_existing_file_on_failure(tmp_path, monkeypatch):
    target = write_volume(_oblique_volume(), tmp_path / "keep.nii.gz")
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        write_volume(_oblique_volume(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]
