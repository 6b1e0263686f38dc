"""Training data layer: dataset layouts, patient-level splits, LR/HR pairs, augmentation, loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from JointSRSegLib.degradation import simulate_inplane_bicubic, simulate_slice_gaps, simulate_thick_slices
from JointSRSegLib.errors import InputError
from JointSRSegLib.volume import Volume
from training.data import (
    BraTSRegionsd,
    LoadCased,
    MakeLRHRPaird,
    RandAlignedCropd,
    SelfSupervisedPaird,
    SynthesizeImageFromLabels,
    brats_regions,
    build_dataset,
    check_splits,
    hr_augmentations,
    load_dataset,
    load_splits,
    make_splits,
    save_splits,
    select_cases,
)

SHAPE = (12, 10, 8)  # (I, J, K)
SPACING = (1.0, 1.0, 3.0)


def write(path, array, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    """Write an (I, J, K) or (C, I, J, K) array (C becomes the 4th NIfTI dimension, as in MSD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 3:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.SetSpacing(spacing)
        image.SetOrigin(origin)
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(0, 3, 2, 1)), isVector=False)
        image.SetSpacing((*spacing, 1.0))
        image.SetOrigin((*origin, 0.0))
    sitk.WriteImage(image, str(path))
    return path


def image_array(seed=0, value=0.0):
    return (np.random.default_rng(seed).random(SHAPE) + value).astype(np.float32)


def label_array():
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:6, 1:4] = 1
    label[6:10, 3:8, 4:7] = 2
    return label


# --------------------------------------------------------------------------- layouts


def make_msd(root, channels):
    modality = {"0": "MRI"} if channels == 1 else {str(i): n for i, n in enumerate(["FLAIR", "T1w", "t1gd", "T2w"])}
    training = []
    for n in (1, 2, 3):
        name = f"case_{n:03d}.nii.gz"
        data = image_array(n) if channels == 1 else np.stack([image_array(n, 10.0 * c) for c in range(channels)])
        write(root / "imagesTr" / name, data)
        write(root / "labelsTr" / name, label_array())
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "test", "modality": modality, "labels": {"0": "background", "1": "a", "2": "b"}}
    (root / "dataset.json").write_text(json.dumps({**meta, "training": training, "test": []}))


def test_msd_single_modality(tmp_path):
    make_msd(tmp_path, 1)
    index = load_dataset(tmp_path)
    assert index.layout == "msd"
    assert [c["id"] for c in index.cases] == ["case_001", "case_002", "case_003"]
    assert index.modalities == ["MRI"] and index.label_names == {0: "background", 1: "a", 2: "b"}
    case = index.cases[0]
    assert case["patient"] == "case_001" and case["lr_only"] is False
    assert case["label"].endswith("labelsTr/case_001.nii.gz") and len(case["images"]) == 1
    loaded = LoadCased()(case)
    assert loaded["image"].shape == (1, *SHAPE) and loaded["label"].shape == (1, *SHAPE)
    np.testing.assert_allclose(loaded["image"][0], image_array(1))
    np.testing.assert_array_equal(loaded["label"][0], label_array())
    np.testing.assert_allclose(loaded["spacing"], SPACING)


def test_msd_4d_multimodal_is_split_into_channels(tmp_path):
    make_msd(tmp_path, 4)
    index = load_dataset(tmp_path, layout="msd")
    assert index.modalities == ["FLAIR", "T1w", "t1gd", "T2w"]
    loaded = LoadCased()(index.cases[1])
    assert loaded["image"].shape == (4, *SHAPE)
    for c in range(4):
        np.testing.assert_allclose(loaded["image"][c], image_array(2, 10.0 * c))
    np.testing.assert_allclose(loaded["spacing"], SPACING)


