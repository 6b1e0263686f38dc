"""Tests of the REHRSeg networks (rehrseg_sr, rehrseg_seg, rehrseg_seg_uasr) and losses
(JointSRSegLib.losses.rehrseg)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from JointSRSegLib.losses.rehrseg import (
    AffinityCorrelationLoss,
    REHRSegSegmentationLoss,
    REHRSegSRLoss,
    SpatialCosineLoss,
    UncertaintyAwareL1Loss,
    UncertaintyWeightedCELoss,
    decimate_slices,
    normalize_uncertainty,
)
from JointSRSegLib.models import ARCHITECTURES, build
from JointSRSegLib.models.rehrseg import REHRSegSR, nnunet_plan

torch.set_num_threads(1)
PRESETS = ("tiny", "small", "base")
# Measured parameter counts, as documented in docs/architectures/rehrseg.md.
PARAMS = {
    ("rehrseg_sr", "tiny"): 180_221,
    ("rehrseg_sr", "small"): 5_938_445,
    ("rehrseg_sr", "base"): 42_129_405,
    ("rehrseg_seg", "tiny"): 271_924,
    ("rehrseg_seg", "small"): 5_596_516,
    ("rehrseg_seg", "base"): 30_991_300,
}
FLAVR_PAPER_PARAMS = 42.4e6  # FLAVR (Kalluri et al., WACV 2023), the backbone REHRSeg fine-tunes
LR_SHAPE = (5, 7, 3)  # odd sizes everywhere; Z is the thick-slice axis


def _sr_inputs(shape=LR_SHAPE, classes=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((1, 1, *shape), generator=g) * 2 - 1
    labels = torch.randint(0, classes, (1, 1, *shape), generator=g)
    return image, labels


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _assert_all_grads(modules):
    for module in modules:
        for name, p in module.named_parameters():
            assert p.grad is not None, f"no gradient reaches {name}"
            assert p.grad.abs().sum() > 0, f"gradient of {name} is all zero"


def test_registry_entries():
    sr, seg = ARCHITECTURES["rehrseg_sr"], ARCHITECTURES["rehrseg_seg"]
    assert sr.tasks == ("sr", "seg", "sr_uncertainty") and sr.dims == 3 and sr.paper == "rehrseg.txt"
    assert seg.tasks == ("seg",) and seg.dims == 3 and seg.paper == "rehrseg.txt"
    assert set(sr.presets) == set(seg.presets) == set(PRESETS)
    both = ARCHITECTURES["rehrseg_seg_uasr"]
    assert both.tasks == ("seg", "sr_uncertainty") and both.dims == 3 and both.paper == "rehrseg.txt"
    for preset in PRESETS:  # the pair is exactly the two networks' presets
        assert both.presets[preset] == {"segmenter": seg.presets[preset], "teacher": sr.presets[preset]}


def test_segmenter_with_uasr_teacher_at_inference():
    """``rehrseg_seg_uasr``: the segmenter's outputs unchanged, plus the teacher's U computed on the
    [-1, 1]-rescaled image with the segmenter's own one-hot LR segmentation as the annotation."""
    torch.manual_seed(0)
    net = build("rehrseg_seg_uasr", "tiny", segmenter={**ARCHITECTURES["rehrseg_seg"].presets["tiny"],
                                                       "num_classes": 3},
                teacher={**ARCHITECTURES["rehrseg_sr"].presets["tiny"], "num_classes": 3}).eval()
    x = torch.rand(1, 1, *LR_SHAPE)
    with torch.no_grad():
        out = net(x)
        seg = net.segmenter(x)
        one_hot = F.one_hot(seg["seg_lr"].argmax(1), 3).movedim(-1, 1).float()
        teacher = net.teacher(x * 2 - 1, one_hot)
    X, Y, Z = LR_SHAPE
    assert out["seg"].shape == (1, 3, X, Y, 4 * Z) and out["sr_uncertainty"].shape == (1, 1, X, Y, 4 * Z)
    assert torch.equal(out["seg"], seg["seg"]) and torch.equal(out["seg_lr"], seg["seg_lr"])
    assert torch.allclose(out["sr_uncertainty"], teacher["sr_uncertainty"])
    assert (out["sr_uncertainty"] > 0).all() and (out["sr_uncertainty"] < 1).all()
    net.select_heads({"seg"})  # no uncertainty wanted: the teacher does not run
    with torch.no_grad():
        assert set(net(x)) == {"seg", "seg_lr"}
    net.select_heads(None)
    with torch.no_grad():
        assert "sr_uncertainty" in net(x)
    with pytest.raises(ValueError, match="same thick-slice axis"):
        build("rehrseg_seg_uasr", "tiny", teacher={**ARCHITECTURES["rehrseg_sr"].presets["tiny"], "scale": 2})
    with pytest.raises(ValueError, match="must agree"):
        build("rehrseg_seg_uasr", "tiny", teacher={**ARCHITECTURES["rehrseg_sr"].presets["tiny"], "num_classes": 3})


