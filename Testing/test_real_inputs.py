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


BRAIN1 = DATA / "pyradiomics_brain1_6p5mm.nrrd"
TUMOUR1 = DATA / "pyradiomics_brain1_tumour_label.nrrd"


def test_clinical_6p5mm_brain_with_a_tumour_is_segmented_inside_the_head_keeping_the_tumour_in_the_brain():
    """A real post-contrast T1 with 6.5 mm slices and an enhancing tumour (pyradiomics brain1), segmented on
    its own grid by the default tissue path (learned brain mask, registered template priors, Atropos).
    Measured: brain mask 1653 mL holding all of the 16.4 mL tumour; GM 834 / WM 666 mL (x4 adapt SR first:
    882 / 610 mL); nothing outside the head."""
    from JointSRSegLib.atropos import learned_mask
    from JointSRSegLib.foreground import head_mask

    volume = read_volume(BRAIN1)
    volume = volume.with_array(volume.array.astype(np.float32))
    tumour = read_volume(TUMOUR1).array[0] > 0
    mask = learned_mask(volume)
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    assert mask is not None and 1300 <= mask.sum() * voxel_ml <= 1900
    assert mask[tumour].mean() >= 0.99  # the brain extraction does not cut the tumour off
    result = predict(volume, model="atropos", tasks=("seg",), scale=1, threads=2)
    seg = result.outputs["seg"]
    assert seg.grid.almost_equal(volume.grid)
    labels = seg.array[0]
    assert not (labels[~head_mask(volume)] > 0).any()
    gm, wm = (labels == 1).sum() * voxel_ml, (labels == 2).sum() * voxel_ml
    assert 450 <= gm <= 1100 and 350 <= wm <= 900, (gm, wm)
    report = result.report["model"]["seg_model"]
    assert report["brain_mask"] == "learned" and report["priors"] == "template-weighted"


def test_clinical_5p5mm_flair_is_recognised_and_segmented_inside_the_head():
    """TorchIO's FPG "t2" is CSF-dark with GM brighter than WM: the template priors call it FLAIR-like and
    Atropos keeps their classes.  Measured on its own grid: mask 1093 mL (26 slices of 5.5 mm: the vertex and
    the skull base are out of the field of view), GM 641 / WM 396 mL, 26 s on 2 threads."""
    from JointSRSegLib.foreground import head_mask

    volume = read_volume(DATA / "torchio_fpg_t2_5p5mm.nii.gz")
    volume = volume.with_array(volume.array.astype(np.float32))
    result = predict(volume, model="atropos", tasks=("seg",), scale=1, threads=2)
    report = result.report["model"]["seg_model"]
    assert report["contrast"] == "FLAIR-like" and report["priors"] == "template-weighted"
    means = report["class_means"]
    assert means["csf"] < means["wm"] < means["gm"]
    labels = result.outputs["seg"].array[0]
    assert result.outputs["seg"].grid.almost_equal(volume.grid)
    assert not (labels[~head_mask(volume)] > 0).any()
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    gm, wm = (labels == 1).sum() * voxel_ml, (labels == 2).sum() * voxel_ml
    assert 450 <= gm <= 850 and 250 <= wm <= 550 and gm > wm, (gm, wm)


@pytest.mark.parametrize("name", ["sct_t2s_spine_7p5mm.nii.gz", "totalsegmentator_mr_abdomen.nii.gz"])
def test_adapted_sr_runs_on_non_brain_mr_on_the_exact_grid(name):
    """SR does not assume a brain: the shipped prior, briefly adapted, super-resolves a cervical-cord T2*
    (7.5 mm slices, uint8) and an abdominal MR x4 on the subdivided grid; nothing below the input's minimum
    (the network undershot to -28 on the 0-255 T2* and to -203 on the MR before the floor), and only
    isolated voxels above its maximum (1e-4 of them: bright vessels, thinner than a slab)."""
    volume = read_volume(DATA / name)
    axis = 2
    result = predict(volume, model="adapt", tasks=("sr",), scale=4, axis=axis, max_steps=3, seed=0, threads=2)
    sr = result.outputs["sr"]
    assert sr.grid.almost_equal(subdivide_grid(volume.grid, 4, axis))
    lr = volume.array[0].astype(np.float32)
    span = float(lr.max() - lr.min())
    assert np.isfinite(sr.array).all()
    assert sr.array.min() >= lr.min() and result.report["model"]["training"]["sr"]["clamped_below_input_minimum"] > 0
    assert (sr.array > lr.max()).mean() < 1e-3
    # each group of 4 output slices stays close to its thick input slice (the sr protocol's slab)
    slabs = sr.array[0].reshape(*sr.shape[:2], -1, 4).mean(axis=-1)
    assert np.median(np.abs(slabs - lr)) <= 0.02 * span


@pytest.mark.parametrize(("name", "size"), [("sct_t2s_spine_7p5mm.nii.gz", "120 x 107 mm"),
                                             ("totalsegmentator_mr_abdomen.nii.gz", "275 x 202 mm")])
def test_tissue_segmentation_of_non_brain_mr_is_refused_in_one_line_before_any_work(name, size, tmp_path, capsys):
    """A neck and an abdomen MR got grey and white matter painted over them (the brain-extraction network
    marks a "brain" in any MR, mean probability 0.95); its mask has no adult brain's size there, so one line,
    exit 2, no output -- before the SR work -- and ``InputError`` from the API."""
    path = DATA / name
    out = tmp_path / "out"
    code = cli_main(["run", "--input", str(path), "--tasks", "sr,seg", "--scale", "4", "--axis", "2",
                     "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and str(path) in err[0] and "no adult brain" in err[0] and size in err[0], err
    with pytest.raises(InputError, match=f"measures {size}"):
        predict(read_volume(path), model="atropos", tasks=("seg",), scale=1)