def make_brats(root):
    old = {"t1": 0, "t1ce": 1, "t2": 2, "flair": 3}
    new = {"t1n": 0, "t1c": 1, "t2w": 2, "t2f": 3}
    for case, names, sep, seg in (
        ("BraTS20_Training_001", old, "_", True),
        ("BraTS-GLI-00007-000", new, "-", True),
        ("BraTS-GLI-00007-001", new, "-", True),
        ("BraTS-GLI-00009-000", new, "-", False),
    ):
        for name, channel in names.items():
            write(root / case / f"{case}{sep}{name}.nii.gz", image_array(channel, 10.0 * channel))
        if seg:
            write(root / case / f"{case}{sep}seg.nii.gz", label_array())


def test_brats_layout_old_and_2023_names(tmp_path):
    make_brats(tmp_path)
    index = load_dataset(tmp_path)
    assert index.layout == "brats"
    assert index.modalities == ["T1", "T1ce", "T2", "FLAIR"]
    by_id = {c["id"]: c for c in index.cases}
    assert set(by_id) == {"BraTS20_Training_001", "BraTS-GLI-00007-000", "BraTS-GLI-00007-001", "BraTS-GLI-00009-000"}
    assert by_id["BraTS20_Training_001"]["images"][1].endswith("_t1ce.nii.gz")
    assert by_id["BraTS-GLI-00007-000"]["images"][3].endswith("-t2f.nii.gz")
    assert by_id["BraTS-GLI-00009-000"]["label"] is None
    # BraTS 2023: two timepoints of subject 00007 are one patient.
    assert by_id["BraTS-GLI-00007-000"]["patient"] == by_id["BraTS-GLI-00007-001"]["patient"] == "BraTS-GLI-00007"
    assert by_id["BraTS20_Training_001"]["patient"] == "BraTS20_Training_001"
    loaded = LoadCased()(by_id["BraTS-GLI-00007-000"])
    for c in range(4):  # channel order T1, T1ce, T2, FLAIR whatever the naming scheme
        np.testing.assert_allclose(loaded["image"][c], image_array(c, 10.0 * c))


def test_brats_regions_hand_checked():
    label = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    wt, tc, et = brats_regions(label)
    np.testing.assert_array_equal(wt, [[0, 1, 1, 1]])
    np.testing.assert_array_equal(tc, [[0, 1, 0, 1]])
    np.testing.assert_array_equal(et, [[0, 0, 0, 1]])
    regions = brats_regions(np.array([0, 4, 2], dtype=np.int16)[None, None, None])  # 2018-2021: ET = 4
    assert regions.shape == (3, 1, 1, 3) and regions.dtype == np.uint8
    np.testing.assert_array_equal(regions[:, 0, 0], [[0, 1, 1], [0, 1, 0], [0, 1, 0]])
    as_dict = BraTSRegionsd("label")({"label": torch.from_numpy(label[None, None])})
    assert as_dict["label"].shape == (3, 1, 1, 4) and isinstance(as_dict["label"], torch.Tensor)


def make_folder(root, multimodal, cases=("p1_a", "p1_b", "p2_a")):
    for n, case in enumerate(cases):
        if multimodal:
            for c in range(2):
                write(root / "images" / f"{case}_{c:04d}.nii.gz", image_array(n, 10.0 * c))
        else:
            write(root / "images" / f"{case}.nii.gz", image_array(n))
        write(root / "labels" / f"{case}.nii.gz", label_array())


def test_folder_layout_multimodal_and_patients_csv(tmp_path):
    make_folder(tmp_path, multimodal=True)
    (tmp_path / "patients.csv").write_text("case_id,patient_id\np1_a,P1\np1_b,P1\n")
    index = load_dataset(tmp_path)
    assert index.layout == "folder" and index.modalities == ["channel0", "channel1"]
    by_id = {c["id"]: c for c in index.cases}
    assert set(by_id) == {"p1_a", "p1_b", "p2_a"}
    assert [p.split("/")[-1] for p in by_id["p1_b"]["images"]] == ["p1_b_0000.nii.gz", "p1_b_0001.nii.gz"]
    assert by_id["p1_a"]["patient"] == by_id["p1_b"]["patient"] == "P1"
    assert by_id["p2_a"]["patient"] == "p2_a"  # not in the CSV: the stem
    assert LoadCased()(by_id["p1_b"])["image"].shape == (2, *SHAPE)


