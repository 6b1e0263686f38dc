"""Realistic training data (training/data/realistic.py): held-out subjects, RAS reorientation,
crop-first label-map synthesis with random voxel-axis orientation, label-less T1 patches.

Synthetic label maps stand in for the FreeSurfer maps (fast); the real-data checks are skipped
when ``/work/shared/data`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import orientation_code
from JointSRSegLib.io import write_volume
from JointSRSegLib.tissue_classes import tissue_classes
from JointSRSegLib.volume import Volume
from training.config import resolve
from training.data import load_dataset, make_splits
from training.data.loading import LoadCased
from training.data.realistic import (
    RealisticPatchd,
    RealisticValidationd,
    apply_axes,
    crop_padded,
    draw_contrast,
    parse_realistic_root,
    reorient_to_ras,
    synthesize_image,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "swinsr_unetr_brain_realistic.yaml"
SHARED = Path("/work/shared/data")
LABELS_DIR = SHARED / "synthseg_labels"
PATCH = [24, 24, 24]
# LPS direction columns of FreeSurfer's conformed space: axis 0 towards L, 1 towards I, 2 towards A.
LIA = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]])


def fake_head(shape=(48, 44, 40)) -> np.ndarray:
    """Nested ellipsoids with FreeSurfer labels: skull (502) > CSF (24) > cortex (3/42) > WM (2/41),
    ventricle (4) and thalamus (10) inside; background 0 around."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    right = grid[0] > 0
    label = np.zeros(shape, np.int16)
    label[r < 0.95] = 502
    label[r < 0.85] = 24
    label[r < 0.78] = np.where(right, 42, 3)[r < 0.78]
    label[r < 0.6] = np.where(right, 41, 2)[r < 0.6]
    label[r < 0.25] = 4
    label[(np.abs(grid[0] - 0.35) < 0.1) & (r < 0.5)] = 10
    return label


def labelmap_item(label: np.ndarray) -> dict:
    return {"id": "synthseg_01", "kind": "labelmap", "label": torch.from_numpy(label[None].copy()),
            "spacing": torch.ones(3)}


# --------------------------------------------------------------------------- subjects


@pytest.mark.parametrize("root", [
    "synthseg:/x?train=1-17", "synthseg:/x?train=1-16,19", "synthseg:/x?train=20",
    "synthseg:/x?validation=19-20", "synthseg:/x?t1=/y&t1_train=1-21", "synthseg:/x?t1=/y&t1_validation=22",
    "synthseg:/x?train=1-16&validation=16-18", "synthseg:/x?bogus=1",
])
def test_held_out_subjects_are_refused(root):
    with pytest.raises(ValueError):
        parse_realistic_root(root)


def test_default_subjects_and_fixed_split(tmp_path):
    spec = parse_realistic_root(f"synthseg:{tmp_path}")
    assert spec.train == list(range(1, 17)) and spec.validation == [17, 18] and spec.t1_dir is None
    with pytest.raises(InputError, match="held out"):
        load_dataset(f"synthseg:{tmp_path}?train=1-18")
    cases = [{"id": f"c{i}", "patient": f"p{i}", "subset": "train" if i < 3 else "validation"} for i in range(4)]
    splits = make_splits(cases, [1, 1, 1], seed=3)
    assert list(splits["train"]) == ["p0", "p1", "p2"] and list(splits["validation"]) == ["p3"]
    assert splits["test"] == {}


# --------------------------------------------------------------------------- orientation


def test_reorientation_to_ras_is_exact():
    rng = np.random.default_rng(0)
    # LIA voxel axes (FreeSurfer conformed) rotated by 10 degrees, odd spacing and origin.
    angle = np.radians(10)
    tilt = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = tilt @ LIA
    assert orientation_code(direction) == "LIA"
    spacing, origin = np.array([0.9, 1.1, 1.3]), np.array([10.0, -20.0, 30.0])
    array = np.arange(5 * 6 * 7, dtype=np.int32).reshape(1, 5, 6, 7)
    out, new_spacing, new_origin, new_dir = reorient_to_ras(array, spacing, origin, direction)
    assert orientation_code(new_dir) == "RAS"
    def position(index, o, d, s):
        return o + d @ (s * np.asarray(index, float))
    for _ in range(20):
        idx = [int(rng.integers(n)) for n in array.shape[1:]]
        value = array[(0, *idx)]
        new_idx = np.argwhere(out[0] == value)[0]
        np.testing.assert_allclose(position(new_idx, new_origin, new_dir, new_spacing),
                                   position(idx, origin, direction, spacing), atol=1e-9)


