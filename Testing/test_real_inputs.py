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


def test_tissue_segmentation_of_an_abdomen_mr_is_refused_in_one_line_before_any_work(tmp_path, capsys):
    """An abdomen MR got grey and white matter painted over it (the brain-extraction network marks a "brain"
    in any MR, mean probability 0.95); its mask is larger than any adult brain, so one line, exit 2, no
    output -- before the SR work -- and ``InputError`` from the API."""
    path = DATA / "totalsegmentator_mr_abdomen.nii.gz"
    out = tmp_path / "out"
    code = cli_main(["run", "--input", str(path), "--tasks", "sr,seg", "--scale", "4", "--axis", "2",
                     "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and str(path) in err[0] and "no brain in the field of view" in err[0], err
    assert "measures 275 x 202 mm, larger than an adult brain" in err[0]
    with pytest.raises(InputError, match="measures 275 x 202 mm"):
        predict(read_volume(path), model="atropos", tasks=("seg",), scale=1)


def test_a_partial_field_of_view_through_a_brain_is_segmented_not_refused():
    """A 64 mm block of the sample brain padded with 32 empty voxels measures what a neck does, so a small mask
    is not refused (a refused brain is worse than a labelled neck): the default learned-mask Atropos path runs,
    labels nothing far from the block, and agrees with the template's tissue map (x4: GM 0.73, WM 0.86
    measured by k-means: the whole-brain template is not registered onto a partial brain, where it gave
    0.45-0.63 / 0.67-0.72)."""
    from JointSRSegLib.degradation import simulate_thick_slices
    from JointSRSegLib.volume import Volume

    sample = DATA.parents[1].parent / "Resources" / "SampleData"
    hr, tissue = read_volume(sample / "MNI152_T1_1mm.nii.gz"), read_volume(sample / "MNI152_tissue_1mm.nii.gz")
    pad, block = 32, (slice(44, 108), slice(70, 134), slice(60, 108))
    origin = hr.grid.physical_points([[b.start - pad for b in block]])[0]
    padded = Volume(np.pad(hr.array[(0, *block)], pad)[None], hr.spacing, origin, hr.direction)
    result = predict(simulate_thick_slices(padded, 4, 2), model="atropos", tasks=("sr", "seg"), scale=4, axis=2)
    seg, truth = result.outputs["seg"].array[0], np.pad(tissue.array[(0, *block)], pad)
    assert result.outputs["seg"].grid.size == padded.grid.size  # the sr grid of a 4k-slice input is the HR grid
    near = np.zeros(seg.shape, bool)
    near[tuple(slice(pad - 8, pad + b.stop - b.start + 8) for b in block)] = True
    assert not seg[~near].any()
    assert result.report["model"]["seg_model"]["priors"] == "none"  # no whole-brain template squeezed into it
    assert "partial brain" in result.report["model"]["seg_model"]["template_skipped"]
    for label, floor in ((1, 0.68), (2, 0.8)):
        both = np.count_nonzero((seg == label) & (truth == label))
        score = 2 * both / (np.count_nonzero(seg == label) + np.count_nonzero(truth == label))
        assert score >= floor


@pytest.mark.parametrize(("name", "problem"), [("totalsegmentator_ct_abdomen.nii.gz", "looks like CT"),
                                                ("totalsegmentator_mr_abdomen.nii.gz", "measures 275 x 202 mm")])
def test_a_shipped_tissue_package_refuses_what_atropos_refuses(name, problem, tmp_path, capsys):
    """The brain packages segment grey/white matter as Atropos does, so a CT or an abdomen is refused by them
    too (one line, exit 2, no output), before the network is built; their SR alone still runs elsewhere."""
    path = DATA / name
    out = tmp_path / "out"
    code = cli_main(["run", "--input", str(path), "--tasks", "sr,seg", "--scale", "4", "--axis", "2",
                     "--model", "swinsr-unetr-brain-small", "--out-dir", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and str(path) in err[0] and problem in err[0] and "brain MR only" in err[0], err
    with pytest.raises(InputError, match=problem):
        predict(read_volume(path), model="rehrseg-brain-small", tasks=("seg",), scale=4, axis=2)
