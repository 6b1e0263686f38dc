"""SwinSR-UNETR (shared/papers/swinsr-unetr.txt): shapes, gradients, losses, balancing, determinism,
overfitting, parameter counts and the paper's efficiency claim."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks import SubpixelUpsample
from monai.networks.nets import SwinUNETR
from torch.utils.flop_counter import FlopCounterMode

from JointSRSegLib.losses.balancing import KendallWeighting
from JointSRSegLib.losses.swinsr_unetr import SwinSRUNETRLoss, laplace_nll
from JointSRSegLib.models import ARCHITECTURES, build
from JointSRSegLib.models.swinsr_decoder import SegmentationHead
from JointSRSegLib.models.swinsr_subpixel import AnisotropicSubpixelUpsample, pixel_shuffle_3d
from JointSRSegLib.models.swinsr_unetr import SwinSRUNETR, padded_shape

NAME = "swinsr_unetr"
ODD = (5, 7, 9)  # not a multiple of any window (3, 5, 7) or of the merge factor 16
# Measured parameter counts (in_channels=4, seg_channels=4, scale 2, aleatoric=False).
EXPECTED_PARAMS = {"tiny": 446_192, "small": 15_854_498, "base": 63_762_314}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def projected_sum(outputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A scalar that depends on every output voxel and channel with random (seeded) weights."""
    gen = torch.Generator().manual_seed(1)
    return sum((v * torch.randn(v.shape, generator=gen)).sum() for v in outputs.values())


def assert_every_parameter_trained(model: torch.nn.Module) -> None:
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"parameters without gradient: {dead}"


# ----------------------------------------------------------------------------------------- registry
def test_registry_entry():
    spec = ARCHITECTURES[NAME]
    assert spec.tasks == ("sr", "seg") and spec.dims == 3 and spec.paper == "swinsr-unetr.txt"
    assert set(spec.presets) == {"tiny", "small", "base"}
    model = build(NAME, "tiny")
    assert isinstance(model, SwinSRUNETR)
    assert model.jointsrseg_config["config"]["feature_size"] == 4


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_parameter_counts(preset):
    count = n_params(build(NAME, preset))
    assert count == EXPECTED_PARAMS[preset]
    if preset == "tiny":
        assert count < 1_000_000


def test_base_size_matches_swin_unetr_backbone():
    """The paper gives no parameter count; it builds on Swin UNETR (feature 48), whose size the
    base preset must match within 15 % (the patch embedding is replaced, one branch is added)."""
    reference = n_params(SwinUNETR(in_channels=4, out_channels=4, feature_size=48))
    ours = EXPECTED_PARAMS["base"]
    assert abs(ours - reference) / reference < 0.15


# ------------------------------------------------------------------------------------------- shapes
def test_padded_shape_rule():
    assert padded_shape((5, 7, 9), 16) == (16, 16, 32)  # grows the longest axis: bottleneck >= 2 voxels
    assert padded_shape((17, 9, 3), 16) == (32, 16, 16)
    assert padded_shape((48, 48, 48), 16) == (48, 48, 48)
    assert padded_shape((120, 120, 78), 16) == (128, 128, 80)


