"""TASC-SwinMT: shapes, gradients, losses, balancing, determinism, overfitting, parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

from JointSRSegLib.losses.balancing import DWAWeighting, DynamicWeighting, GradNormWeighting, KendallWeighting
from JointSRSegLib.losses.tasc_swinmt import TASCSwinMTLoss, hybrid_interpolation_loss, segmentation_loss
from JointSRSegLib.models import ARCHITECTURES, build
from JointSRSegLib.models.tasc_blocks import CTCI, MSTAF, TALA
from JointSRSegLib.models.tasc_swinmt import SkipConcat, TASCSwinMT

PAPER_PARAMS = 33.36e6  # Table 24: 33.3589 M
MEASURED_PARAMS = {"tiny": 622_526, "small": 4_275_055, "base": 37_913_404}  # docs/architectures/tasc_swinmt.md


GRAD_FLOOR = 1e-6  # round-off of a cancelled path is ~1e-10; live parameters here are >= ~1e-4


def dead_parameters(named_parameters) -> list[str]:
    """Parameters whose gradient is missing or negligibly small (a dead module)."""
    return [n for n, p in named_parameters if p.grad is None or p.grad.abs().max().item() < GRAD_FLOOR]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def targets_for(out: dict[str, torch.Tensor], seg_channels: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    interp = torch.rand(out["interp"].shape, generator=gen)
    b, f, _, h, w = out["seg"].shape
    if seg_channels == 1:
        seg = (torch.rand(b, f, 1, h, w, generator=gen) > 0.5).float()
    else:
        seg = torch.randint(0, seg_channels, (b, f, h, w), generator=gen)
    return {"interp": interp, "seg": seg}


# ----------------------------------------------------------------------------------------- registry / shapes


def test_registry_spec():
    spec = ARCHITECTURES["tasc_swinmt"]
    assert spec.tasks == ("interp", "seg") and spec.dims == 2
    assert set(spec.presets) == {"tiny", "small", "base"}
    assert spec.paper == "tasc-swinmt.txt" and spec.builder is TASCSwinMT


@pytest.mark.parametrize(
    "preset, batch, in_ch, seg_ch, size",
    [
        ("tiny", 2, 1, 1, (37, 45)),
        ("tiny", 1, 2, 3, (35, 67)),
        ("tiny", 1, 1, 1, (7, 9)),  # below the minimum padded size
        ("small", 1, 1, 1, (33, 31)),
        ("base", 1, 1, 2, (33, 31)),
    ],
)
def test_forward_shapes_odd_sizes(preset, batch, in_ch, seg_ch, size):
    model = build("tasc_swinmt", preset, in_channels=in_ch, seg_channels=seg_ch).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.rand(batch, 2 * in_ch, h, w))
    assert set(out) == {"interp", "seg"}
    assert out["interp"].shape == (batch, in_ch, h, w)
    assert out["seg"].shape == (batch, 3, seg_ch, h, w)
    assert torch.all((out["interp"] > 0) & (out["interp"] < 1))  # paper: sigmoid, intensities in [0, 1]
    assert torch.isfinite(out["seg"]).all()


def test_input_validation():
    model = build("tasc_swinmt", "tiny")
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError):
        model(torch.rand(2, 2, 16, 16), t=torch.tensor([0.5, 0.5, 0.5]))


def test_padding_is_cropped_exactly():
    """Odd inputs are replicate-padded at the bottom/right and the prediction is cropped back there."""
    model = build("tasc_swinmt", "tiny").eval()
    x = torch.rand(1, 2, 61, 35)
    padded = torch.nn.functional.pad(x, (0, 64 - 35, 0, 64 - 61), mode="replicate")  # 32-multiple, >= 64
    with torch.no_grad():
        odd, full = model(x), model(padded)
    assert full["interp"].shape[-2:] == (64, 64)
    assert torch.allclose(odd["interp"], full["interp"][..., :61, :35], atol=1e-6)
    assert torch.allclose(odd["seg"], full["seg"][..., :61, :35], atol=1e-5)


# ---------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_backward_reaches_every_parameter(preset):
    model = build("tasc_swinmt", preset).train()
    criterion = TASCSwinMTLoss()
    out = model(torch.rand(2 if preset == "tiny" else 1, 2, 33, 31), t=0.3)
    total, _ = criterion(out, targets_for(out))
    total.backward()
    params = list(model.named_parameters()) + list(criterion.named_parameters())
    dead = dead_parameters(params)
    assert not dead, f"parameters without gradient: {dead}"


@pytest.mark.parametrize(
    "overrides",
    [
        {"use_tala": False, "use_mstaf": False, "use_ctci": False},
        {"independent_encoders": True},
        {"share_mstaf": False, "seg_channels": 3},
        {"position_conditioning": False, "interp_activation": "none"},
    ],
)
def test_ablations_build_run_and_train_every_parameter(overrides):
    model = build("tasc_swinmt", "tiny", **overrides).train()
    out = model(torch.rand(2, 2, 21, 27))
    assert out["interp"].shape == (2, 1, 21, 27)
    k = overrides.get("seg_channels", 1)
    total, _ = TASCSwinMTLoss()(out, targets_for(out, k))
    total.backward()
    dead = dead_parameters(model.named_parameters())
    assert not dead, f"parameters without gradient: {dead}"


def test_ablation_switches_change_structure():
    full = build("tasc_swinmt", "tiny")
    assert any(isinstance(m, TALA) for m in full.modules())
    assert any(isinstance(m, MSTAF) for m in full.modules())
    assert any(isinstance(m, CTCI) for m in full.modules())
    bare = build("tasc_swinmt", "tiny", use_tala=False, use_mstaf=False, use_ctci=False)
    assert not any(isinstance(m, (TALA, MSTAF, CTCI)) for m in bare.modules())
    assert any(isinstance(m, SkipConcat) for m in bare.modules())
    ind = build("tasc_swinmt", "tiny", independent_encoders=True)
    assert len(ind.encoders) == 2
    # IndEnc adds a whole encoder and gives the segmentation decoder its own MSTAFs.
    extra = n_params(ind.encoders[1]) + n_params(ind.decoders["seg"].fusions)
    assert n_params(ind) == n_params(full) + extra
    # Shared MSTAF (Algorithm 1) is one module used by both decoders.
    assert full.decoders["interp"].fusions[0] is full.decoders["seg"].fusions[0]
    own = build("tasc_swinmt", "tiny", share_mstaf=False)
    assert own.decoders["interp"].fusions[0] is not own.decoders["seg"].fusions[0]


def test_mstaf_gate_weights_differ_and_both_receive_gradient():
    torch.manual_seed(0)
    mstaf = MSTAF(16, num_heads=2)
    f_dec, f_skip = torch.randn(2, 16, 8, 6), torch.randn(2, 16, 8, 6)
    weights = mstaf.gate_weights(f_skip)
    assert weights.shape == (2, 2)
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert torch.all((weights[:, 0] - weights[:, 1]).abs() > 1e-4)
    # The two gated terms are different tensors, so the gate cannot cancel itself.
    freq_a, freq_b = mstaf.frequency_branches(f_dec)
    assert not torch.allclose(freq_a, freq_b, atol=1e-4)
    out_dec, out_skip = mstaf(f_dec, f_skip)
    (out_dec.square().mean() + out_skip.abs().mean()).backward()
    grad = mstaf.gate_fc.weight.grad
    assert grad is not None and torch.all(grad.abs().amax(1) > GRAD_FLOOR)  # W1's and W2's rows both learn
    with torch.no_grad():
        before = mstaf(f_dec, f_skip)[0]
        mstaf.gate_fc.bias[0] += 3.0  # push the gate towards W1
        after = mstaf(f_dec, f_skip)[0]
    assert (before - after).abs().max() > 1e-4


def test_tala_channel_gate_is_the_papers_parameter_free_gate():
    torch.manual_seed(0)
    tala = TALA(8).eval()
    x = torch.randn(1, 8, 6, 5)
    down = tala.down(x)
    spatial = tala.main(down) + tala.aux(down)
    freq = torch.nn.functional.gelu(torch.fft.fft2(x, norm="ortho").abs())
    fusion = tala.fuse(tala.act(tala.norm(torch.cat([spatial, freq], 1))))
    alpha = torch.sigmoid(torch.nn.functional.silu(x.mean((2, 3), keepdim=True)))
    assert torch.allclose(tala(x), fusion * alpha, atol=1e-6)


def test_ctci_is_residual_and_couples_tasks():
    torch.manual_seed(0)
    ctci = CTCI(8).eval()
    f_i, f_s = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    o_i, o_s = ctci(f_i, f_s)
    assert o_i.shape == f_i.shape and o_s.shape == f_s.shape
    o_i2, _ = ctci(f_i, f_s + 1.0)  # the segmentation stream changes the interpolation stream
    assert (o_i - o_i2).abs().max() > 1e-4


def test_position_conditioning_changes_prediction():
    model = build("tasc_swinmt", "tiny").eval()
    x = torch.rand(2, 2, 20, 24)
    with torch.no_grad():
        default = model(x)["interp"]
        half = model(x, t=torch.full((2,), 0.5))["interp"]
        quarter = model(x, t=0.25)["interp"]
    assert torch.equal(default, half)
    assert (default - quarter).abs().max() > 1e-5


# -------------------------------------------------------------------------------------------------- losses


def test_hybrid_interpolation_loss_by_hand():
    pred, target = torch.tensor([0.0, 0.5]), torch.tensor([1.0, 0.0])
    # L1 = 0.75, MSE = 0.625 -> 0.4 * 0.75 + 0.6 * 0.625
    assert hybrid_interpolation_loss(pred, target).item() == pytest.approx(0.675, abs=1e-6)
    assert hybrid_interpolation_loss(pred, target, alpha=0.3).item() == pytest.approx(0.6625, abs=1e-6)


def test_binary_segmentation_loss_by_hand():
    logits = torch.tensor([0.0, math.log(3.0), 0.0]).reshape(1, 3, 1, 1, 1)
    target = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 3, 1, 1)  # (B, 3, H, W) accepted too
    expected = (2 * math.log(2.0) + math.log(4.0 / 3.0)) / 3
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_multiclass_segmentation_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2.0), 0.0, 0.0], [0.0, math.log(3.0), 0.0]])
    logits = logits.reshape(1, 3, 3, 1, 1)
    target = torch.tensor([0, 0, 1]).reshape(1, 3, 1, 1)
    expected = (math.log(3.0) + math.log(2.0) + math.log(5.0 / 3.0)) / 3
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_dice_option_by_hand():
    logits = torch.zeros(1, 3, 1, 2, 2)  # p = 0.5 everywhere, all-foreground target
    target = torch.ones(1, 3, 2, 2)
    # Dice = 1 - 2 * 0.5 N / (0.5 N + N) = 1/3 (MONAI's 1e-5 smoothing is negligible)
    assert segmentation_loss(logits, target, use_dice=True).item() == pytest.approx(math.log(2) + 1 / 3, abs=1e-5)
    assert segmentation_loss(logits, target).item() == pytest.approx(math.log(2), abs=1e-6)


def test_total_loss_fixed_and_dynamic_by_hand():
    out = {"interp": torch.tensor([[[[0.0, 0.5]]]]), "seg": torch.zeros(1, 3, 1, 1, 2)}
    tgt = {"interp": torch.tensor([[[[1.0, 0.0]]]]), "seg": torch.ones(1, 3, 1, 2)}
    l_i, l_s = 0.675, math.log(2.0)
    fixed = TASCSwinMTLoss(balancing="fixed", fixed_weights=(0.3, 0.7))
    assert fixed(out, tgt)[0].item() == pytest.approx(0.3 * l_i + 0.7 * l_s, abs=1e-6)
    dynamic = TASCSwinMTLoss()
    with torch.no_grad():
        dynamic.balancer.log_vars.copy_(torch.tensor([math.log(2.0), 0.0]))
    total, parts = dynamic(out, tgt)
    assert parts["interp"].item() == pytest.approx(l_i, abs=1e-6)
    assert total.item() == pytest.approx(0.5 * l_i + math.log(2.0) + l_s, abs=1e-6)
    with pytest.raises(ValueError):
        TASCSwinMTLoss(balancing="uncertainty")


# ----------------------------------------------------------------------------------------------- balancing


def test_dynamic_weighting_is_learnable_and_bounded():
    weighting = DynamicWeighting(2)
    opt = torch.optim.SGD(weighting.parameters(), lr=0.1)
    losses = [torch.tensor(2.0), torch.tensor(0.5)]
    for _ in range(300):
        total = weighting(losses)
        assert total.item() >= (1 + math.log(2.0)) + (1 + math.log(0.5)) - 1e-5  # exp(-s)L + s >= 1 + log L
        opt.zero_grad()
        total.backward()
        opt.step()
    assert weighting.log_vars.detach() == pytest.approx(torch.tensor([math.log(2.0), math.log(0.5)]), abs=1e-3)
    assert weighting.task_weights() == pytest.approx(torch.tensor([0.5, 2.0]), abs=1e-3)
    # The printed sign exp(-s) L - s would run away: it keeps decreasing as s grows.
    s = torch.tensor([0.0, 5.0, 10.0])
    printed = torch.exp(-s) * 2.0 - s
    assert printed[2] < printed[1] < printed[0]
    # Clamped log-variances keep the weights in [e^-10, e^10] (Kendall shares the machinery).
    kendall = KendallWeighting(2)
    with torch.no_grad():
        kendall.log_vars.fill_(50.0)
    assert torch.all(kendall.task_weights() >= 0.5 * math.exp(-10) - 1e-12)


def test_gradnorm_by_hand():
    w_shared = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = [(w_shared**2).sum(), 3.0 * w_shared[0]]  # grad norms sqrt(20) and 3
    gradnorm = GradNormWeighting(2, alpha=1.5)
    assert gradnorm(losses).item() == pytest.approx(5.0 + 3.0)
    l_grad = gradnorm.update_gradients(losses, [w_shared])
    assert l_grad.item() == pytest.approx(math.sqrt(20) - 3.0, abs=1e-5)  # first step: r_i = 1
    assert gradnorm.weights.grad == pytest.approx(torch.tensor([math.sqrt(20), -3.0]), abs=1e-5)
    opt = torch.optim.SGD(gradnorm.parameters(), lr=0.1)
    opt.step()
    gradnorm.renormalize()
    raw = torch.tensor([1 - 0.1 * math.sqrt(20), 1.3])
    assert gradnorm.task_weights() == pytest.approx(2 * raw / raw.sum(), abs=1e-5)
    assert gradnorm.task_weights().sum().item() == pytest.approx(2.0)  # bounded: positive, sum = #tasks
    # Second step: task 1's loss halved relative to its start -> r = (0.5, 1) / 0.75 boosts task 2.
    losses2 = [0.5 * losses[0].detach() + 0 * w_shared.sum(), 3.0 * w_shared[0]]
    w = gradnorm.task_weights()
    norms = torch.tensor([0.0, 3.0])
    g = w * norms
    target = g.mean() * (torch.tensor([0.5, 1.0]) / 0.75) ** 1.5
    assert gradnorm.gradnorm_loss(losses2, [w_shared]).item() == pytest.approx((g - target).abs().sum().item(), 1e-5)


def test_gradnorm_in_a_training_step_with_the_model():
    model = build("tasc_swinmt", "tiny").train()
    criterion = TASCSwinMTLoss(balancing="gradnorm")
    opt = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=1e-3)
    for _ in range(2):
        out = model(torch.rand(2, 2, 17, 19))
        total, _ = criterion(out, targets_for(out))
        opt.zero_grad()
        criterion.gradnorm_step(model.shared_parameters())
        total.backward()
        assert criterion.balancer.weights.grad is not None and torch.any(criterion.balancer.weights.grad != 0)
        opt.step()
        criterion.balancer.renormalize()
    weights = criterion.task_weights()
    assert torch.all(weights > 0) and weights.sum().item() == pytest.approx(2.0)
    assert not torch.allclose(weights, torch.ones(2))  # the weights did move


def test_dwa_by_hand():
    dwa = DWAWeighting(2, temperature=2.0)
    assert dwa.end_epoch([1.0, 2.0]) == pytest.approx(torch.ones(2))  # lambda = 1 for the first two epochs
    dwa.train()
    for a, b in ((0.4, 1.9), (0.6, 1.7)):  # epoch 2 accumulated from steps: mean (0.5, 1.8)
        dwa([torch.tensor(a), torch.tensor(b)])
    lambdas = dwa.end_epoch()
    r = torch.tensor([0.5 / 1.0, 1.8 / 2.0])
    expected = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    assert lambdas == pytest.approx(expected, abs=1e-6)
    assert torch.all((lambdas > 0) & (lambdas < 2)) and lambdas.sum().item() == pytest.approx(2.0)
    assert dwa([torch.tensor(1.0), torch.tensor(1.0)]).item() == pytest.approx(2.0)
    with pytest.raises(RuntimeError):
        DWAWeighting(2).end_epoch()


# --------------------------------------------------------------------------------- determinism / training


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_determinism_with_fixed_seed(preset):
    x = torch.rand(1, 2, 23, 29)
    outputs = []
    for _ in range(2):
        torch.manual_seed(1234)
        model = build("tasc_swinmt", preset).eval()
        with torch.no_grad():
            outputs.append(model(x, t=0.4))
    assert torch.equal(outputs[0]["interp"], outputs[1]["interp"])
    assert torch.equal(outputs[0]["seg"], outputs[1]["seg"])


def test_tiny_overfits_one_example():
    torch.manual_seed(0)
    model = build("tasc_swinmt", "tiny").train()
    h, w = 25, 29
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    frames = [0.5 + 0.4 * torch.sin(3 * xx + 0.4 * k) * torch.cos(2 * yy) for k in range(3)]
    masks = torch.stack([((xx - 0.1 * k) ** 2 + yy**2 < 0.3).float() for k in range(3)])[None]
    x = torch.stack([frames[0], frames[2]])[None]
    targets = {"interp": frames[1][None, None], "seg": masks}
    criterion = TASCSwinMTLoss()  # the paper's dynamic weighting, trained jointly
    opt = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=3e-3)
    first = None
    steps = 0
    for _ in range(300):
        steps += 1
        total, parts = criterion(model(x), targets)
        raw = torch.stack([parts["interp"], parts["seg"]])  # unweighted task losses
        first = raw if first is None else first
        if torch.all(raw <= 0.1 * first):  # each task's loss dropped by >= 90 %
            break
        opt.zero_grad()
        total.backward()
        opt.step()
    assert torch.all(raw <= 0.1 * first), f"losses went from {first.tolist()} to {raw.tolist()} in {steps} steps"


# ----------------------------------------------------------------------------------------- parameter counts


def test_parameter_counts():
    counts = {p: n_params(build("tasc_swinmt", p)) for p in ("tiny", "small", "base")}
    assert counts == MEASURED_PARAMS
    assert counts["tiny"] < 1_000_000
    assert 1_000_000 < counts["small"] < 10_000_000
    assert abs(counts["base"] - PAPER_PARAMS) / PAPER_PARAMS < 0.15
    assert isinstance(build("tasc_swinmt", "base"), TASCSwinMT)


# ------------------------------------------------------------------------- global residual option
@pytest.mark.parametrize("activation", ["none", "sigmoid"])
def test_global_residual_defaults_off_and_adds_the_linear_blend(activation):
    """``global_residual`` (not in the paper, default off): the middle frame is the network output plus
    ``(1 - t) x1 + t x3`` (in logit space under the sigmoid); segmentation is unchanged."""
    assert build("tasc_swinmt", "tiny").global_residual is False
    torch.manual_seed(0)
    plain = build("tasc_swinmt", "tiny", seg_channels=3, interp_activation=activation).eval()
    torch.manual_seed(0)
    resid = build("tasc_swinmt", "tiny", seg_channels=3, interp_activation=activation, global_residual=True).eval()
    resid.load_state_dict(plain.state_dict())  # no extra parameters
    x = torch.rand(2, 2, 20, 23) * 0.9 + 0.05
    t = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        a, b = plain(x, t), resid(x, t)
    blend = (1 - t.view(2, 1, 1, 1)) * x[:, :1] + t.view(2, 1, 1, 1) * x[:, 1:]
    if activation == "none":
        assert torch.allclose(b["interp"], a["interp"] + blend, atol=1e-5)
    else:
        expected = torch.sigmoid(torch.logit(a["interp"]) + torch.logit(blend))
        assert torch.allclose(b["interp"], expected, atol=1e-4)
    assert torch.equal(a["seg"], b["seg"])
