"""Real scans the models never saw, from outside the brain-MR training world: clinical thick-slice brain
MR, a spinal-cord T2*, abdominal CT and MR (Testing/Data/real_inputs, licences there).  Each must run
cleanly where the product applies and be refused in one line where it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from JointSRSegLib import predict
from JointSRSegLib.cli import main as cli_main
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import subdivide_grid
from JointSRSegLib.io import read_volume

DATA = Path(__file__).resolve().parent / "Data" / "real_inputs"
CT = DATA / "totalsegmentator_ct_abdomen.nii.gz"


def test_tissue_segmentation_of_a_ct_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """An abdominal CT got a 2 L "brain" with 1.1 L of grey matter before; now one line, exit 2, no output."""
    out = tmp_path / "out"
    code = cli_main(["run", "--input", str(CT), "--tasks", "sr,seg", "--scale", "4", "--axis", "2",
                     "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and str(CT) in err[0] and "looks like CT" in err[0] and "brain MR only" in err[0]
    volume = read_volume(CT)
    with pytest.raises(InputError, match=r"looks like CT \(31% of the voxels at air's -1000 HU\)"):
        predict(volume, model="atropos", tasks=("seg",), scale=1)


def test_super_resolution_of_a_ct_runs_on_the_exact_grid_and_keeps_hounsfield_units():
    """SR is not brain-specific: a CT is super-resolved x2 on the subdivided grid, in its own units."""
    volume = read_volume(CT)
    result = predict(volume, model="bspline", tasks=("sr",), scale=2, axis=2)
    sr = result.outputs["sr"]
    assert sr.grid.almost_equal(subdivide_grid(volume.grid, 2, 2))
    lr = volume.array[0].astype(np.float32)
    assert sr.array.min() >= lr.min() - 100 and sr.array.max() <= lr.max() + 100
    # slab means are kept: each pair of output slices averages to about its input slice
    pairs = sr.array[0].reshape(sr.shape[0], sr.shape[1], -1, 2).mean(axis=-1)
    inner = (slice(None), slice(None), slice(2, -2))
    assert np.median(np.abs(pairs[inner] - lr[inner])) < 15.0