@pytest.mark.parametrize(
    ("scale", "shape", "aleatoric", "patch_embedding"),
    [
        ((2, 2, 2), ODD, False, False),
        ((1, 1, 3), ODD, True, False),
        ((3, 1, 1), (7, 5, 3), False, False),
        ((1, 4, 1), (3, 5, 11), True, False),
        ((2, 2, 2), (9, 5, 7), True, True),
    ],
)
def test_tiny_output_shapes(scale, shape, aleatoric, patch_embedding):
    model = build(NAME, "tiny", scale=scale, seg_channels=3, aleatoric=aleatoric,
                  patch_embedding=patch_embedding).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, *shape))
    hr = tuple(s * r for s, r in zip(shape, scale))
    expected_keys = {"sr", "seg", "sr_log_var"} if aleatoric else {"sr", "seg"}
    assert set(out) == expected_keys
    assert out["sr"].shape == (2, 4, *hr)
    assert out["seg"].shape == (2, 3, *hr)
    if aleatoric:
        assert out["sr_log_var"].shape == (2, 4, *hr)
        assert out["sr_log_var"].abs().max() < 10.0  # soft bound
    assert all(torch.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_preset_shapes_and_every_parameter_gets_gradient(preset):
    torch.manual_seed(0)
    model = build(NAME, preset, aleatoric=True)
    out = model(torch.randn(1, 4, *ODD))
    hr = tuple(2 * s for s in ODD)
    assert out["sr"].shape == (1, 4, *hr) and out["sr_log_var"].shape == (1, 4, *hr)
    assert out["seg"].shape == (1, 4, *hr)
    projected_sum(out).backward()
    assert_every_parameter_trained(model)


def test_patch_embedding_ablation_gradients_and_levels():
    model = build(NAME, "tiny", patch_embedding=True)
    assert model.encoder.size_multiple == 32  # one extra halving by the 2x patch embedding
    assert model.encoder.level_channels == (4, 4, 8, 16, 32, 64)
    assert build(NAME, "tiny").encoder.level_channels == (4, 8, 16, 32, 64)
    out = model(torch.randn(1, 4, 3, 5, 7))
    assert out["seg"].shape == (1, 4, 6, 10, 14)
    projected_sum(out).backward()
    assert_every_parameter_trained(model)


def test_input_validation():
    model = build(NAME, "tiny")
    with pytest.raises(ValueError):
        model(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError):
        build(NAME, "tiny", scale=(2, 2))


# --------------------------------------------------------------------------------- HR grid mapping
def test_pixel_shuffle_maps_lr_voxel_i_to_hr_i_times_r():
    r = 3
    x = torch.zeros(1, 2 * r, 2, 1, 4)
    for c in range(2):
        for k in range(4):
            for o in range(r):
                x[0, c * r + o, :, :, k] = 100 * c + 10 * k + o
    y = pixel_shuffle_3d(x, (1, 1, r))
    assert y.shape == (1, 2, 2, 1, 12)
    for c in range(2):
        for k in range(4):
            for o in range(r):
                assert torch.all(y[0, c, :, :, k * r + o] == 100 * c + 10 * k + o)


def test_subpixel_equals_monai_for_isotropic_scale_and_icnr_is_nearest():
    torch.manual_seed(0)
    ours = AnisotropicSubpixelUpsample(3, 2, 2)
    monai = SubpixelUpsample(3, 3, 2, scale_factor=2, apply_pad_pool=False)
    monai.conv_block.load_state_dict(ours.conv.state_dict())
    x = torch.randn(1, 3, 3, 4, 5)
    assert torch.allclose(ours(x), monai(x), atol=1e-6)
    # ICNR: at initialisation every HR voxel of an LR cell has the same value (bias zeroed)
    with torch.no_grad():
        y = AnisotropicSubpixelUpsample(3, 2, (1, 1, 3)).requires_grad_(False)
        y.conv.bias.zero_()
        z = y(x)
    cells = z.reshape(1, 2, 3, 4, 5, 3)
    assert torch.allclose(cells, cells[..., :1].expand_as(cells))


def test_segmentation_upsampling_keeps_lr_cell_to_hr_block_mapping():
    head = SegmentationHead(2, 2, 3, (1, 1, 3), "instance", 0.0)
    x = torch.zeros(1, 2, 1, 1, 4)
    x[..., 2] = 1.0
    with torch.no_grad():
        up = head.up(x)
    touched = (up.abs().sum(dim=(0, 1, 2, 3)) > 0).nonzero().flatten().tolist()
    assert touched == [6, 7, 8]


# -------------------------------------------------------------------------------------------- losses
def test_dice_l1_and_kendall_against_hand_values():
    loss_fn = SwinSRUNETRLoss(num_classes=2)
    logits = torch.zeros(1, 2, 1, 1, 2)
    logits[0, 0, 0, 0, 0] = math.log(3.0)  # voxel 0: p = (0.75, 0.25); voxel 1: p = (0.5, 0.5)
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 2)  # (B, X, Y, Z) form
    sr = torch.tensor([0.0, 1.0, 2.0, 3.0]).reshape(1, 1, 1, 2, 2)
    sr_target = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 2, 2)
    # Dice per class: c0: I=0.75, |P|=1.25, |G|=1; c1: I=0.5, |P|=0.75, |G|=1
    dice = ((1 - 1.5 / 2.25) + (1 - 1.0 / 1.75)) / 2  # 0.380952
    l1 = (1 + 0 + 2 + 3) / 4
    total, parts = loss_fn({"seg": logits, "sr": sr}, sr_target, labels)
    assert parts["seg_dice"].item() == pytest.approx(dice, abs=1e-4)
    assert parts["sr_l1"].item() == pytest.approx(1.5)
    assert total.item() == pytest.approx(0.5 * dice + 0.5 * l1, abs=1e-4)  # s = 0: 1/(2 sigma^2) = 0.5
    with torch.no_grad():
        loss_fn.weighting.log_vars.copy_(torch.tensor([math.log(2.0), -math.log(2.0)]))
    total, parts = loss_fn({"seg": logits, "sr": sr}, sr_target, labels.unsqueeze(1))
    # sigma_1^2 = 2, sigma_2^2 = 1/2: L/(2 sigma^2) + log sigma
    expected = dice / 4 + l1 / 1 + 0.5 * math.log(2.0) - 0.5 * math.log(2.0)
    assert total.item() == pytest.approx(expected, abs=1e-4)
    assert parts["weight_seg"].item() == pytest.approx(0.25) and parts["weight_sr"].item() == pytest.approx(1.0)


