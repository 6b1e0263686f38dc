"""ANTs Atropos as the classical segmentation baseline (``--model atropos``, ``--seg-model atropos``).

Real runs on a small synthetic brain-like phantom (nested ellipsoids: ventricle, WM core with a wavy
edge, GM shell, CSF shell, optionally a dark skull and a bright scalp), degraded by the sr protocol x4.
Every Atropos run happens once (module-scoped fixtures), with 2 EM iterations (``atropos_iterations``,
a predict option; the class means agree with 5 iterations to 4 decimals on these phantoms); Dice is
computed here (the formula of ``JointSRSegLib.metrics.dice``) so the module does not import MONAI.
"""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from scipy import ndimage

from JointSRSegLib import predict
from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import subdivide_grid
from JointSRSegLib.tissue_classes import GREY_MATTER, WHITE_MATTER
from JointSRSegLib.volume import Volume

pytest.importorskip("ants", reason="antspyx (extra 'atropos') is not installed")

ITERATIONS = 2  # EM iterations in these tests (predict's atropos_iterations; the default is 5)
# The ellipsoid phantom is no brain: registering the MNI152 template to it lands near the overlap threshold
# that decides between the prior and the k-means path, and multi-threaded registration is not bit-
# reproducible, so a run could take either path.  Phantom tests test the k-means path; the template path
# is tested on real anatomy (subject 19) below.
PHANTOM_PRIORS = "none"
# Nor is it a head the brain-extraction network knows (a 56 mm ellipsoid is 19 voxels of its 3 mm view):
# phantom tests test the classical brain mask; the learned one is tested on real anatomy
# (Testing/test_brain_extraction.py).
PHANTOM_MASK = "classical"

SHAPE = (48, 56, 48)
FACTOR, AXIS = 4, 2
# Measured on these phantoms (x4 thick slices of 4.8 mm: the 2 mm CSF shell is below the slice
# thickness, a harsh case), B-spline SR + Atropos, GM / WM Dice: t1 0.838 / 0.947, t2 0.813 / 0.712,
# t1 + skull 0.852 / 0.945 (0.698 / 0.874 before the dark-gap brain mask), t2 + skull 0.621 / 0.459
# (its bright CSF reaches within 4 mm of the 3 mm-thin scalp: taken as skull-stripped, the old mask).
# Floors a little under the measurements.
DICE_FLOOR = {GREY_MATTER: 0.8, WHITE_MATTER: 0.9}
VARIANT_FLOOR = {("t2", False): (0.75, 0.65), ("t1", True): (0.8, 0.9), ("t2", True): (0.55, 0.4)}


def dice(prediction: np.ndarray, reference: np.ndarray, label: int) -> float:
    """``JointSRSegLib.metrics.dice`` (1.0 when both are empty), without importing MONAI."""
    p, r = prediction == label, reference == label
    total = int(p.sum()) + int(r.sum())
    return 1.0 if total == 0 else 2.0 * int((p & r).sum()) / total


def phantom(contrast: str = "t1", skull: bool = False, seed: int = 0) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Image, GM/WM truth and head mask of the phantom; ``contrast`` t1 (CSF<GM<WM) or t2 (WM<GM<CSF)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in SHAPE], indexing="ij"))
    r = np.sqrt(sum((idx[a] / (SHAPE[a] * 0.5)) ** 2 for a in range(3)))
    angle = np.arctan2(idx[1], idx[0])
    truth = np.zeros(SHAPE, np.uint8)
    truth[r < 0.62] = GREY_MATTER
    truth[r < 0.42 + 0.04 * np.sin(5 * angle)] = WHITE_MATTER
    ventricle, csf = r < 0.12, (r >= 0.62) & (r < 0.70)
    truth[ventricle] = 0
    csf_value, gm_value, wm_value = {"t1": (0.2, 0.6, 0.9), "t2": (0.9, 0.6, 0.4)}[contrast]
    image = np.zeros(SHAPE, np.float32)
    image[csf | ventricle], image[truth == GREY_MATTER], image[truth == WHITE_MATTER] = csf_value, gm_value, wm_value
    head = r < 0.70
    if skull:
        image[(r >= 0.70) & (r < 0.82)] = 0.05  # bone
        image[(r >= 0.82) & (r < 0.95)] = 1.0  # bright scalp
        head = r < 0.95
    image += np.random.default_rng(seed).normal(0.0, 0.03, SHAPE).astype(np.float32)
    return Volume(image, (1.0, 1.0, 1.2), (-20.0, 10.0, 5.0), source="phantom"), truth, head