@pytest.mark.parametrize("preset", PRESETS)
def test_sr_shapes_and_gradients(preset):
    torch.manual_seed(0)
    model = build("rehrseg_sr", preset)
    image, labels = _sr_inputs()
    out = model(image, labels)
    x, y, z = LR_SHAPE
    c0 = ARCHITECTURES["rehrseg_sr"].presets[preset]["features"][0]
    assert out["sr"].shape == (1, 1, x, y, 4 * z)
    assert out["seg"].shape == (1, 2, x, y, 4 * z)
    assert out["sr_uncertainty"].shape == (1, 1, x, y, 4 * z)
    assert out["attention"].shape == (1, 4, x, y, 4 * z)
    assert out["features"].shape == (1, c0, x, y, z)
    assert out["sr"].abs().max() <= 1.0
    u = out["sr_uncertainty"]
    assert (u > 0).all() and (u < 1).all()
    assert torch.allclose(out["attention"].sum(1), torch.ones(1, x, y, 4 * z), atol=1e-5)
    loss_fn = REHRSegSRLoss()
    loss_fn.uncertainty_enabled = True
    target = torch.rand(1, 1, x, y, 4 * z) * 2 - 1
    hr_labels = torch.randint(0, 2, (1, 1, x, y, 4 * z))
    loss_fn(out, target, hr_labels)["loss"].backward()
    _assert_all_grads([model])


@pytest.mark.parametrize("preset", PRESETS)
def test_seg_shapes_and_gradients(preset):
    torch.manual_seed(0)
    model = build("rehrseg_seg", preset)
    image, labels = _sr_inputs()
    out = model(image)
    x, y, z = LR_SHAPE
    c0 = ARCHITECTURES["rehrseg_seg"].presets[preset]["features"][0]
    assert out["seg_lr"].shape == (1, 2, x, y, z)
    assert out["seg"].shape == (1, 2, x, y, 4 * z)
    assert out["features"].shape == (1, c0, x, y, z)
    teacher = torch.randn(1, 16, x, y, z)
    loss_fn = REHRSegSegmentationLoss(student_channels=c0, teacher_channels=16)
    hr_labels = torch.randint(0, 2, (1, 1, x, y, 4 * z))
    loss = loss_fn(out, labels, hr_labels, uncertainty=torch.rand(1, 1, x, y, z), teacher_features=teacher)
    loss["loss"].backward()
    _assert_all_grads([model, loss_fn])


def test_other_axes_odd_factor_and_per_axis_scale():
    torch.manual_seed(0)
    sr = build("rehrseg_sr", "tiny", slice_axis=0, scale=3, num_classes=3)
    image, labels = _sr_inputs((3, 5, 7), classes=3)
    out = sr(image, labels)
    assert out["sr"].shape == (1, 1, 9, 5, 7) and out["seg"].shape == (1, 3, 9, 5, 7)
    assert out["features"].shape == (1, 8, 3, 5, 7)
    one_slice = sr(image[:, :, :1], labels[:, :, :1])  # a single LR slice still gives R HR slices
    assert one_slice["sr"].shape == (1, 1, 3, 5, 7)
    seg = build("rehrseg_seg", "tiny", scale=(2, 3, 1), hr_interpolation="nearest")
    out = seg(torch.randn(2, 1, 5, 7, 3))
    assert out["seg_lr"].shape == (2, 2, 5, 7, 3) and out["seg"].shape == (2, 2, 10, 21, 3)


def test_sr_windows_are_stitched_on_the_subdivided_grid():
    """Window g (slices g-1..g+2) gives HR slices 4g+2..4g+5 (R=4); slice i's feature: window i, frame 1."""
    torch.manual_seed(0)
    model: REHRSegSR = build("rehrseg_sr", "tiny").eval()
    image, labels = _sr_inputs((8, 8, 4))
    out = model(image, labels)
    frames = model._frames(image, labels)  # (1, C, Z, X, Y)
    window = frames[:, :, [0, 0, 1, 2]]  # g = 0: slice -1 is the replicated slice 0
    features = model.backbone(window)
    head = model.head(features)
    assert torch.allclose(out["sr"][..., 2:6], head["image"].permute(0, 1, 3, 4, 2), atol=1e-6)
    assert torch.allclose(
        out["sr_uncertainty"][..., 2:6], head["uncertainty"].permute(0, 1, 3, 4, 2), atol=1e-6
    )
    assert torch.allclose(out["features"][..., 0], features[:, :, 1], atol=1e-6)
    chunked = build("rehrseg_sr", "tiny", windows_per_pass=2)
    chunked.load_state_dict(model.state_dict())
    assert torch.allclose(chunked.eval()(image, labels)["seg"], out["seg"], atol=1e-6)