def test_folder_single_modality_and_lr_only(tmp_path):
    make_folder(tmp_path / "plain", multimodal=False)
    index = load_dataset(tmp_path / "plain")
    assert index.modalities == ["image"] and all(not c["lr_only"] for c in index.cases)
    assert index.cases[0]["images"][0].endswith("images/p1_a.nii.gz")
    lr = load_dataset(tmp_path / "plain", layout="lr_only")
    assert lr.layout == "lr_only" and all(c["lr_only"] for c in lr.cases)
    (tmp_path / "plain" / "dataset.json").write_text(json.dumps({"lr_only": True, "labels": {"background": 0}}))
    auto = load_dataset(tmp_path / "plain")
    assert auto.layout == "lr_only" and auto.label_names == {0: "background"}


def test_layout_errors_name_the_file(tmp_path):
    make_folder(tmp_path, multimodal=False)
    write(tmp_path / "labels" / "orphan.nii.gz", label_array())
    with pytest.raises(InputError, match="orphan.nii.gz"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="cannot detect"):
        load_dataset(tmp_path / "images")


# --------------------------------------------------------------------------- splits


def split_cases():
    cases = [{"id": f"c{p}_{k}", "patient": f"P{p}"} for p in range(10) for k in range(1 + p % 3)]
    return cases


def test_splits_are_patient_level_deterministic_and_7_1_2():
    cases = split_cases()
    splits = make_splits(cases, seed=3)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [7, 1, 2]
    check_splits(splits)
    subsets = {s: {c["patient"] for c in select_cases(cases, splits, s)} for s in splits}
    assert not (subsets["train"] & subsets["validation"] or subsets["train"] & subsets["test"])
    assert sum(len(select_cases(cases, splits, s)) for s in splits) == len(cases)
    for patient in {c["patient"] for c in cases}:  # all cases of a patient land in one subset
        homes = {s for s in splits if patient in splits[s]}
        assert len(homes) == 1
        assert len(splits[homes.pop()][patient]) == sum(c["patient"] == patient for c in cases)
    assert make_splits(list(reversed(cases)), seed=3) == splits
    assert any(make_splits(cases, seed=s) != splits for s in range(4, 8))


def test_splits_save_load_and_overlap_check(tmp_path):
    splits = make_splits(split_cases(), seed=0)
    path = save_splits(splits, tmp_path / "splits.json")
    assert load_splits(path) == splits
    bad = {"train": {"P1": ["a"]}, "validation": {}, "test": {"P1": ["b"]}}
    with pytest.raises(ValueError, match="P1"):
        check_splits(bad)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="bad.json"):
        load_splits(tmp_path / "bad.json")


# --------------------------------------------------------------------------- pairs


