"""Voxel reorientation is exact, and a package gives the same physical answer in any voxel order."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from conftest import SAMPLE

from JointSRSegLib import predict
from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import orientation_code, subdivide_grid
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import dice
from JointSRSegLib.orientation import Reorientation, check_orientation_code, reorient_volume
from JointSRSegLib.package_schema import validate_metadata
from JointSRSegLib.volume import Volume

ALL_CODES = [
    "".join(letters)
    for perm in itertools.permutations([("L", "R"), ("P", "A"), ("S", "I")])
    for letters in itertools.product(*perm)
]


def _oblique_volume() -> Volume:
    rng = np.random.default_rng(3)
    angle = np.radians(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return Volume(rng.random((2, 5, 6, 7)).astype(np.float32), (0.5, 0.7, 3.0), (10.0, -4.0, 7.5), rotation)


def test_all_48_voxel_orientations_are_reached_exactly():
    assert len(set(ALL_CODES)) == 48
    volume = _oblique_volume()
    probe = np.array([[1, 2, 3], [4, 0, 6], [0, 5, 1]])
    for code in ALL_CODES:
        out = reorient_volume(volume, code)
        assert orientation_code(out.direction) == code
        assert sorted(out.spacing) == sorted(volume.spacing)
        reo = Reorientation.to_code(volume.grid, code)
        assert np.array_equal(reo.invert(reo.apply(volume.array)), volume.array)
        # every voxel keeps its value at its physical position
        for i, j, k in probe:
            point = volume.grid.physical_points([[i, j, k]])[0]
            index = np.rint(np.linalg.solve(out.grid.index_to_physical_matrix()[:3, :3], point - out.origin))
            assert np.allclose(out.grid.physical_points([index])[0], point, atol=1e-9)
            assert (
                out.array[(slice(None),) + tuple(int(v) for v in index)].tolist() == volume.array[:, i, j, k].tolist()
            )


def test_frame_axis_follows_the_anatomy():
    reo = Reorientation.between("LIA", "RAS")
    assert reo.perm == (0, 2, 1) and reo.flips == (True, False, True)
    assert reo.frame_axis(2) == 1  # LIA's third axis (anterior) is RAS's second


@pytest.mark.parametrize("bad", ["RAX", "RRS", "LA", "", "LPSI"])
def test_bad_orientation_codes_are_refused(bad):
    with pytest.raises(ValueError):
        check_orientation_code(bad)


def test_package_schema_checks_the_recorded_orientation():
    good = json.loads((SAMPLE.parent / "Models" / "swinsr-unetr-brain-small" / "model.json").read_text())
    assert good["inference"]["orientation"] == "RAS"
    validate_metadata(good, "model.json")
    bad = {**good, "inference": {**good["inference"], "orientation": "RAA"}}
    with pytest.raises(InputError, match="inference.orientation"):
        validate_metadata(bad, "model.json")


@pytest.fixture(scope="module")
def thick_block() -> Volume:
    hr = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz")
    block = (slice(None), slice(44, 108), slice(70, 134), slice(60, 108))
    origin = hr.grid.physical_points([[44, 70, 60]])[0]
    return simulate_thick_slices(Volume(hr.array[block], hr.spacing, origin, hr.direction), 4, 2)


def test_a_package_gives_the_same_physical_result_in_any_voxel_order(thick_block):
    """The shipped joint model on a thick-slice block and on its LIA/PSR copies: the outputs,
    mapped back into the first one's voxel order, agree voxel for voxel."""
    model = "swinsr-unetr-brain-small"
    first = predict(thick_block, model=model, tasks=("sr", "seg"), scale=4, threads=2)
    assert first.outputs["sr"].grid.almost_equal(subdivide_grid(thick_block.grid, 4, 2))
    assert first.report["model"]["voxel_orientation"] == {"input": "RAS", "model": "RAS"}
    seg0, sr0 = first.outputs["seg"].array[0], first.outputs["sr"].array[0].astype(np.float64)
    assert set(np.unique(seg0)) == {0, 1, 2}
    value_range = float(thick_block.array.max() - thick_block.array.min())
    for code in ("LIA", "PSR"):
        other = predict(reorient_volume(thick_block, code), model=model, tasks=("sr", "seg"), scale=4, threads=2)
        back = Reorientation.to_code(other.outputs["seg"].grid, "RAS")
        assert back.apply_grid(other.outputs["seg"].grid).almost_equal(first.outputs["seg"].grid)
        seg = back.apply(other.outputs["seg"].array)[0]
        sr = back.apply(other.outputs["sr"].array)[0].astype(np.float64)
        assert np.mean([dice(seg == c, seg0 == c) for c in (1, 2)]) >= 0.99
        assert np.abs(sr - sr0).max() <= 0.01 * value_range