def test_laplace_nll_hand_value_and_variance_optimum():
    pred, target = torch.zeros(1, 1, 1, 1, 1), torch.ones(1, 1, 1, 1, 1)
    log_var = torch.full_like(pred, math.log(4.0))  # std 2
    assert laplace_nll(pred, log_var, target).item() == pytest.approx(math.sqrt(2) / 2 + math.log(2.0), abs=1e-6)
    # a Laplace residual |r| = 1 has maximum-likelihood variance 2 b^2 = 2
    s = torch.full_like(pred, math.log(2.0), requires_grad=True)
    laplace_nll(pred, s, target).backward()
    assert abs(s.grad.item()) < 1e-6


def test_beta_nll_gives_l1_gradient_whatever_the_variance():
    """beta = 1: the prediction's gradient is sqrt(2) sign(error) / N for any predicted variance, so
    a confident variance head cannot blow up the SR gradient; beta = 0 is the plain NLL (1/std)."""
    target = torch.tensor([1.0, -2.0, 0.5, 3.0]).reshape(1, 1, 1, 1, 4)
    for log_var_value in (-8.0, 0.0, 3.0):
        log_var = torch.full_like(target, log_var_value)
        pred = torch.zeros_like(target, requires_grad=True)
        laplace_nll(pred, log_var, target, beta=1.0).backward()
        expected = -math.sqrt(2) * torch.sign(target) / target.numel()
        torch.testing.assert_close(pred.grad, expected)
        plain = torch.zeros_like(target, requires_grad=True)
        laplace_nll(plain, log_var, target).backward()
        torch.testing.assert_close(plain.grad, expected * math.exp(-0.5 * log_var_value))
    # the variance's optimum is unchanged: |r| = 1 -> log_var = log 2 has zero gradient
    s = torch.full((1, 1, 1, 1, 1), math.log(2.0), requires_grad=True)
    laplace_nll(torch.zeros(1, 1, 1, 1, 1), s, torch.ones(1, 1, 1, 1, 1), beta=1.0).backward()
    assert abs(s.grad.item()) < 1e-6
    loss_fn = SwinSRUNETRLoss(num_classes=2, aleatoric=True, nll_beta=1.0)
    assert loss_fn.nll_beta == 1.0