def hr_sample(n_slices=18, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random((1, 8, 6, n_slices)).astype(np.float32)
    label = (rng.random((1, 8, 6, n_slices)) > 0.5).astype(np.uint8)
    return {"id": "case", "image": image, "label": label, "spacing": np.array([1.0, 1.0, 1.0])}


def test_pairs_match_library_protocols():
    data = hr_sample()
    volume = Volume(data["image"], (1, 1, 1), (0, 0, 0))
    sr = MakeLRHRPaird("sr", 4, axis=2)(data)
    np.testing.assert_array_equal(sr["lr_image"].numpy(), simulate_thick_slices(volume, 4, 2).array)
    np.testing.assert_array_equal(sr["hr_image"].numpy(), data["image"][..., :16])  # subdivided grid
    assert sr["hr_label"].shape == (1, 8, 6, 16) and sr["lr_label"].shape == (1, 8, 6, 4)
    assert "image" not in sr and sr["axis"] == 2
    interp = MakeLRHRPaird("interp", 4, axis=2)(data)
    np.testing.assert_array_equal(interp["lr_image"].numpy(), simulate_slice_gaps(volume, 4, 2).array)
    np.testing.assert_array_equal(interp["hr_image"].numpy(), data["image"][..., :17])  # (5 - 1) * 4 + 1
    np.testing.assert_array_equal(interp["lr_label"].numpy(), data["label"][..., ::4])
    inplane = MakeLRHRPaird("inplane", 2, axis=2, inplane_noise_std=0.0)(data)
    expected = simulate_inplane_bicubic(volume, 2, 2, noise_std=0.0).array
    np.testing.assert_array_equal(inplane["lr_image"].numpy(), expected)
    assert inplane["hr_image"].shape == (1, 8, 6, 18)


def test_lr_label_is_block_majority_hand_checked():
    label = np.array([0, 1, 1, 1, 2, 2, 0, 2, 1, 1, 0, 0], dtype=np.uint8).reshape(1, 1, 1, 12)
    data = {"image": np.zeros((1, 1, 1, 12), np.float32) + np.arange(12), "label": label}
    out = MakeLRHRPaird("sr", 4, axis=2)(data)
    np.testing.assert_array_equal(out["lr_label"].numpy().ravel(), [1, 2, 0])
    out = MakeLRHRPaird("sr", 2, axis=2)(data)
    np.testing.assert_array_equal(out["lr_label"].numpy().ravel(), [0, 1, 2, 0, 1, 0])  # tie -> lower


def test_axis_from_spacing_and_lr_only_guard():
    data = hr_sample()
    data["spacing"] = np.array([1.0, 3.0, 1.0])
    assert MakeLRHRPaird("interp", 2)(data)["axis"] == 1
    data["spacing"] = np.array([1.0, 1.0, 1.0])
    with pytest.raises(InputError, match="case: cannot detect the through-plane axis"):
        MakeLRHRPaird("sr", 2)(data)
    lr_case = {**hr_sample(), "lr_only": True, "spacing": np.array([1.0, 1.0, 4.0])}
    with pytest.raises(InputError, match="LR-only"):
        MakeLRHRPaird("sr", 2)(lr_case)
    ss = SelfSupervisedPaird("sr", 2)
    ss.set_random_state(0)
    out = ss(lr_case)
    assert out["axis"] in (0, 1) and "hr_image" not in out and "hr_label" not in out
    assert out["target_image"].shape[out["axis"] + 1] == out["lr_image"].shape[out["axis"] + 1] * 2
    with pytest.raises(InputError, match="slice axis"):
        SelfSupervisedPaird("sr", 2, degrade_axis=2)(lr_case)


@pytest.mark.parametrize("protocol", ["sr", "interp"])
def test_aligned_crop_keeps_lr_and_hr_patches_aligned(protocol):
    factor, data = 2, hr_sample(n_slices=16)
    whole = MakeLRHRPaird(protocol, factor, axis=2, keep_source=True)(data)
    crop = RandAlignedCropd(["image"], (6, 4, 8), factor, protocol, axis=2, lr_keys=["lr_image"])
    starts = set()
    for seed in range(6):
        crop.set_random_state(seed)
        out = crop(whole)
        start = out["crop_start"]
        starts.add(int(start[2]))
        assert start[2] % factor == 0
        np.testing.assert_array_equal(
            out["image"], data["image"][:, start[0] : start[0] + 6, start[1] : start[1] + 4, start[2] : start[2] + 8]
        )
        patch_lr = MakeLRHRPaird(protocol, factor, axis=2)({"image": out["image"]})["lr_image"].numpy()
        if protocol == "interp":  # LR of the patch is the patch of the LR, exactly
            np.testing.assert_array_equal(out["lr_image"].numpy(), patch_lr)
        else:  # sr: the same away from the patch border, where the slice profile is not truncated
            np.testing.assert_allclose(out["lr_image"].numpy()[..., 1:-1], patch_lr[..., 1:-1], atol=1e-6)
    assert len(starts) > 1


# --------------------------------------------------------------------------- augmentation


def tissue_map():
    label = np.zeros((1, 10, 10, 6), np.uint8)
    label[:, 2:8, 2:8] = 1
    label[:, 4:6, 4:6] = 2
    return label


def test_synthesis_piecewise_constant_and_seed_dependent():
    label = tissue_map()
    synth = SynthesizeImageFromLabels(std_range=(0.0, 0.0), blur_sigma_range=None, bias_field_prob=0.0,
                                      noise_std=0.0, normalize=False)
    synth.set_random_state(1)
    image = synth({"label": label})["image"].numpy()
    for v in (0, 1, 2):
        np.testing.assert_allclose(image[label == v], synth.means[v], rtol=0, atol=1e-6)
    assert len({round(m, 6) for m in synth.means.values()}) == 3
    first = dict(synth.means)
    synth.set_random_state(2)
    synth({"label": label})
    assert synth.means != first
    # Partial-volume mixing: half GM / half WM gives the mean of the two intensities.
    probs = np.zeros((3, 10, 10, 6), np.float32)
    probs[1], probs[2] = 0.5, 0.5
    mixed = SynthesizeImageFromLabels(prob_key="probs", std_range=(0.0, 0.0), blur_sigma_range=None,
                                      bias_field_prob=0.0, noise_std=0.0, normalize=False)
    out = mixed({"label": label, "probs": probs})["image"].numpy()
    np.testing.assert_allclose(out, 0.5 * (mixed.means[1] + mixed.means[2]), atol=1e-6)


def test_synthesis_bias_field_keeps_the_tissue_contrast_readable():
    """With the default cap (0.1) a biased synthetic image keeps most of its GM/WM contrast after min-max
    normalisation (median gap 0.36; 0.47 without a field); the old 0.3, a field varying ~18x across a
    patch, left a third of it (0.16)."""
    label = np.zeros((1, 48, 48, 16), np.uint8)
    label[:, 8:40, 8:24] = 1
    label[:, 8:40, 24:40] = 2

    def squeezed(coeff):
        gaps = []
        for seed in range(12):
            synth = SynthesizeImageFromLabels(background_zero=True, min_contrast=0.3, std_range=(0.0, 0.0),
                                              blur_sigma_range=None, bias_field_prob=1.0, noise_std=0.0,
                                              bias_coeff_range=(0.0, coeff))
            synth.set_random_state(seed)
            image = synth({"label": label})["image"].numpy()
            gaps.append(abs(np.median(image[label == 1]) - np.median(image[label == 2])))
        return float(np.median(gaps))

    assert squeezed(0.1) > 0.3 > 0.2 > squeezed(0.3)
    assert SynthesizeImageFromLabels()._bias.coeff_range == (0.0, 0.1)


def test_synthesis_min_contrast_redraws_degenerate_contrasts():
    label = tissue_map()
    gaps = []
    for seed in range(40):
        synth = SynthesizeImageFromLabels(background_zero=True, min_contrast=0.15)
        synth.set_random_state(seed)
        synth({"label": label})
        drawn = sorted(synth.means.values())
        assert synth.means[0] == 0.0
        gaps.append(min(b - a for a, b in zip(drawn, drawn[1:])))
    assert min(gaps) >= 0.15
    # without the constraint the same seeds do give near-equal tissues (the reason for the option)
    plain = []
    for seed in range(40):
        synth = SynthesizeImageFromLabels(background_zero=True)
        synth.set_random_state(seed)
        synth({"label": label})
        drawn = sorted(synth.means.values())
        plain.append(min(b - a for a, b in zip(drawn, drawn[1:])))
    assert min(plain) < 0.15


def test_synthesis_full_chain_and_inversion():
    label = tissue_map()
    synth = SynthesizeImageFromLabels(invert_prob=1.0, std_range=(0.0, 0.0), blur_sigma_range=None,
                                      bias_field_prob=0.0, noise_std=0.0)
    synth.set_random_state(5)
    image = synth({"label": label})["image"].numpy()
    brightest = max(synth.means, key=synth.means.get)
    assert np.allclose(image[label == brightest], 0.0)  # normalised to [0, 1], then inverted
    full = SynthesizeImageFromLabels(bias_field_prob=1.0, blur_sigma_range=(0.5, 1.0))
    full.set_random_state(0)
    out = full({"label": label})["image"]
    assert out.shape == label.shape and torch.isfinite(out).all()


def test_hr_augmentations_keep_labels_and_shapes():
    aug = hr_augmentations(flip_prob=1.0, affine_prob=1.0, noise_prob=1.0, bias_prob=1.0, gamma_prob=1.0)
    aug.set_random_state(0)
    data = {"image": np.random.default_rng(0).random((1, 10, 10, 6)).astype(np.float32), "label": tissue_map()}
    out = aug(data)
    assert out["image"].shape == (1, 10, 10, 6) and out["label"].shape == (1, 10, 10, 6)
    assert set(np.unique(np.asarray(out["label"]))) <= {0, 1, 2}
    pair = MakeLRHRPaird("sr", 2, axis=2)(out)  # MONAI returns float MetaTensor labels
    assert pair["lr_label"].dtype == torch.int64 and pair["lr_image"].shape == (1, 10, 10, 3)


# --------------------------------------------------------------------------- loading


def test_build_dataset_runs_the_pipeline(tmp_path):
    make_folder(tmp_path / "d", multimodal=False)
    cases = load_dataset(tmp_path / "d").cases
    pipeline = [RandAlignedCropd(["image", "label"], (8, 8, 4), 2, "sr"), MakeLRHRPaird("sr", 2)]
    for dataset in (build_dataset(cases, pipeline), build_dataset(cases, pipeline, cache_dir=tmp_path / "cache")):
        item = dataset[0]
        assert item["lr_image"].shape == (1, 8, 8, 2) and item["hr_image"].shape == (1, 8, 8, 4)
        assert item["hr_label"].shape == (1, 8, 8, 4) and item["lr_label"].shape == (1, 8, 8, 2)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["lr_image"].shape == (2, 1, 8, 8, 2)


def test_probability_maps_load_scaled_with_background_first(tmp_path):
    """uint8 maps are 255 p, float maps p; channel 0 is 1 - sum; a bad map is named with its problem."""
    label = label_array()
    gm = np.where(label == 1, 204, np.where(label == 2, 51, 0)).astype(np.uint8)  # 0.8 / 0.2
    wm = (label == 2).astype(np.float32) * 0.8
    case = {"id": "c", "images": [str(write(tmp_path / "img.nii.gz", image_array()))],
            "label": str(write(tmp_path / "lab.nii.gz", label)),
            "probs": [str(write(tmp_path / "gm.nii.gz", gm)), str(write(tmp_path / "wm.nii.gz", wm))]}
    item = LoadCased()(case)
    probs = item["probs"].numpy()
    assert probs.shape == (3, *SHAPE) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[1][label == 1], 0.8, atol=1e-6)
    np.testing.assert_allclose(probs[1][label == 2], 0.2, atol=1e-6)
    np.testing.assert_allclose(probs[2][label == 2], 0.8, atol=1e-6)
    np.testing.assert_allclose(probs[0][label == 1], 0.2, atol=1e-6)
    np.testing.assert_allclose(probs[0][label == 0], 1.0, atol=1e-6)
    assert "probs" not in LoadCased()({k: v for k, v in case.items() if k != "probs"})
    write(tmp_path / "bad.nii.gz", wm * 3)
    with pytest.raises(InputError, match=r"bad\.nii\.gz.*outside \[0, 1\]"):
        LoadCased()({**case, "probs": [case["probs"][0], str(tmp_path / "bad.nii.gz")]})
    write(tmp_path / "shifted.nii.gz", wm, origin=(5.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"shifted\.nii\.gz.*grid differs"):
        LoadCased()({**case, "probs": [case["probs"][0], str(tmp_path / "shifted.nii.gz")]})


def test_partial_volume_synthesis_on_the_sample_blends_tissues(tmp_path):
    """Sample-mode training patches drawn from the GM/WM probabilities: at tissue borders the image takes
    intermediate values that hard-label synthesis never gives, and the probabilities stay on the labels."""
    from monai.transforms import Compose

    from training.config import resolve
    from training.engine.data import EpochSamples, cached_cases, prepare_cases
    from training.tasks import adapter_class

    common = [f"run.out_dir={tmp_path}", "augment.synthesis_prob=1.0", "augment.enabled=false"]
    config = "training/configs/rehrseg_brain_small.yaml"
    distinct = {}
    for partial_volume in (True, False):
        cfg = resolve(config, [*common, f"augment.synthesis_partial_volume={str(partial_volume).lower()}"])
        cases, info = prepare_cases(cfg, tmp_path)
        assert bool(cases[0].get("probs")) == partial_volume
        adapter = adapter_class("rehrseg_sr")(cfg, info, torch.device("cpu"))
        transforms = adapter.patch_transforms([32, 32, 32])
        synth = next(t for t in transforms if type(t).__name__ == "RandSynthesisd").synthesizer
        synth.noise_std, synth.std_range, synth.blur_sigma_range, synth.bias_field_prob = 0.0, (0.0, 0.0), None, 0.0
        synth.normalize = False
        samples = EpochSamples(cached_cases(cfg, cases, info, tmp_path, "train"), Compose(transforms), 0, 4)
        counts = []
        for index in range(4):
            item = samples[(0, index)]
            image, label = item["hr_image"][0].numpy(), item["hr_label"][0].numpy()
            if label.max() == 0:
                continue
            means = np.array([synth.means[v] for v in range(3)])
            counts.append(int((np.abs(image[..., None] - means).min(-1) > 1e-3).sum()))
            if partial_volume:
                probs = item["probs"].numpy()
                assert probs.shape == (3, 32, 32, 32) and np.mean(probs.argmax(0) == label) > 0.95
                np.testing.assert_allclose(image, np.tensordot(means, probs, axes=1), atol=1e-5)
        distinct[partial_volume] = sum(counts)
    assert distinct[False] == 0 and distinct[True] > 1000  # hard labels: only the three drawn means
    cfg = resolve(config, [*common, "augment.synthesis_partial_volume=true", f"data.root={tmp_path}"])
    with pytest.raises(InputError, match="probability maps"):
        prepare_cases(cfg, tmp_path)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_nifti_is_reported_by_file_name(tmp_path, suffix):
    make_folder(tmp_path, multimodal=False)
    bad = write(tmp_path / "images" / f"p2_a{suffix}", image_array(5))
    (tmp_path / "images" / "p2_a.nii.gz").unlink() if suffix == ".nii" else None
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    cases = load_dataset(tmp_path).cases
    with pytest.raises(InputError, match=f"p2_a{suffix.replace('.', '[.]')}") as info:
        build_dataset(cases)
    assert str(info.value).startswith(str(bad))
    with pytest.raises(InputError, match="p2_a"):  # on-disk cache: checked while warming it
        build_dataset(cases, cache_dir=tmp_path / "cache")
    lazy = build_dataset(cases, cache_dir=tmp_path / "cache", warm_cache=False)
    with pytest.raises(InputError, match="p2_a"):  # or on first access
        lazy[[c["id"] for c in cases].index("p2_a")]


def test_nan_image_is_reported_by_file_name(tmp_path):
    make_folder(tmp_path, multimodal=True, cases=("p1",))
    nan = image_array(1)
    nan[1, 2, 3] = np.nan
    write(tmp_path / "images" / "p1_0001.nii.gz", nan)
    with pytest.raises(InputError, match=r"p1_0001\.nii\.gz: 1 voxel\(s\) are NaN"):
        build_dataset(load_dataset(tmp_path).cases)


def test_corrupt_4d_msd_case_is_reported_by_file_name(tmp_path):
    make_msd(tmp_path, 4)
    nan = np.stack([image_array(0, 10.0 * c) for c in range(4)])
    nan[2, 1, 1, 1] = np.nan  # ITK alone would read this voxel as 0
    write(tmp_path / "imagesTr" / "case_001.nii.gz", nan)
    cases = load_dataset(tmp_path).cases
    with pytest.raises(InputError, match=r"case_001\.nii\.gz: 1 voxel\(s\) are NaN"):
        LoadCased()(cases[0])
    bad = tmp_path / "imagesTr" / "case_003.nii.gz"
    bad.write_bytes(bad.read_bytes()[:-200])
    with pytest.raises(InputError, match=r"case_003\.nii\.gz: file is truncated or corrupt"):
        build_dataset(cases[1:])