def test_load_case_reorients_label_map_to_ras(tmp_path):
    label = fake_head((12, 10, 8))
    direction = LIA
    assert orientation_code(direction) == "LIA"
    path = tmp_path / "training_seg_01.nii.gz"
    write_volume(Volume(label[None].astype(np.float32), (1.0, 1.0, 1.0), (5.0, 6.0, 7.0), direction), path)
    case = {"id": "synthseg_01", "images": [], "label": str(path), "kind": "labelmap", "reorient": "RAS"}
    out = LoadCased()(case)
    assert "image" not in out and out["label"].dtype == torch.int16
    assert orientation_code(out["direction"].numpy()) == "RAS"
    expected, *_ = reorient_to_ras(label[None], (1, 1, 1), (5, 6, 7), direction)
    np.testing.assert_array_equal(out["label"].numpy(), expected)


# --------------------------------------------------------------------------- synthesis


def test_skull_stripped_patch_is_zero_outside_the_brain_and_target_is_tissue_classes():
    label = fake_head()
    transform = RealisticPatchd(PATCH, orientation_prob=1.0, skull_strip_prob=1.0, affine_prob=1.0,
                                elastic_prob=1.0, background_prob=0.0, border_prob=0.3)
    for seed in range(6):
        transform.set_random_state(seed)
        out = transform(labelmap_item(label))
        image, target = out["image"].numpy(), out["label"].numpy()
        patch = transform.last["label_patch"]
        assert image.shape == target.shape == (1, *PATCH) and image.dtype == np.float32
        assert target.dtype == np.uint8 and set(np.unique(target)) <= {0, 1, 2}
        assert np.isfinite(image).all() and image.min() >= 0 and image.max() < 2
        assert transform.last["skull_stripped"] and transform.last["deformed"]
        outside = (patch == 0) | (patch >= 500)
        assert np.all(image[0][outside] == 0)
        np.testing.assert_array_equal(target[0], tissue_classes(patch))
        assert float(out["seg_weight"]) == 1.0


def test_whole_head_mode_gives_extra_cerebral_tissue_an_intensity():
    label = fake_head()
    transform = RealisticPatchd(PATCH, skull_strip_prob=0.0, affine_prob=0.0, elastic_prob=0.0,
                                background_prob=0.0, border_prob=1.0)
    seen = []
    for seed in range(8):
        transform.set_random_state(seed)
        out = transform(labelmap_item(label))
        patch = transform.last["label_patch"]
        if (patch == 502).any():
            seen.append(float(out["image"].numpy()[0][patch == 502].mean()))
    assert seen and max(seen) > 0.01


def test_plain_crop_with_permutation_keeps_image_and_target_aligned():
    label = fake_head()
    transform = RealisticPatchd(PATCH, orientation_prob=1.0, skull_strip_prob=1.0, affine_prob=0.0,
                                elastic_prob=0.0, background_prob=0.0, border_prob=0.0)
    orders = set()
    for seed in range(8):
        transform.set_random_state(seed)
        out = transform(labelmap_item(label))
        last = transform.last
        orders.add((tuple(last["order"]), tuple(last["flips"])))
        view = apply_axes(label, last["order"], last["flips"])
        start = np.floor(last["centre"] - (np.array(PATCH) - 1) / 2 + 0.5).astype(int)
        np.testing.assert_array_equal(last["label_patch"], crop_padded(view, start, PATCH))
        np.testing.assert_array_equal(out["label"].numpy()[0], tissue_classes(last["label_patch"]))
        # the image is drawn from that same patch: black exactly where the labels are background
        image = out["image"].numpy()[0]
        np.testing.assert_array_equal(image == 0, (last["label_patch"] == 0) | (last["label_patch"] >= 500))
    assert len(orders) > 3


def test_background_patches_occur_and_image_cases_have_no_segmentation_weight():
    label = fake_head()
    transform = RealisticPatchd(PATCH, background_prob=1.0, border_prob=0.0, skull_strip_prob=1.0)
    empty = 0
    for seed in range(10):
        transform.set_random_state(seed)
        empty += int(transform(labelmap_item(label))["label"].sum() == 0)
    assert empty >= 1
    image = np.random.default_rng(0).random((1, 40, 40, 40)).astype(np.float32)
    transform = RealisticPatchd(PATCH, affine_prob=1.0)
    transform.set_random_state(0)
    out = transform({"id": "t1w_01", "kind": "image", "image": torch.from_numpy(image)})
    assert out["image"].shape == (1, *PATCH) and float(out["seg_weight"]) == 0.0 and out["label"].sum() == 0