def test_aleatoric_loss_uses_nll_and_weights_only_segmentation():
    loss_fn = SwinSRUNETRLoss(num_classes=2, aleatoric=True)
    assert loss_fn.weighting.log_vars.numel() == 1
    logits = torch.zeros(1, 2, 1, 1, 2)  # p = 0.5 everywhere
    labels = torch.tensor([0, 1]).reshape(1, 1, 1, 1, 2)
    dice = 1 - 1.0 / 2.0
    sr, sr_target = torch.zeros(1, 1, 1, 1, 2), torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 1, 2)
    log_var = torch.zeros_like(sr)
    nll = math.sqrt(2) * (1 + 3) / 2
    total, parts = loss_fn({"seg": logits, "sr": sr, "sr_log_var": log_var}, sr_target, labels)
    assert parts["sr_nll"].item() == pytest.approx(nll, abs=1e-5)
    assert total.item() == pytest.approx(0.5 * dice + nll, abs=1e-4)
    with pytest.raises(KeyError):
        loss_fn({"seg": logits, "sr": sr}, sr_target, labels)
    with pytest.raises(ValueError):
        SwinSRUNETRLoss(num_classes=3)({"seg": logits, "sr": sr}, sr_target, labels)


def test_kendall_weights_learnable_and_bounded():
    loss_fn = SwinSRUNETRLoss(num_classes=2)
    assert isinstance(loss_fn.weighting, KendallWeighting)
    params = list(loss_fn.parameters())
    assert len(params) == 1 and params[0].requires_grad
    outputs = {"seg": torch.randn(1, 2, 2, 2, 2), "sr": torch.randn(1, 1, 2, 2, 2)}
    seg_t, sr_t = torch.randint(0, 2, (1, 1, 2, 2, 2)), torch.randn(1, 1, 2, 2, 2)
    total, _ = loss_fn(outputs, sr_t, seg_t)
    total.backward()
    assert torch.all(params[0].grad != 0)
    before = params[0].detach().clone()
    torch.optim.SGD(params, lr=0.1).step()
    assert not torch.equal(before, params[0].detach())
    for extreme in (1e4, -1e4):  # weights clamp to 0.5 exp(-+10); the total stays finite and bounded
        with torch.no_grad():
            params[0].fill_(extreme)
        total, parts = loss_fn(outputs, sr_t, seg_t)
        assert math.isfinite(total.item())
        assert parts["weight_seg"].item() == pytest.approx(0.5 * math.exp(-math.copysign(10, extreme)), rel=1e-5)
        assert total.item() >= 0.5 * -10 * 2 - 1e-6


# ------------------------------------------------------------------------- determinism and dropout
def test_determinism_with_fixed_seed():
    x = torch.randn(1, 4, *ODD)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build(NAME, "tiny", aleatoric=True, dropout=0.2)
        outs.append(model(x))  # train mode: dropout masks come from the same seed too
    for key in outs[0]:
        assert torch.equal(outs[0][key], outs[1][key])


def test_mc_dropout_is_stochastic_only_in_train_mode():
    torch.manual_seed(0)
    model = build(NAME, "tiny", dropout=0.3)
    x = torch.randn(1, 4, *ODD)
    a, b = model(x)["sr"], model(x)["sr"]
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)["sr"], model(x)["sr"])


# ---------------------------------------------------------------------------------------- training
def test_tiny_overfits_one_example():
    """Dice + L1 (unweighted) must fall by >= 90 % within 300 Adam steps on one fixed example."""
    torch.manual_seed(0)
    model = build(NAME, "tiny", seg_channels=3, scale=(1, 1, 2))
    loss_fn = SwinSRUNETRLoss(num_classes=3)
    hr = F.avg_pool3d(torch.randn(1, 4, 9, 10, 18), 3, 1)[..., :5, :6, :14]  # smooth HR target
    lr = hr.reshape(1, 4, 5, 6, 7, 2).mean(-1)  # through-plane x2 average
    seg = (hr[:, :1] > 0.2).long() + (hr[:, 1:2] > 0.3).long()
    optimizer = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)
    first = last = None
    for _ in range(300):
        total, parts = loss_fn(model(lr), hr, seg)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        last = (parts["seg_dice"] + parts["sr_l1"]).item()
        first = last if first is None else first
        if last <= 0.1 * first:
            break
    assert last <= 0.1 * first, f"task loss only fell from {first:.4f} to {last:.4f}"