def _segment_lr(hr: Volume, **kwargs):
    lr = simulate_thick_slices(hr, FACTOR, AXIS)
    options = {"model": "atropos", "atropos_iterations": ITERATIONS, "atropos_priors": PHANTOM_PRIORS,
               "atropos_mask": PHANTOM_MASK, **kwargs}
    return lr, predict(lr, tasks=("sr", "seg"), scale=FACTOR, axis=AXIS, **options)


@pytest.fixture(scope="module")
def t1_run():
    hr, truth, head = phantom("t1")
    lr, result = _segment_lr(hr, uncertainty=True)
    return hr, truth, head, lr, result


def test_output_grid_labels_and_dice_t1(t1_run):
    hr, truth, head, lr, result = t1_run
    seg, sr = result.outputs["seg"], result.outputs["sr"]
    grid = subdivide_grid(lr.grid, FACTOR, AXIS)
    assert seg.grid == grid and sr.grid == grid  # exactly: spacing, origin, direction
    assert seg.array.dtype == np.uint8 and set(np.unique(seg.array)) <= {0, 1, 2}
    labels = seg.array[0]
    for tissue, floor in DICE_FLOOR.items():
        assert dice(labels, truth, tissue) >= floor, (tissue, dice(labels, truth, tissue))
    assert not labels[~head].any()  # nothing outside the head
    unit = result.outputs["uncertainty_seg"].array
    assert unit.shape == seg.array.shape and 0.0 <= unit.min() and unit.max() <= 1.0
    wrong = (labels != truth) & head  # the calibrated P(label wrong) is higher where the label is wrong
    assert unit[0][wrong].mean() > 2 * unit[0][~wrong & head].mean()
    summary = result.report["model"]["seg_model"]["uncertainty"]["uncertainty_seg"]
    assert summary["unit"] == "P(label wrong)" and summary["threshold"] == 0.5
    assert 0.0 <= summary["fraction_of_brain_above_threshold"] <= 1.0
    assert result.report["model"]["id"] == "bspline"
    assert result.report["model"]["seg_model"]["id"] == "atropos"
    assert result.report["model"]["seg_model"]["contrast"] == "T1-like"


@pytest.fixture(scope="module", params=[("t2", False), ("t1", True), ("t2", True)], ids=["t2", "t1-skull", "t2-skull"])
def variant_run(request):
    contrast, skull = request.param
    hr, truth, head = phantom(contrast, skull)
    return contrast, skull, truth, head, _segment_lr(hr)[1]


def test_contrast_and_whole_head(variant_run):
    contrast, skull, truth, head, result = variant_run
    labels = result.outputs["seg"].array[0]
    for tissue, floor in zip((GREY_MATTER, WHITE_MATTER), VARIANT_FLOOR[(contrast, skull)]):
        assert dice(labels, truth, tissue) >= floor, (contrast, skull, tissue, dice(labels, truth, tissue))
    # Thick-slice blur of the bright CSF / scalp widens the mask by a few voxels, never beyond the head's
    # dilation by one thick slice.
    outside = labels[~ndimage.binary_dilation(head, iterations=5)]
    assert not outside.any()
    expected = "T1-like" if contrast == "t1" else "T2-like"
    assert result.report["model"]["seg_model"]["contrast"] == expected


def test_seg_model_path_equals_model_atropos(t1_run):
    _, _, _, lr, result = t1_run
    other = predict(
        lr,
        model="bspline",
        seg_model="atropos",
        tasks=("sr", "seg"),
        scale=FACTOR,
        axis=AXIS,
        atropos_iterations=ITERATIONS,
        atropos_priors=PHANTOM_PRIORS,
        atropos_mask=PHANTOM_MASK,
    )
    np.testing.assert_array_equal(other.outputs["sr"].array, result.outputs["sr"].array)
    # Atropos' multi-threaded MRF updates are not bit-reproducible: a handful of voxels may differ.
    assert np.mean(other.outputs["seg"].array == result.outputs["seg"].array) >= 0.995


def test_non_lps_direction_agrees_in_physical_space(t1_run):
    hr, _, _, _, result = t1_run
    # The same voxels in another order: axis 0 flipped, axes 0 and 1 swapped; direction follows.
    array = np.flip(hr.array[0], axis=0).transpose(1, 0, 2)
    direction = hr.direction[:, [1, 0, 2]] * np.array([1.0, -1.0, 1.0])
    origin = hr.grid.physical_points(np.array([[hr.shape[0] - 1, 0, 0]]))[0]
    moved = Volume(array, (hr.spacing[1], hr.spacing[0], hr.spacing[2]), origin, direction, source="moved")
    assert np.allclose(moved.grid.all_physical_points()[3, 5, 7], hr.grid.all_physical_points()[hr.shape[0] - 6, 3, 7])
    _, other = _segment_lr(moved)
    back = np.flip(other.outputs["seg"].array[0].transpose(1, 0, 2), axis=0)
    assert np.allclose(other.outputs["seg"].grid.direction_matrix, direction)
    agreement = np.mean(back == result.outputs["seg"].array[0])
    assert agreement >= 0.99, agreement


