"""CNN + ViT SR with disentangled structure/texture losses: three stages (paper Sec. 3.1-3.3, 4.1).

``stages[*].loss.objective``:

* ``vit`` -- the ViT learns the region pretext task (cross entropy; label = slab of the plane's
  position in its case, ``slice_region_labels``' brain-only rule);
* ``autoencoder`` -- the swapped autoencoder, ``L_Disent`` (Eq. 6) against its discriminator;
* ``sr`` -- the generator, ``L_SR`` (Eq. 9) with the AE and ViT frozen, against the SR discriminator.

GAN stages update generator and discriminator in the same optimizer step (simultaneous gradient
descent): the generator's adversarial term sees the discriminator through detached weights, the
discriminator's loss sees detached fakes, so each network only receives its own gradient and one
optimizer (and one checkpointed state) serves both.

Multi-process (DDP): each network a stage trains has its own DDP wrapper (generator and
discriminator separately, as usual for GANs); the discriminator runs twice (real, fake) before the
one ``backward``, and the generator's adversarial term calls the unwrapped discriminator with
detached weights, so no DDP hook sees a gradient it does not average.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from JointSRSegLib.losses.disentangled_sr import (
    DisentangledSRLoss,
    discriminator_loss,
    disentanglement_loss,
    vit_pretext_loss,
)
from JointSRSegLib.models.disentangled_sr import build_disentangled_training_modules
from training.tasks.base import as_parts
from training.tasks.sr2d import RandPlanesd, SR2DAdapter
from training.tasks.transforms import RecordShaped, SelectKeysd

OBJECTIVES = ("vit", "autoencoder", "sr")


def frozen_call(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its parameters detached: gradients reach ``x`` only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, {**params, **dict(module.named_buffers())}, (x,))


class DisentangledAdapter(SR2DAdapter):
    """``disentangled_sr``: the generator is what is exported; the other networks train it."""

    architectures = ("disentangled_sr",)

    def setup(self) -> None:
        if self.protocol not in ("sr", "inplane"):
            raise ValueError(f"disentangled_sr: data.protocol must be sr or inplane, not {self.protocol!r}")
        self.scale = (self.factor, self.factor) if self.protocol == "inplane" else (1, self.factor)
        channels = self.info.in_channels
        self.modules["net"] = self.build_network(in_channels=channels, out_channels=channels, scale=self.scale)
        parts = build_disentangled_training_modules(self.cfg["model"]["preset"], {
            "generator": {"in_channels": channels, "out_channels": channels, "scale": self.scale}})
        for name in ("autoencoder", "ae_discriminator", "sr_discriminator", "vit"):
            self.modules[name] = getattr(parts, name)
        self.objective = "sr"
        self.criterion = None

    def start_stage(self, stage: str, stage_options) -> None:
        options = {**self.loss_options, **dict(stage_options.get("loss") or {})}
        self.objective = options.get("objective", stage)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"stage {stage!r}: loss.objective must be one of {', '.join(OBJECTIVES)}")
        trainable = {"vit": ("vit",), "autoencoder": ("autoencoder", "ae_discriminator"),
                     "sr": ("net", "sr_discriminator")}[self.objective]
        for name, module in self.modules.items():
            module.requires_grad_(name in trainable)
        if self.objective == "sr":
            self.criterion = DisentangledSRLoss(self.modules["autoencoder"], self.modules["vit"],
                                                pixel_weight=float(options.get("pixel_weight", 0.0)))

    def stage_parameters(self, stage: str) -> list:
        return [p for p in self.modules.parameters() if p.requires_grad]

    def train_transforms(self, stage: str) -> list:
        return [RecordShaped(), *self.patch_transforms(self.cfg["data"]["patch_size"]),
                RandPlanesd(int(self.loss_options.get("planes_per_patch", 4)), self.protocol),
                SelectKeysd(["lr_planes", "hr_planes", "plane_position"])]

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        lr, hr = batch["lr_planes"].flatten(0, 1), batch["hr_planes"].flatten(0, 1)
        if self.objective == "vit":
            classes = self.modules["vit"].vit.classification_head.out_features
            labels = (batch["plane_position"].flatten() * classes).long().clamp(0, classes - 1)
            loss = vit_pretext_loss(self.forward_module("vit")(hr)["logits"], labels)
            return loss, {"pretext_ce": float(loss.detach())}
        if self.objective == "autoencoder":
            disc, train_disc = self.modules["ae_discriminator"], self.forward_module("ae_discriminator")
            out = self.forward_module("autoencoder")(hr, torch.roll(hr, 1, 0))
            terms = disentanglement_loss(hr, out["reconstruction"], frozen_call(disc, out["reconstruction"]),
                                         frozen_call(disc, out["swapped"]))
            d_loss = discriminator_loss(train_disc(hr), train_disc(out["swapped"].detach()))
            return terms["loss"] + d_loss, {**as_parts(terms), "discriminator": float(d_loss.detach())}
        sr = self.forward_module("net")(lr)["sr"]
        disc, train_disc = self.modules["sr_discriminator"], self.forward_module("sr_discriminator")
        terms = self.criterion(lr, sr, frozen_call(disc, sr), hr)
        d_loss = discriminator_loss(train_disc(hr), train_disc(sr.detach()))
        return terms["loss"] + d_loss, {**as_parts(terms), "discriminator": float(d_loss.detach())}
