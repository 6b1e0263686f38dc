"""RDST / RDST-E (shared/papers/rdst.txt): shapes, gradients, losses, frozen U-Net, overfitting, sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from JointSRSegLib.losses.rdst import (
    RDSTLoss,
    SegmentationPerceptualLoss,
    hard_label_dice_loss,
    l1_distance,
)
from JointSRSegLib.models import ARCHITECTURES, build
from JointSRSegLib.models.rdst import RDST, pixel_shuffle_2d, upsampling_stages
from JointSRSegLib.models.rdst_unet import SegmentationUNet

NAMES = ("rdst", "rdst_e")
PAPER_PARAMS = {"rdst": 4.40e6, "rdst_e": 2.35e6}
TINY_UNET = (4, 4, 8, 8, 8, 4)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_entries():
    for name in NAMES:
        spec = ARCHITECTURES[name]
        assert spec.tasks == ("sr",) and spec.dims == 2 and spec.paper == "rdst.txt"
        assert set(spec.presets) == {"tiny", "small", "base"}
        assert spec.builder is RDST
    assert ARCHITECTURES["rdst"].presets["base"]["num_blocks"] == 8
    assert ARCHITECTURES["rdst_e"].presets["base"]["num_blocks"] == 4
    net = build("rdst_e", "tiny", scale=3)
    assert net.jointsrseg_config["config"]["scale"] == 3 and net.scale == (3, 3)


# ---------------------------------------------------------------- shapes on odd sizes, any scale


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("scale", "in_channels", "size", "expected"),
    [
        (2, 1, (9, 7), (18, 14)),
        (3, 1, (5, 11), (15, 33)),
        (4, 4, (7, 5), (28, 20)),
        ((1, 4), 1, (9, 5), (9, 20)),
        ((4, 1), 4, (5, 9), (20, 9)),
        ((1, 3), 1, (7, 3), (7, 9)),
        ((2, 3), 1, (3, 5), (6, 15)),
    ],
)
def test_tiny_output_shapes(name, scale, in_channels, size, expected):
    net = build(name, "tiny", scale=scale, in_channels=in_channels).eval()
    with torch.no_grad():
        out = net(torch.rand(2, in_channels, *size))
    assert isinstance(out, dict) and set(out) == {"sr"}
    assert out["sr"].shape == (2, in_channels, *expected)
    assert torch.isfinite(out["sr"]).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("preset", ["small", "base"])
def test_large_presets_shape_and_gradients(name, preset):
    """Smallest odd input (one window after padding); every parameter must receive a gradient."""
    net = build(name, preset, in_channels=4)
    x = torch.rand(1, 4, 5, 3)
    sr = net(x)["sr"]
    assert sr.shape == (1, 4, 20, 12)
    (sr - torch.rand_like(sr)).abs().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead[:5]}"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [4, (1, 3)])
def test_tiny_gradients_reach_every_parameter(name, scale):
    """9x7 input pads to 12x8 > window 4, so the shifted-window (masked) path is exercised too."""
    net = build(name, "tiny", scale=scale)
    sr = net(torch.rand(2, 1, 9, 7))["sr"]
    (sr - torch.rand_like(sr)).abs().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters without gradient: {dead[:5]}"


def test_batch_items_are_independent():
    """Padding and windowing are per image: an image inside a batch gives the same SR as alone."""
    net = build("rdst_e", "tiny", scale=2).eval()
    x = torch.rand(3, 1, 9, 7)
    with torch.no_grad():
        together = net(x)["sr"]
        alone = net(x[1:2])["sr"]
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- sub-pixel up-sampler geometry


def test_upsampling_stages():
    assert upsampling_stages((4, 4)) == [(2, 2), (2, 2)]
    assert upsampling_stages((1, 4)) == [(1, 2), (1, 2)]
    assert upsampling_stages((4, 1)) == [(2, 1), (2, 1)]
    assert upsampling_stages((3, 3)) == [(3, 3)]
    assert upsampling_stages((2, 3)) == [(2, 3)]
    assert upsampling_stages((8, 3)) == [(2, 3), (2, 1), (2, 1)]
    assert upsampling_stages((1, 1)) == []


@pytest.mark.parametrize("scale", [(1, 3), (4, 1), (2, 3), (2, 2)])
def test_pixel_shuffle_maps_lr_pixel_to_its_hr_block(scale):
    """Channel c*sh*sw + i*sw + j of LR pixel (h, w) lands on HR pixel (h*sh + i, w*sw + j)."""
    sh, sw = scale
    c, h, w = 2, 3, 4
    x = torch.randn(1, c * sh * sw, h, w)
    y = pixel_shuffle_2d(x, scale)
    assert y.shape == (1, c, h * sh, w * sw)
    for ch in range(c):
        for i in range(sh):
            for j in range(sw):
                torch.testing.assert_close(y[0, ch, i::sh, j::sw], x[0, ch * sh * sw + i * sw + j])
    # constant sub-channels per LR pixel -> each LR pixel i becomes the HR block i*R .. i*R+R-1
    v = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    block = pixel_shuffle_2d(v.repeat(1, sh * sw, 1, 1), scale)
    expected = v.repeat_interleave(sh, dim=2).repeat_interleave(sw, dim=3)
    assert torch.equal(block, expected)
    if sh == sw:
        assert torch.equal(pixel_shuffle_2d(x, scale), F.pixel_shuffle(x, sh))


# ---------------------------------------------------------------- losses against hand values


class _KnownUNet(nn.Module):
    """Stand-in segmentation net with hand-computable maps: E1 = 2x, D = x^2, seg logits = [0, x]."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return {"E1": 2 * x * self.anchor, "D": x**2, "seg": torch.cat([torch.zeros_like(x), x], dim=1)}