# -------------------------------------------------------------------------------------- efficiency
def test_small_is_cheaper_than_full_resolution_swin_unetr():
    """Paper Sec. 4.2: the joint model on the LR input is cheaper than Swin UNETR (feature 24)
    segmenting the full-resolution volume (x2 per axis).  FLOPs counted on the meta device."""

    def flops(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.empty(shape, device="meta"))
        return counter.get_total_flops()

    ours = flops(build(NAME, "small").to("meta"), (1, 4, 32, 32, 32))
    reference = flops(SwinUNETR(in_channels=4, out_channels=4, feature_size=24).to("meta"), (1, 4, 64, 64, 64))
    assert ours < 0.75 * reference


# ------------------------------------------------------------------------- global residual option
def test_global_residual_defaults_off_and_adds_trilinear_input():
    """``global_residual`` (not in the paper, default off) adds the LR input, trilinearly
    interpolated with align_corners=False onto the subdivided HR grid, to ``"sr"`` only."""
    assert build(NAME, "tiny").global_residual is False
    torch.manual_seed(0)
    plain = build(NAME, "tiny", in_channels=1, seg_channels=3, scale=(1, 1, 4), aleatoric=True).eval()
    torch.manual_seed(0)
    resid = build(NAME, "tiny", in_channels=1, seg_channels=3, scale=(1, 1, 4), aleatoric=True,
                  global_residual=True).eval()
    x = torch.randn(1, 1, *ODD)
    base = F.interpolate(x, size=(5, 7, 36), mode="trilinear", align_corners=False)
    with torch.no_grad():  # zero-initialised SR output: a fresh model is exactly linear interpolation
        assert torch.allclose(resid(x)["sr"], base, atol=1e-6)
    resid.load_state_dict(plain.state_dict())  # no extra parameters
    with torch.no_grad():
        a, b = plain(x), resid(x)
    assert b["sr"].shape == (1, 1, 5, 7, 36)
    assert torch.allclose(b["sr"], a["sr"] + base, atol=1e-5)
    assert torch.equal(b["seg"], a["seg"]) and torch.equal(b["sr_log_var"], a["sr_log_var"])
    # LR slice k lands at the centre of HR slices 4k .. 4k+3: a linear ramp in z is reproduced there
    # (interior slices; the end slabs are clamped to the end slice).
    ramp = torch.arange(9, dtype=torch.float32).view(1, 1, 1, 1, 9).expand(1, 1, 5, 7, 9)
    up = F.interpolate(ramp, size=(5, 7, 36), mode="trilinear", align_corners=False)
    centres = (up[..., 1::4] + up[..., 2::4]) / 2
    assert torch.allclose(centres[..., 1:-1], ramp[..., 1:-1], atol=1e-5)


def test_cubic_residual_base_is_keys_cubic_on_the_subdivided_grid():
    """``residual_interpolation="cubic"``: Keys cubic convolution (a = -0.5) along magnified axes only,
    exact for linear ramps away from the clamped ends, and the fresh model outputs exactly that base."""
    from JointSRSegLib.models.swinsr_unetr import cubic_upsample

    ramp = torch.arange(10, dtype=torch.float32).view(1, 1, 1, 1, 10).expand(1, 1, 3, 2, 10)
    up = cubic_upsample(ramp, (1, 1, 4))
    positions = (torch.arange(40, dtype=torch.float32) + 0.5) / 4 - 0.5
    assert up.shape == (1, 1, 3, 2, 40)
    assert torch.allclose(up[..., 6:-6], positions[6:-6].expand(1, 1, 3, 2, 28), atol=1e-5)
    x = torch.randn(1, 1, 4, 5, 6)
    torch.manual_seed(0)
    net = build(NAME, "tiny", in_channels=1, seg_channels=3, scale=(1, 1, 4), global_residual=True,
                residual_interpolation="cubic").eval()
    with torch.no_grad():
        assert torch.allclose(net(x)["sr"], cubic_upsample(x, (1, 1, 4)), atol=1e-6)
    with pytest.raises(ValueError, match="residual_interpolation"):
        build(NAME, "tiny", residual_interpolation="sinc")
