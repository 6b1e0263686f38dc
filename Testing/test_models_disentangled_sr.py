"""Tests of the CNN + ViT disentangled SR networks and losses (cnn-vit-disentangled-sr.txt)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.networks.utils import pixelshuffle

from JointSRSegLib.losses.disentangled_sr import (
    DisentangledSRLoss,
    cosine_distance,
    cross_resolution_swap_loss,
    discriminator_loss,
    disentanglement_loss,
    generator_adversarial_loss,
    reconstruction_loss,
    vit_pretext_loss,
)
from JointSRSegLib.models import ARCHITECTURES, build
from JointSRSegLib.models.disentangled_autoencoder import SwappingAutoencoder, center_patch_pair
from JointSRSegLib.models.disentangled_discriminator import SRGANDiscriminator
from JointSRSegLib.models.disentangled_sr import (
    PRESETS,
    TRAINING_PRESETS,
    DisentangledSRGenerator,
    SubpixelUpsampleStage,
    build_disentangled_training_modules,
    pixel_shuffle_2d,
    upsampling_stages,
)
from JointSRSegLib.models.disentangled_vit import ViTFeatureExtractor, slice_region_labels

torch.set_num_threads(1)
ALL_PRESETS = ("tiny", "small", "base")
PAPER_VIT_PARAMS = 93.4e6  # Appendix D: fine-tuned UNETR, 93.4 M parameters


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _assert_all_grads(module: torch.nn.Module) -> None:
    for name, p in module.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        assert p.grad.abs().sum() > 0, f"all-zero gradient at {name}"


# --------------------------------------------------------------------------- registry / generator


def test_registry_entry():
    spec = ARCHITECTURES["disentangled_sr"]
    assert spec.tasks == ("sr",) and spec.dims == 2 and spec.paper == "cnn-vit-disentangled-sr.txt"
    assert set(spec.presets) == set(ALL_PRESETS)
    net = build("disentangled_sr", "tiny", scale=3)
    assert isinstance(net, DisentangledSRGenerator) and net.scale == (3, 3)
    assert net.jointsrseg_config["config"]["scale"] == 3
    assert spec.extra["training_builder"] is build_disentangled_training_modules


def test_upsampling_stages():
    assert upsampling_stages(1) == []
    assert upsampling_stages(2) == [(2, 2)]
    assert upsampling_stages(4) == [(2, 2), (2, 2)]
    assert upsampling_stages((1, 4)) == [(1, 2), (1, 2)]
    assert upsampling_stages((2, 3)) == [(2, 3)]
    assert upsampling_stages((1, 6)) == [(1, 2), (1, 3)]
    with pytest.raises(ValueError):
        upsampling_stages((0, 2))


def test_pixel_shuffle_maps_lr_pixel_to_its_hr_block():
    rh, rw, h, w = 2, 3, 3, 5
    x = torch.arange(rh * rw * h * w, dtype=torch.float32).reshape(1, rh * rw, h, w)
    y = pixel_shuffle_2d(x, (rh, rw))
    assert y.shape == (1, 1, h * rh, w * rw)
    for i in range(h):
        for j in range(w):
            for a in range(rh):
                for b in range(rw):
                    assert y[0, 0, i * rh + a, j * rw + b] == x[0, a * rw + b, i, j]
    iso = torch.randn(2, 3 * 4, 5, 7)  # equal factors: same as torch and MONAI
    assert torch.equal(pixel_shuffle_2d(iso, (2, 2)), F.pixel_shuffle(iso, 2))
    assert torch.equal(pixel_shuffle_2d(iso, (2, 2)), pixelshuffle(iso, 2, 2))


def test_subpixel_stage_icnr_starts_as_nearest_neighbour():
    stage = SubpixelUpsampleStage(4, (1, 3))
    y = stage(torch.randn(1, 4, 5, 7))
    assert y.shape == (1, 4, 5, 21)
    blocks = y.reshape(1, 4, 5, 7, 3)  # HR columns 3j..3j+2 come from LR column j
    assert torch.allclose(blocks, blocks[..., :1].expand_as(blocks))
    assert y.abs().sum() > 0


@pytest.mark.parametrize(
    "scale,expected", [(2, (10, 14)), ((1, 3), (5, 21)), (4, (20, 28)), ((3, 2), (15, 14))]
)
def test_generator_odd_input_exact_sizes(scale, expected):
    net = build("disentangled_sr", "tiny", scale=scale)
    out = net(torch.randn(2, 1, 5, 7))
    assert set(out) == {"sr"}
    assert out["sr"].shape == (2, 1, *expected)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_generator_preset_shapes_and_every_parameter_gets_gradient(preset):
    net = build("disentangled_sr", preset)
    x = torch.randn(2, 1, 5, 7)
    sr = net(x)["sr"]
    assert sr.shape == (2, 1, 10, 14)
    (sr * torch.randn_like(sr)).sum().backward()
    _assert_all_grads(net)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_generator_determinism(preset):
    x = torch.randn(1, 1, 5, 7)
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = build("disentangled_sr", preset)
        outs.append(net(x)["sr"])
    assert torch.equal(outs[0], outs[1])


def test_generator_parameter_counts():
    counts = {p: _n_params(build("disentangled_sr", p)) for p in ALL_PRESETS}
    assert counts["tiny"] < 1_000_000
    assert counts["tiny"] < counts["small"] < counts["base"]
    # Appendix E: 64 feature maps, 3x3 filters; 16 SRGAN residual blocks of two convs + 2 BN each.
    f = PRESETS["base"]["features"]
    conv = 9 * f * f + f
    block = 2 * (conv + 2 * f)
    expected = (9 * f + f) + 16 * block + (conv + 2 * f) + (9 * f * 4 * f + 4 * f) + (9 * f + 1)
    assert counts["base"] == expected


def test_tiny_generator_overfits_one_example():
    torch.manual_seed(0)
    modules = build_disentangled_training_modules("tiny")
    loss_fn = DisentangledSRLoss(modules.autoencoder, modules.vit, pixel_weight=1.0)
    net = modules.generator
    hr = torch.rand(1, 1, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = last = None
    for _ in range(300):
        loss = loss_fn(lr, net(lr)["sr"], hr=hr)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last <= 0.1 * first, (first, last)


# --------------------------------------------------------------------------- swapped autoencoder


def test_center_patch_pair_is_co_located():
    lr = torch.arange(7 * 9, dtype=torch.float32).reshape(1, 1, 7, 9)
    hr = F.interpolate(lr, scale_factor=2, mode="nearest")
    lr_p, hr_p = center_patch_pair(lr, hr, size=3, scale=2)
    assert torch.equal(lr_p, lr[..., 2:5, 3:6])
    assert torch.equal(hr_p, hr[..., 4:10, 6:12])
    assert torch.equal(F.interpolate(lr_p, scale_factor=2, mode="nearest"), hr_p)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_autoencoder_shapes_and_gradients(preset):
    cfg = TRAINING_PRESETS[preset]["autoencoder"]
    ae = SwappingAutoencoder(**cfg)
    disc = SRGANDiscriminator(**TRAINING_PRESETS[preset]["discriminator"])
    x = torch.randn(2, 1, 17, 19)
    out = ae(x)
    assert out["reconstruction"].shape == x.shape and out["swapped"].shape == x.shape
    assert out["structure"].shape == (2, cfg["structure_channels"], 4, 4)
    assert out["texture"].shape == (2, cfg["texture_dim"])
    # The swap really uses the other image's texture: differs from the reconstruction.
    assert not torch.allclose(out["reconstruction"], out["swapped"])
    losses = disentanglement_loss(x, out["reconstruction"], disc(out["reconstruction"]), disc(out["swapped"]))
    losses["loss"].backward()
    _assert_all_grads(ae)


def test_autoencoder_paper_code_sizes():
    ae = SwappingAutoencoder(**TRAINING_PRESETS["base"]["autoencoder"])
    with torch.no_grad():
        s, t = ae.encode(torch.randn(1, 1, 256, 256))
    assert s.shape == (1, 1, 64, 64) and t.shape == (1, 256)  # Sec. 4.1: z_str 64x64, |z_tex| 256


def test_autoencoder_swap_needs_two_images():
    ae = SwappingAutoencoder(**TRAINING_PRESETS["tiny"]["autoencoder"])
    with pytest.raises(ValueError):
        ae(torch.randn(1, 1, 16, 16))
    out = ae(torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16))
    assert out["swapped"].shape == (1, 1, 16, 16)


def test_cross_resolution_swap_loss_trains_autoencoder():
    ae = SwappingAutoencoder(**TRAINING_PRESETS["tiny"]["autoencoder"])
    lr, hr = center_patch_pair(torch.randn(2, 1, 12, 12), torch.randn(2, 1, 24, 24), size=8, scale=2)
    loss = cross_resolution_swap_loss(ae, lr, hr)
    assert loss.ndim == 0 and loss > 0
    loss.backward()
    _assert_all_grads(ae)


# --------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_discriminator_shapes_and_gradients(preset):
    disc = SRGANDiscriminator(**TRAINING_PRESETS[preset]["discriminator"])
    real, fake = torch.randn(2, 1, 17, 19), torch.randn(2, 1, 17, 19)
    real_logits, fake_logits = disc(real), disc(fake)
    assert real_logits.shape == (2, 1) and fake_logits.shape == (2, 1)
    discriminator_loss(real_logits, fake_logits).backward()
    _assert_all_grads(disc)


def test_base_discriminator_is_srgan():
    disc = SRGANDiscriminator(**TRAINING_PRESETS["base"]["discriminator"])
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2]
    bns = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 7  # no BN after the first conv (SRGAN)


# --------------------------------------------------------------------------- ViT extractor


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_vit_shapes_zero_head_pretext_and_gradients(preset):
    cfg = TRAINING_PRESETS[preset]["vit"]
    vit = ViTFeatureExtractor(**cfg)
    head = vit.vit.classification_head
    assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    x = torch.randn(2, 1, 19, 23)  # resized to img_size internally
    out = vit(x)
    n_tokens = (cfg["img_size"] // cfg["patch_size"]) ** 2
    assert out["logits"].shape == (2, cfg["num_classes"])
    assert out["features"].shape == (2, n_tokens, cfg["hidden_size"])
    labels = torch.tensor([0, cfg["num_classes"] - 1])
    loss = vit_pretext_loss(out["logits"], labels)
    assert loss.item() == pytest.approx(math.log(cfg["num_classes"]), abs=1e-6)  # zero head: uniform
    # One step moves the zero head; afterwards the pretext loss reaches every parameter.
    opt = torch.optim.SGD(vit.parameters(), lr=0.5)
    loss.backward()
    opt.step()
    opt.zero_grad()
    loss = vit_pretext_loss(vit(x)["logits"], labels)
    loss.backward()
    _assert_all_grads(vit)


def test_vit_base_is_unetr_vit_b16_and_matches_paper_size():
    cfg = TRAINING_PRESETS["base"]["vit"]
    assert (cfg["hidden_size"], cfg["num_layers"], cfg["num_heads"], cfg["patch_size"]) == (768, 12, 12, 16)
    with torch.device("meta"):  # 85 M parameters: count and shape-check without allocating
        vit = ViTFeatureExtractor(**cfg)
        out = vit(torch.empty(2, 1, 37, 41))
    assert out["logits"].shape == (2, cfg["num_classes"]) and out["features"].shape == (2, 256, 768)
    assert abs(_n_params(vit) - PAPER_VIT_PARAMS) / PAPER_VIT_PARAMS < 0.15


def test_vit_pretext_trains_on_region_labels():
    torch.manual_seed(0)
    vit = ViTFeatureExtractor(**TRAINING_PRESETS["tiny"]["vit"])
    x = torch.randn(4, 1, 32, 32)
    labels = slice_region_labels(torch.tensor([0, 10, 20, 30]), num_slices=40, num_classes=4)
    opt = torch.optim.AdamW(vit.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss = vit_pretext_loss(vit(x)["logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_slice_region_labels():
    labels = slice_region_labels(torch.tensor([0, 9, 10, 19, 20, 39]), num_slices=40, num_classes=4)
    assert labels.tolist() == [0, 0, 1, 1, 2, 3]
    with pytest.raises(ValueError):
        slice_region_labels(40, num_slices=40, num_classes=4)


# --------------------------------------------------------------------------- losses (hand-computed)


def test_generator_adversarial_loss_hand_value():
    logits = torch.tensor([[0.0], [math.log(3.0)]])  # D = 1/2, 3/4
    expected = (math.log(2.0) + math.log(4.0 / 3.0)) / 2
    assert generator_adversarial_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_discriminator_loss_hand_value():
    real, fake = torch.tensor([[math.log(3.0)]]), torch.tensor([[0.0]])  # D(real)=3/4, D(fake)=1/2
    expected = -math.log(0.75) - math.log(0.5)
    assert discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)


def test_cosine_distance_hand_value():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    expected = ((1 - 1 / math.sqrt(2)) + 2.0) / 2
    assert cosine_distance(a, b).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        cosine_distance(a, b[:, :1])


def test_disentanglement_loss_hand_value():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    rec = torch.tensor([[[[1.5, 2.0], [2.0, 4.0]]]])  # |diff| mean = (0.5 + 1) / 4
    losses = disentanglement_loss(x, rec, torch.tensor([[0.0]]), torch.tensor([[math.log(3.0)]]))
    assert losses["rec"].item() == pytest.approx(0.375)
    assert reconstruction_loss(x, rec).item() == pytest.approx(0.375)
    expected = 0.375 + 0.7 * math.log(2.0) + 0.7 * math.log(4.0 / 3.0)
    assert losses["loss"].item() == pytest.approx(expected, rel=1e-6)


def test_vit_pretext_loss_hand_value():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    assert vit_pretext_loss(logits, torch.tensor([1])).item() == pytest.approx(math.log(4.0 / 3.0), rel=1e-6)


def test_sr_loss_weights_terms_and_freezes_feature_networks():
    modules = build_disentangled_training_modules("tiny")
    loss_fn = DisentangledSRLoss(modules.autoencoder, modules.vit, pixel_weight=0.5)
    assert not any(p.requires_grad for p in modules.autoencoder.parameters())
    assert not any(p.requires_grad for p in modules.vit.parameters())
    assert not modules.autoencoder.training and not modules.vit.training
    lr = torch.rand(2, 1, 8, 8)
    hr = torch.rand(2, 1, 16, 16)
    sr = torch.rand(2, 1, 16, 16, requires_grad=True)
    fake_logits = torch.tensor([[0.0], [math.log(3.0)]])
    t = loss_fn(lr, sr, fake_logits, hr=hr)
    # Eq. 7 recomputed by hand from the encoder codes on the AE's input grid.
    s_x, t_x = modules.autoencoder.encode(F.interpolate(lr, size=(32, 32), mode="bilinear"))
    s_y, t_y = modules.autoencoder.encode(F.interpolate(sr, size=(32, 32), mode="bilinear"))
    assert t["str"].item() == pytest.approx(cosine_distance(s_x, s_y).item(), rel=1e-5)
    assert t["tex"].item() == pytest.approx(cosine_distance(t_x, t_y).item(), rel=1e-5)
    assert t["adv"].item() == pytest.approx((math.log(2.0) + math.log(4.0 / 3.0)) / 2, rel=1e-6)
    assert t["pixel"].item() == pytest.approx((sr - hr).abs().mean().item(), rel=1e-6)
    expected = t["adv"] + 1.0 * t["vit"] + 1.0 * t["str"] + 0.9 * t["tex"] + 0.5 * t["pixel"]
    assert t["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    t["loss"].backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_sr_feature_terms_vanish_for_identical_images():
    modules = build_disentangled_training_modules("tiny")
    loss_fn = DisentangledSRLoss(modules.autoencoder, modules.vit)
    img = torch.rand(2, 1, 16, 16)
    t = loss_fn(img, img.clone())
    assert set(t) == {"str", "tex", "vit", "loss"}  # no adversarial/pixel term when not asked for
    for key in ("str", "tex", "vit", "loss"):
        assert abs(t[key].item()) < 1e-5


def test_training_builder_overrides_and_determinism():
    cfg = {"generator": {"scale": (1, 2)}, "vit": {"num_classes": 3}}
    torch.manual_seed(7)
    a = build_disentangled_training_modules("tiny", cfg)
    torch.manual_seed(7)
    b = build_disentangled_training_modules("tiny", cfg)
    for name in ("generator", "autoencoder", "ae_discriminator", "sr_discriminator", "vit"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    x = torch.randn(2, 1, 16, 17)
    assert a.generator(x)["sr"].shape == (2, 1, 16, 34)
    assert a.vit(x)["logits"].shape == (2, 3)
    with pytest.raises(KeyError):
        build_disentangled_training_modules("tiny", {"decoder": {}})