SR = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
HR = torch.tensor([[[[0.0, 2.0], [5.0, 1.0]]]])


def test_l1_hand_value():
    assert l1_distance(SR, HR).item() == pytest.approx((1 + 0 + 2 + 3) / 4)


def test_hard_label_dice_multiclass_hand_value():
    ln3 = math.log(3.0)
    sr_logits = torch.tensor([[[[0.0, ln3]], [[ln3, 0.0]]]])  # softmax class-1 probs: [0.75, 0.25]
    hr_logits = torch.tensor([[[[0.0, 0.0]], [[1.0, 1.0]]]])  # both pixels labelled class 1
    eps = 1e-5
    dice0 = (0 + eps) / (1.0 + 0 + eps)  # class 0: |P|=0.25+0.75, |Y|=0
    dice1 = (2 * 1.0 + eps) / (1.0 + 2 + eps)  # class 1: |P n Y|=0.75+0.25, |P|=1, |Y|=2
    expected = 1 - (dice0 + dice1) / 2
    assert hard_label_dice_loss(sr_logits, hr_logits).item() == pytest.approx(expected, rel=1e-5)


def test_hard_label_dice_binary_hand_value():
    sr_logits = torch.tensor([[[[0.0, math.log(3.0)]]]])  # sigmoid: [0.5, 0.75]
    hr_logits = torch.tensor([[[[1.0, -1.0]]]])  # labels [1, 0]
    eps = 1e-5
    expected = 1 - (2 * 0.5 + eps) / (1.25 + 1 + eps)
    assert hard_label_dice_loss(sr_logits, hr_logits).item() == pytest.approx(expected, rel=1e-5)


def test_perceptual_terms_and_total_hand_values():
    loss = RDSTLoss(SegmentationPerceptualLoss(_KnownUNet(), terms=("E1", "D", "HRL")), alpha=1.0, lam=10.0)
    out = loss({"sr": SR}, HR)
    assert out["l1"].item() == pytest.approx(1.5)
    assert out["E1"].item() == pytest.approx(3.0)  # 2 * L1
    assert out["D"].item() == pytest.approx((1 + 0 + 16 + 15) / 4)
    # HRL: two-class logits [0, x]; HR labels = argmax -> [0, 1, 1, 1] (tie at 0 -> class 0)
    p1 = [1 / (1 + math.exp(-v)) for v in (1.0, 2.0, 3.0, 4.0)]
    y1 = [0, 1, 1, 1]
    eps = 1e-5
    inter1 = sum(p * y for p, y in zip(p1, y1))
    inter0 = sum((1 - p) * (1 - y) for p, y in zip(p1, y1))
    dice1 = (2 * inter1 + eps) / (sum(p1) + 3 + eps)
    dice0 = (2 * inter0 + eps) / (sum(1 - p for p in p1) + 1 + eps)
    assert out["HRL"].item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-5)
    lu = 3.0 + 8.0 + out["HRL"].item()
    assert out["perceptual"].item() == pytest.approx(lu, rel=1e-6)
    assert out["loss"].item() == pytest.approx(1.5 + 10 * lu, rel=1e-6)
    stage1 = RDSTLoss(alpha=2.0)(SR, HR)
    assert set(stage1) == {"loss", "l1"} and stage1["loss"].item() == pytest.approx(3.0)
    with pytest.raises(ValueError):
        SegmentationPerceptualLoss(_KnownUNet(), terms=("E9",))