def test_hr_input_on_its_own_grid():
    hr, truth, head = phantom("t1", seed=1)
    result = predict(hr, model="atropos", tasks=("seg",), scale=1, atropos_iterations=ITERATIONS,
                     atropos_priors=PHANTOM_PRIORS, atropos_mask=PHANTOM_MASK)
    seg = result.outputs["seg"]
    assert result.report["model"]["seg_model"]["iterations"] == ITERATIONS
    assert seg.grid == hr.grid and set(result.outputs) == {"seg"}
    assert dice(seg.array[0], truth, GREY_MATTER) >= 0.9 and dice(seg.array[0], truth, WHITE_MATTER) >= 0.95
    with pytest.raises(InputError, match="outside"):
        predict(hr, model="bspline", tasks=("sr",), scale=1)


def test_missing_antspyx_is_one_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_ants(name, *args, **kwargs):
        if name == "ants" or name.startswith("ants."):
            raise ImportError("No module named 'ants'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ants)
    hr, _, _ = phantom("t1")
    lr = simulate_thick_slices(hr, FACTOR, AXIS)
    with pytest.raises(InputError) as error:
        predict(lr, model="atropos", tasks=("sr", "seg"), scale=FACTOR, axis=AXIS)
    message = str(error.value)
    assert "antspyx" in message and "pip install antspyx" in message and "\n" not in message


def _brain_over_neck(flip: bool) -> tuple[np.ndarray, np.ndarray, Volume]:
    """A ball (the brain core) above a larger block (neck and face muscles), as masks on a grid."""
    shape = (44, 44, 80)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).astype(float)
    brain = (idx[0] - 21.5) ** 2 + (idx[1] - 21.5) ** 2 + (idx[2] - 56) ** 2 < 12**2
    neck = (np.abs(idx[0] - 21.5) < 16) & (np.abs(idx[1] - 21.5) < 16) & (idx[2] > 4) & (idx[2] < 30)
    direction = np.eye(3)
    if flip:  # axis 2 points inferior: the same head, stored upside down
        brain, neck, direction = brain[:, :, ::-1], neck[:, :, ::-1], np.diag([1.0, 1.0, -1.0])
    grid = Volume(np.zeros(shape, np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 79.0 if flip else 0.0), direction).grid
    return brain, neck, grid


@pytest.mark.parametrize("flip", [False, True])
def test_brain_is_the_component_highest_in_the_head(flip):
    from JointSRSegLib.atropos import _superior_component

    brain, neck, grid = _brain_over_neck(flip)
    assert neck.sum() > 2 * brain.sum()  # the neck is the larger component
    np.testing.assert_array_equal(_superior_component(brain | neck, grid), brain)
    tiny = np.zeros_like(brain)
    tiny[20:22, 20:22, 2 : 4 if not flip else 76 : 78] = True  # below a quarter of the largest: never chosen
    np.testing.assert_array_equal(_superior_component(neck | tiny, grid), neck)


def _real_anatomy(contrast: str = "t2", variant: str = "stripped") -> tuple[Volume, np.ndarray]:
    """Subject 19 of the shared SynthSeg label maps (never trained on) as a synthetic image of ``contrast`` at
    2 mm (every second voxel, so Atropos takes seconds), cropped to the brain; image and GM/WM truth."""
    from benchmarks.realistic_cases import CONTRAST_SEEDS, LABEL_MAPS, crop, crop_box, synthesize
    from JointSRSegLib.io import read_volume
    from JointSRSegLib.tissue_classes import tissue_classes

    source = read_volume(LABEL_MAPS / "training_seg_19.nii.gz")
    labels = source.array[0, ::2, ::2, ::2].astype(np.int32)
    volume = Volume(np.zeros((1, *labels.shape), np.float32), tuple(2.0 * s for s in source.spacing), source.origin,
                    source.direction, source=f"s19-{contrast}-{variant}")
    image = synthesize(labels, contrast, variant, seed=19000 + 10 * CONTRAST_SEEDS[contrast])
    box = crop_box((labels > 0) & (labels < 500), labels.shape, AXIS, factor=FACTOR, margin=4)
    truth = tissue_classes(crop(volume.with_array(labels[None]), box).array[0])
    return crop(volume.with_array(image[None]), box), truth