def test_nnunet_plan_matches_nnunet_for_4x_anisotropy():
    kernels, strides = nnunet_plan((1, 1, 4), 6)
    assert strides == [(1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert kernels == [(3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)]


@pytest.mark.parametrize("name", ("rehrseg_sr", "rehrseg_seg"))
@pytest.mark.parametrize("preset", PRESETS)
def test_determinism(name, preset):
    image, labels = _sr_inputs()
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build(name, preset).eval()
        with torch.no_grad():
            outputs.append(model(image, labels) if name == "rehrseg_sr" else model(image))
    for key in outputs[0]:
        assert torch.equal(outputs[0][key], outputs[1][key]), key


@pytest.mark.parametrize("name", ("rehrseg_sr", "rehrseg_seg"))
@pytest.mark.parametrize("preset", PRESETS)
def test_parameter_counts(name, preset):
    count = _params(build(name, preset))
    assert count == PARAMS[(name, preset)]
    if preset == "tiny":
        assert count < 1_000_000


def test_flavr_backbone_matches_flavr_paper_size():
    torch.manual_seed(0)
    backbone = build("rehrseg_sr", "base").backbone
    assert abs(_params(backbone) - FLAVR_PAPER_PARAMS) / FLAVR_PAPER_PARAMS < 0.15


# ---------------------------------------------------------------- losses, hand-computed values
LOGITS = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]]).T.reshape(1, 2, 2, 1, 1)  # p = .25/.75
LABELS = torch.tensor([1, 0]).reshape(1, 1, 2, 1, 1)  # each voxel's true class has p = 0.75


def test_uncertainty_aware_l1_eq6():
    pred = torch.tensor([0.5, -0.5]).reshape(1, 1, 2, 1, 1)
    u = torch.tensor([0.5, 0.25]).reshape(1, 1, 2, 1, 1)
    expected = ((0.5 / 0.5 + math.log(0.5)) + (0.5 / 0.25 + math.log(0.25))) / 2  # 0.460279
    assert UncertaintyAwareL1Loss()(pred, torch.zeros_like(pred), u).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_sr_loss_value_and_schedule():
    loss = REHRSegSRLoss(total_iterations=150_000, uncertainty_iterations=20_000)
    assert loss.set_iteration(129_999) is False and loss.set_iteration(130_000) is True
    loss.set_iteration(0)
    pred = torch.tensor([0.5, -0.5]).reshape(1, 1, 2, 1, 1)
    outputs = {"sr": pred, "seg": LOGITS, "sr_uncertainty": torch.full_like(pred, 0.5)}
    # L1 = 0.5; CE = -ln 0.75; Dice per class = 1 - 2*0.75 / (1 + 1) = 0.25
    expected = 0.5 + (-math.log(0.75)) + 0.25
    terms = loss(outputs, torch.zeros_like(pred), LABELS)
    assert terms["loss"].item() == pytest.approx(expected, abs=1e-4)
    loss.set_iteration(149_999)
    with_u = loss(outputs, torch.zeros_like(pred), LABELS)["image"]
    assert with_u.item() == pytest.approx(0.5 / 0.5 + math.log(0.5), abs=1e-6)


def test_normalize_and_decimate():
    u = torch.tensor([0.2, 0.4, 0.6]).reshape(1, 1, 1, 1, 3)
    assert torch.allclose(normalize_uncertainty(u).flatten(), torch.tensor([0.0, 0.5, 1.0]))
    v = torch.arange(8.0).reshape(1, 1, 1, 1, 8)
    assert decimate_slices(v, 4, axis=2, offset=1).flatten().tolist() == [1.0, 5.0]


def test_uncertainty_weighted_ce_eq7():
    u = torch.tensor([0.1, 0.3]).reshape(1, 1, 2, 1, 1)  # normalised -> [0, 1], weights [1, 0]
    value = UncertaintyWeightedCELoss()(LOGITS, LABELS, u)
    assert value.item() == pytest.approx(-math.log(0.75) / 2, abs=1e-6)