def test_segmentation_unet_feature_maps_on_odd_input():
    unet = SegmentationUNet(in_channels=2, out_channels=3, features=TINY_UNET).eval()
    with torch.no_grad():
        out = unet(torch.rand(1, 2, 19, 13))
    assert out["E1"].shape == (1, 4, 19, 13)
    assert out["E2"].shape == (1, 4, 10, 7)
    assert out["E3"].shape == (1, 8, 5, 4)
    assert out["E4"].shape == (1, 8, 3, 2)
    assert out["E5"].shape == (1, 8, 2, 1)
    assert out["D"].shape == (1, 4, 19, 13)
    assert out["seg"].shape == (1, 3, 19, 13)


# ---------------------------------------------------------------- the U-Net is really frozen


def test_unet_frozen_while_sr_net_trains():
    torch.manual_seed(0)
    unet = SegmentationUNet(in_channels=1, out_channels=3, features=TINY_UNET)
    unet.train()  # as a freshly trained U-Net might be handed over
    perceptual = SegmentationPerceptualLoss(unet, terms=("E1", "D", "HRL"))
    assert not unet.training and all(not p.requires_grad for p in unet.parameters())
    # a trainer toggling the whole loss module must not un-freeze the U-Net for the forward pass
    loss_fn = RDSTLoss(perceptual, alpha=1.0, lam=10.0).train().requires_grad_(True)
    before = {k: v.clone() for k, v in unet.state_dict().items()}  # weights and BN statistics

    net = build("rdst_e", "tiny", scale=2)
    opt = torch.optim.Adam(list(net.parameters()) + list(loss_fn.parameters()), lr=1e-3)
    lr, hr = torch.rand(2, 1, 9, 7), torch.rand(2, 1, 18, 14)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(net(lr), hr)["loss"].backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in unet.parameters())
    assert not unet.training
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key]), f"U-Net {key} changed"

    # each perceptual term alone sends gradient through the frozen U-Net into the SR network
    for term in ("E1", "E5", "D", "HRL"):
        net.zero_grad()
        term_loss = SegmentationPerceptualLoss(unet, terms=(term,))
        term_loss(net(lr)["sr"], hr)[term].backward()
        grad = sum(p.grad.abs().sum() for p in net.parameters() if p.grad is not None)
        assert grad > 0, term


# ---------------------------------------------------------------- determinism, overfitting, size


@pytest.mark.parametrize("name", NAMES)
def test_determinism(name):
    x = torch.rand(1, 1, 7, 9)
    outs = []
    for _ in range(2):
        torch.manual_seed(1234)
        net = build(name, "tiny", scale=(1, 2))
        outs.append(net(x)["sr"])
    assert torch.equal(outs[0], outs[1])
    torch.manual_seed(4321)
    assert not torch.equal(build(name, "tiny", scale=(1, 2))(x)["sr"], outs[0])


def _smooth_example(h: int = 7, w: int = 9, scale: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h * scale), torch.linspace(0, 1, w * scale), indexing="ij")
    hr = (0.5 + 0.3 * torch.sin(6 * xx) * torch.cos(4 * yy) + 0.2 * (xx > 0.5).float())[None, None]
    return F.avg_pool2d(hr, scale), hr


@pytest.mark.parametrize("name", NAMES)
def test_tiny_overfits_one_example(name):
    torch.manual_seed(0)
    net = build(name, "tiny", scale=2)
    lr, hr = _smooth_example()
    loss_fn = RDSTLoss()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = best = None
    for _ in range(300):
        opt.zero_grad()
        loss = loss_fn(net(lr), hr)["loss"]
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        best = loss.item() if best is None else min(best, loss.item())
        if best <= 0.1 * first:
            break
    assert best <= 0.1 * first, f"loss only went {first:.4f} -> {best:.4f}"


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts(name):
    base = n_params(build(name, "base"))
    assert abs(base - PAPER_PARAMS[name]) / PAPER_PARAMS[name] < 0.15, base
    tiny, small = n_params(build(name, "tiny")), n_params(build(name, "small"))
    assert tiny < 1_000_000 and tiny < small < base


def test_invalid_configuration():
    with pytest.raises(ValueError):
        RDST(embed_dim=60, growth_rate=32, num_heads=6)  # 92 channels not divisible by 6 heads
    with pytest.raises(ValueError):
        RDST(scale=(2, 0))
    with pytest.raises(ValueError):
        build("rdst", "tiny")(torch.rand(1, 2, 8, 8))