def test_ants_images_keep_their_geometry_through_nifti(tmp_path):
    """ANTsPy writes Atropos' priors to NIfTI; read back they must occupy the image's physical space exactly (a
    real 0.868 mm scan, origin (-72.17603536780437, ...), failed with "Inputs do not occupy the same physical
    space" before the geometry was rounded to float32)."""
    import ants

    from JointSRSegLib.atropos import ants_geometry

    angle = np.deg2rad(3.4)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    volume = Volume(np.zeros((4, 5, 6), np.float32), (0.8680555820465088, 0.8680555820465088, 0.9999313354492188),
                    (-72.17603536780437, 73.59787670256313, -52.76275634765625), turn, source="real-like")
    raw = {"origin": list(volume.origin), "spacing": list(volume.spacing), "direction": volume.direction}
    mismatch = {}
    for name, geometry in (("raw", raw), ("rounded", ants_geometry(volume))):
        image = ants.from_numpy(np.zeros(volume.shape, np.float32), **geometry)
        path = str(tmp_path / f"{name}.nii.gz")
        ants.image_write(image, path)
        back = ants.image_read(path)
        mismatch[name] = float(np.max(np.abs(np.subtract(back.origin, image.origin))))
        if name == "rounded":
            assert back.origin == image.origin and back.spacing == image.spacing
            assert np.max(np.abs(back.direction - image.direction)) < 1e-6
    assert mismatch["raw"] > 1e-6 * volume.spacing[0]  # what ITK's physical-space check rejected


def _real_anatomy_dice(contrast: str, priors: str) -> tuple[list[float], dict]:
    hr, truth = _real_anatomy(contrast)
    lr = simulate_thick_slices(hr, 2, AXIS)
    result = predict(lr, model="atropos", tasks=("sr", "seg"), scale=2, axis=AXIS, atropos_iterations=ITERATIONS,
                     atropos_priors=priors)
    labels = result.outputs["seg"].array[0]
    return [dice(labels, truth, tissue) for tissue in (GREY_MATTER, WHITE_MATTER)], result.report["model"]["seg_model"]


def test_skull_stripped_t2_keeps_its_dark_white_matter():
    """The darkest class of a stripped T2 brain is white matter, not skull: it stays in the brain mask (it was
    cut out as the "dark gap", and Atropos Dice on the 1 mm subject-19 T2 case at x4 was 0.077; now 0.827)."""
    scores, report = _real_anatomy_dice("t2", "none")
    assert report["contrast"] == "T2-like" and report["priors"] == "none"
    assert min(scores) >= 0.7, scores


def test_template_priors_name_every_contrast_and_help_t1():
    """The registered MNI152 priors say which class is which in FLAIR too (the k-means depth rule took this FLAIR
    brain for T1: GM/WM Dice 0.22 / 0.13 at 1 mm, x4), and weigh the T1 segmentation (GM gains)."""
    flair, report = _real_anatomy_dice("flair", "template")
    assert report["priors"].startswith("template") and report["template_overlap"] >= 0.8
    assert report["contrast"] == "FLAIR-like" and min(flair) >= 0.7, flair
    with_priors, report = _real_anatomy_dice("t1", "template")
    assert report["priors"] == "template-weighted" and report["prior_weight"] == 0.25
    without, report = _real_anatomy_dice("t1", "none")
    assert report["priors"] == "none"
    assert with_priors[0] > without[0] + 0.01 and min(with_priors) >= 0.75, (with_priors, without)


def test_atropos_without_registration_is_deterministic_and_a_ct_is_refused():
    """Atropos runs with a constant seed (``-r 0``): the same scan twice, k-means path, the same labels
    bit for bit on 2 threads.  (The registered-template path is not: antsRegistration's multi-threaded
    metric gives Dice 0.975-0.986 between two runs of the same scan on 2 threads, 0.996 on 1; see the
    module docstring.)  A CT-like image is refused before any ANTs work."""
    from pathlib import Path

    from JointSRSegLib.atropos import segment_tissues
    from JointSRSegLib.io import read_volume

    path = Path(__file__).resolve().parent / "Data" / "orientation" / "RAS.nii.gz"
    volume = read_volume(path)
    volume = volume.with_array(volume.array.astype(np.float32))
    first = segment_tissues(volume, threads=2, priors="none").labels
    second = segment_tissues(volume, threads=2, priors="none").labels
    assert np.array_equal(first, second) and (first == GREY_MATTER).any() and (first == WHITE_MATTER).any()
    ct = volume.with_array(np.where(volume.array > volume.array.mean(), 40.0, -1000.0).astype(np.float32))
    with pytest.raises(InputError, match="looks like CT"):
        segment_tissues(ct, threads=2)