def test_contrasts_keep_grey_and_white_matter_apart():
    rng = np.random.RandomState(0)
    labels = [0, 2, 3, 4, 10, 24, 41, 42, 502]
    for sequence in ("T1", "T2", "FLAIR", "PD", "random", None):
        for _ in range(10):
            contrast = draw_contrast(labels, rng, sequence=sequence, min_contrast=0.1)
            assert abs(contrast.gm - contrast.wm) >= 0.1 * 0.85 - 1e-9
            assert contrast.means[0] == 0.0 and contrast.means[502] == 0.0  # skull-stripped by default
            assert contrast.means[2] == pytest.approx(contrast.means.get(41, contrast.means[2]))
    t1 = draw_contrast(labels, rng, sequence="T1")
    assert t1.means[24] < t1.means[3] < t1.means[2]
    t2 = draw_contrast(labels, rng, sequence="T2")
    assert t2.means[2] < t2.means[3] < t2.means[24]
    image = synthesize_image(fake_head(), rng, t1, skull_stripped=True)
    assert image.shape == fake_head().shape and image.min() >= 0


def test_validation_sample_is_deterministic():
    item = labelmap_item(fake_head())
    a = RealisticValidationd([32, 32, 32], seed=5)(dict(item))
    b = RealisticValidationd([32, 32, 32], seed=5)(dict(item))
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    assert a["image"].shape == (1, 32, 32, 32) and set(np.unique(a["label"].numpy())) <= {0, 1, 2}


# --------------------------------------------------------------------------- config and real data


def test_config_loads_and_names_training_subjects_1_to_16():
    cfg = resolve(CONFIG)
    assert cfg["data"]["root"].startswith("synthseg:") and cfg["export"]["version"] == "2.0.0"
    spec = parse_realistic_root(cfg["data"]["root"])
    assert spec.train == list(range(1, 17)) and spec.validation == [17, 18]
    assert spec.t1_train and max(spec.t1_train) <= 16


def test_real_dataset_split_never_trains_on_held_out_subjects():
    cfg = resolve(CONFIG)
    index = load_dataset(cfg["data"]["root"], cfg["data"]["layout"])
    splits = make_splits(index.cases)
    train = set(splits["train"])
    assert {f"synthseg_{i:02d}" for i in range(1, 17)} <= train
    assert not train & {f"synthseg_{i:02d}" for i in range(17, 21)}
    assert not any(p.startswith("ds002748_sub-") and int(p[-2:]) > 16 for p in train)
    assert set(splits["validation"]) == {"synthseg_17", "synthseg_18"}
    assert not {c["id"] for c in index.cases} & {"synthseg_19", "synthseg_20", "t1w_21", "t1w_22", "t1w_23", "t1w_24"}


def test_masked_loss_trains_only_the_sr_head_on_label_less_patches():
    from training.engine.data import DataInfo
    from training.tasks.joint3d import Joint3DAdapter

    cfg = resolve(ROOT / "training" / "configs" / "swinsr_unetr_tiny.yaml",
                  ["data.root=synthseg:/nowhere", "loss={aleatoric: true, nll_beta: 1.0}",
                   "data.patch_size=[32,32,32]"])
    info = DataInfo(["T1"], [0, 1, 2], {0: "background", 1: "GM", 2: "WM"}, {0: [0, 0, 0], 1: [1, 1, 1], 2: [2, 2, 2]},
                    {})
    torch.manual_seed(0)
    adapter = Joint3DAdapter(cfg, info, torch.device("cpu"))
    batch = {"lr_image": torch.rand(1, 1, 32, 32, 8), "hr_image": torch.rand(1, 1, 32, 32, 32),
             "hr_label": torch.zeros(1, 1, 32, 32, 32, dtype=torch.long), "seg_weight": torch.zeros(1)}
    loss, parts = adapter.training_loss(batch, "train", 0)
    assert "seg_dice" not in parts and np.isfinite(loss.item())
    loss.backward()
    weighting = adapter.modules["criterion"].weighting.log_vars
    assert weighting.grad is None or float(weighting.grad.abs().sum()) == 0.0
    batch["seg_weight"] = torch.ones(1)
    _, parts = adapter.training_loss(batch, "train", 0)
    assert "seg_dice" in parts
    meta = adapter.export_metadata()
    assert meta["inference"] == {"orientation": "RAS"}
