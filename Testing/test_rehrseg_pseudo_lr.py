"""REHRSeg's self-SR data: Eq. 1 pseudo LR scans (Sec. 3.3) and the isotropic pre-interpolation (Sec. 3.2)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.volume import Volume
from training.data import degrade_array
from training.data.pseudo_lr import (
    IsotropicInterpolated,
    pseudo_lr_batch,
    pseudo_lr_pair,
    pseudo_lr_uncertainty,
    shift_lr_grid,
)

R = 4


def sr_case(z_lr: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random((1, 3, 4, z_lr * R)).astype(np.float32)
    label = rng.integers(0, 3, (1, 3, 4, z_lr * R))
    return image, label


def gaussian_slab(stack: np.ndarray, centre: float) -> np.ndarray:
    """Thick slice at HR position ``centre`` written out: Gaussian FWHM R, truncated at 4 sigma, renormalised."""
    sigma = R / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    j = np.arange(stack.shape[-1], dtype=float)
    w = np.exp(-0.5 * ((j - centre) / sigma) ** 2) * (np.abs(j - centre) <= 4 * sigma)
    return (stack.astype(np.float64) @ (w / w.sum())).astype(np.float32)


def test_offset_k_slice_i_is_the_protocol_thick_slice_of_sr_slices_from_k():
    """Eq. 1 at starting index k: pseudo LR slice i covers SR slices k + iR ... k + iR + R - 1."""
    image, label = sr_case()
    scans = []
    for k in range(R):
        lr, lr_label, hr_label = pseudo_lr_pair(image, label, R, 2, k)
        n = 5 if k == 0 else 4  # whole slabs left after dropping k slices
        assert lr.shape == (1, 3, 4, n) and lr_label.shape == (1, 3, 4, n) and hr_label.shape == (1, 3, 4, n * R)
        shifted = image[..., k : k + n * R]
        expected = simulate_thick_slices(Volume(shifted, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), R, 2).array
        np.testing.assert_allclose(lr, expected, atol=1e-6)
        # Interior slice written out by hand: Gaussian centred at k + iR + (R-1)/2 of the SR stack.
        np.testing.assert_allclose(lr[..., 2], gaussian_slab(shifted, 2 * R + (R - 1) / 2), atol=1e-5)
        # Labels: HR target = SR label from k; LR label = majority of each slab (ties to the lower value).
        np.testing.assert_array_equal(hr_label, label[..., k : k + n * R])
        for i in range(n):
            for x, y in np.ndindex(3, 4):
                counts = Counter(label[0, x, y, k + i * R : k + (i + 1) * R].tolist())
                top = max(counts.values())
                assert lr_label[0, x, y, i] == min(v for v, c in counts.items() if c == top)
        scans.append(lr)
    # R distinct pseudo LR scans per LR scan (the paper's "r x the amount of LR data").
    assert len(scans) == R
    assert all(not np.allclose(scans[a][..., :4], scans[b][..., :4]) for a in range(R) for b in range(a + 1, R))
    # Offset 0 of an HR stack is exactly the protocol's real LR scan.
    np.testing.assert_array_equal(scans[0], degrade_array(image, "sr", R, 2))
    with pytest.raises(ValueError, match="offset"):
        pseudo_lr_pair(image, label, R, 2, R)


def test_batch_uncertainty_and_features_follow_the_pseudo_grid():
    """U's decimation and the teacher features move with the pseudo grid (k/R of an LR slice)."""
    image, label = sr_case()
    batch = pseudo_lr_batch(torch.from_numpy(np.stack([image, image[:, ::-1].copy()])),
                            torch.from_numpy(np.stack([label, label])), R, 2, 3)
    assert batch["lr_image"].shape == (2, 1, 3, 4, 4) and batch["hr_label"].dtype == torch.long
    np.testing.assert_allclose(batch["lr_image"][0].numpy(), pseudo_lr_pair(image, label, R, 2, 3)[0], atol=1e-6)
    z_hr = torch.arange(5 * R, dtype=torch.float32).view(1, 1, 1, 1, -1).expand(1, 1, 2, 2, -1)
    for k in range(R):
        u = pseudo_lr_uncertainty(z_hr, R, 2, k)[0, 0, 0, 0]
        n = 5 if k == 0 else 4
        torch.testing.assert_close(u, torch.arange(n, dtype=torch.float32) * R + k + R // 2)
        z_lr = torch.arange(5, dtype=torch.float32).view(1, 1, 1, 1, -1) * 3.0 + 1.0  # linear along z
        f = shift_lr_grid(z_lr, R, 2, k)[0, 0, 0, 0]
        torch.testing.assert_close(f, (torch.arange(n, dtype=torch.float32) + k / R) * 3.0 + 1.0)


def test_isotropic_interpolation_lands_on_the_subdivided_grid():
    """Sec. 3.2 step 1: B-spline image / nearest label along the slice axis, HR slice j at LR (j - (R-1)/2) / R."""
    z = np.arange(20, dtype=np.float32)
    image = np.broadcast_to(2.0 * z + 0.5, (1, 3, 4, 20)).copy()
    label = np.broadcast_to((z.astype(np.int64) % 3), (1, 3, 4, 20)).copy()
    out = IsotropicInterpolated(R, slice_axis=2)({"image": torch.from_numpy(image), "label": torch.from_numpy(label)})
    assert out["image"].shape == (1, 3, 4, 20 * R) and out["label"].dtype == torch.int64
    position = (np.arange(20 * R) - (R - 1) / 2) / R
    interior = (position >= 6) & (position <= 13)  # the mirrored ends bend the ramp within a few slices
    np.testing.assert_allclose(out["image"][0, 1, 2].numpy()[interior], (2.0 * position + 0.5)[interior], atol=1e-4)
    np.testing.assert_array_equal(out["label"][0, 1, 2].numpy(), np.repeat(z.astype(np.int64) % 3, R))


def adapter(tmp_path, *overrides):
    from training.config import resolve
    from training.tasks import adapter_class

    cfg = resolve("training/configs/rehrseg_tiny.yaml", [f"run.out_dir={tmp_path}", *overrides])
    info = SimpleNamespace(num_classes=3, in_channels=1)
    return adapter_class("rehrseg_sr")(cfg, info, torch.device("cpu"))


def test_segmenter_reads_real_and_pseudo_lr_with_aligned_targets(tmp_path):
    """``loss.pseudo_lr``: R + 1 variants (real, k = 0..R-1), seeded per step; labels, U, F^sr on the input's grid."""
    task = adapter(tmp_path, "loss.pseudo_lr=true")
    task.start_stage("segmentation", {"steps": 4, "loss": {"objective": "segmentation"}})
    torch.manual_seed(0)
    lr = torch.rand(1, 1, 32, 32, 8)
    lr_label = torch.randint(0, 3, (1, 1, 32, 32, 8))
    with torch.no_grad():
        teacher = task.modules["sr"].eval()(lr * 2 - 1, lr_label)
    variants = {task.segmenter_variant(step) for step in range(60)}
    assert variants == set(range(-1, R)) and task.segmenter_variant(7) == task.segmenter_variant(7)
    for step in range(60):
        data = task.segmenter_batch({"lr_image": lr, "lr_label": lr_label}, teacher, step)
        k, n = data["variant"], 8 if data["variant"] <= 0 else 7
        assert data["lr_image"].shape[-1] == data["lr_label"].shape[-1] == n
        assert data["hr_label"].shape[-1] == n * R and data["uncertainty"].shape[-1] == data["features"].shape[-1] == n
        pseudo_hr = teacher["seg"].argmax(1, keepdim=True)
        if k < 0:
            assert data["lr_image"] is lr and data["lr_label"] is lr_label
        else:
            sr = ((teacher["sr"] + 1) / 2)[0].numpy()
            expected = pseudo_lr_pair(sr, pseudo_hr[0].numpy(), R, 2, k)
            np.testing.assert_allclose(data["lr_image"][0].numpy(), expected[0], atol=1e-6)
            np.testing.assert_array_equal(data["lr_label"][0].numpy(), expected[1])
        np.testing.assert_array_equal(data["hr_label"].numpy(), pseudo_hr[..., max(k, 0) : max(k, 0) + n * R].numpy())
        outputs = task.modules["seg"](data["lr_image"])
        parts = task.modules["seg_criterion"](outputs, data["lr_label"], data["hr_label"], data["uncertainty"],
                                              data["features"])
        assert torch.isfinite(parts["loss"])
        if len(variants := variants - {k}) == 0:
            break
    off = adapter(tmp_path, "loss.pseudo_lr=false")
    assert {off.segmenter_variant(step) for step in range(20)} == {-1}


@pytest.mark.parametrize("isotropic", [True, False])
def test_self_sr_pairs_come_from_the_isotropic_patch(tmp_path, isotropic):
    """``loss.isotropic``: the self-SR target is the LR patch interpolated x R along the slice axis (nearest labels
    repeat every R slices); without it the target keeps the LR slices."""
    from monai.transforms import Compose

    task = adapter(tmp_path, f"loss.isotropic={str(isotropic).lower()}", "augment.enabled=false")
    task.start_stage("self_sr", {"steps": 4, "loss": {"objective": "self_sr"}})
    rng = np.random.default_rng(1)
    case = {"id": "c", "spacing": np.ones(3), "image": torch.from_numpy(rng.random((1, 32, 32, 32), np.float32)),
            "label": torch.from_numpy(rng.integers(0, 3, (1, 32, 32, 32)))}
    out = Compose(task.train_transforms("self_sr"))(case)
    z = 32 if isotropic else 8  # the slice axis (tensor dim 2 once the degraded axis is last)
    assert out["target_image"].shape == (1, 32, z, 32) and out["lr_image"].shape == (1, 32, z, 8)
    label = out["target_label"].numpy()
    lr_label = out["lr_label"].numpy()
    if isotropic:
        blocks = label.reshape(1, 32, 8, R, 32)
        assert (blocks == blocks[:, :, :, :1]).all()  # nearest-neighbour labels: R equal slices per LR slice
    assert lr_label.shape == (1, 32, z, 8)