def test_affinity_correlation_eq9_hand_value():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 2, 1, 1)  # nodes [1,0], [0,1]
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]]).T.reshape(1, 2, 2, 1, 1)  # nodes [1,0], [1,1]
    # a_sr = I, a_seg off-diagonal = 1/sqrt2: sum of squares = 2 * 0.5 = 1, divided by n = 2
    assert AffinityCorrelationLoss((1, 1, 1))(student, teacher).item() == pytest.approx(0.5, abs=1e-6)
    # SKD-style normalisation divides by n^2 = 4 instead of n = 2
    assert AffinityCorrelationLoss((1, 1, 1), "pairs")(student, teacher).item() == pytest.approx(
        0.25, abs=1e-6
    )
    # granularity 2 along X averages the two voxels into one node: a single graph, zero loss
    assert AffinityCorrelationLoss((2, 1, 1))(student, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_affinity_correlation_equals_explicit_graph_on_odd_sizes():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 3, 5, 3, 3, generator=g), torch.randn(2, 4, 5, 3, 3, generator=g)

    def graph(f):
        p = F.avg_pool3d(f, (2, 2, 1), (2, 2, 1), ceil_mode=True).flatten(2)
        p = F.normalize(p, dim=1)
        return p.transpose(1, 2) @ p

    explicit = ((graph(teacher) - graph(student)) ** 2).sum(dim=(1, 2)).mean() / (3 * 2 * 3)
    assert AffinityCorrelationLoss((2, 2, 1))(student, teacher).item() == pytest.approx(
        explicit.item(), rel=1e-5
    )


def test_spatial_cosine_eq10():
    loss = SpatialCosineLoss(2, 2)
    with torch.no_grad():
        loss.adaptor.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1, 1))
        loss.adaptor.bias.zero_()
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 2, 1, 1)
    teacher = torch.tensor([[1.0, 1.0], [0.0, -1.0]]).T.reshape(1, 2, 2, 1, 1)
    expected = ((1 - 1 / math.sqrt(2)) + 2.0) / 2
    assert loss(student, teacher).item() == pytest.approx(expected, abs=1e-6)


def test_segmentation_loss_eq11_composition():
    torch.manual_seed(0)
    loss = REHRSegSegmentationLoss(2, 2, distillation_weight=1.0)
    outputs = {"seg_lr": LOGITS, "seg": LOGITS, "features": torch.randn(1, 2, 2, 1, 1)}
    plain = loss(outputs, LABELS, LABELS)
    assert set(plain) == {"loss", "seg_lr", "seg_hr"}
    assert plain["seg_lr"].item() == pytest.approx(-math.log(0.75), abs=1e-6)
    assert plain["seg_hr"].item() == pytest.approx(-math.log(0.75) + 0.25, abs=1e-4)
    full = loss(
        outputs,
        LABELS,
        LABELS,
        uncertainty=torch.tensor([0.1, 0.3]).reshape(1, 1, 2, 1, 1),
        teacher_features=torch.randn(1, 2, 2, 1, 1),
    )
    expected = full["seg_lr"] + full["seg_hr"] + full["correlation"] + full["spatial"]
    assert full["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert full["seg_lr"].item() == pytest.approx(-math.log(0.75) / 2, abs=1e-6)


# ---------------------------------------------------------------- overfitting one example
def _overfit(step_fn, params, steps=300, lr=1e-2):
    optimizer = torch.optim.Adam(params, lr=lr)
    first = last = None
    for _ in range(steps):
        optimizer.zero_grad()
        loss = step_fn()
        loss.backward()
        optimizer.step()
        first = loss.item() if first is None else first
        last = loss.item()
        if last <= 0.1 * first:
            break
    return first, last


def test_tiny_sr_overfits_one_example():
    torch.manual_seed(0)
    model = build("rehrseg_sr", "tiny")
    image, labels = _sr_inputs((8, 8, 3))
    zz = torch.linspace(-1, 1, 12)
    xx = torch.linspace(-1, 1, 8)
    target = (0.6 * torch.sin(2 * xx)[:, None, None] * torch.cos(zz)[None, None, :]).expand(8, 8, 12)[
        None, None
    ]
    hr_labels = (target > 0.1).long()
    loss_fn = REHRSegSRLoss()
    first, last = _overfit(
        lambda: loss_fn(model(image, labels), target, hr_labels)["loss"], model.parameters()
    )
    assert last <= 0.1 * first, (first, last)


def test_tiny_seg_overfits_one_example():
    torch.manual_seed(0)
    model = build("rehrseg_seg", "tiny")
    image, labels = _sr_inputs((8, 8, 3))
    hr_labels = labels.repeat_interleave(4, dim=-1)
    loss_fn = REHRSegSegmentationLoss(student_channels=8, teacher_channels=8)
    uncertainty = torch.rand(1, 1, 8, 8, 3)
    teacher = torch.randn(1, 8, 8, 8, 3)
    params = list(model.parameters()) + list(loss_fn.parameters())

    def step():
        return loss_fn(model(image), labels, hr_labels, uncertainty, teacher)["loss"]

    first, last = _overfit(step, params)
    assert last <= 0.1 * first, (first, last)
