"""Losses of the CNN + ViT disentangled super-resolution paper (``cnn-vit-disentangled-sr.txt``).

Three training stages, each with its own loss:

1. ViT pretext fine-tuning (Sec. 3.2, 4.1): :func:`vit_pretext_loss` (cross entropy).
2. Swapped autoencoder (Sec. 3.3, Eqs. 3-6 / 10-13): :func:`disentanglement_loss`
   ``L_Disent = L_rec + 0.7 L_adv + 0.7 L_swap``, plus :func:`discriminator_loss` for ``D``.
3. SR generator (Eqs. 7-9, 21): :class:`DisentangledSRLoss`
   ``L_SR = L_adv + l1 L_ViT + l2 L_str + l3 L_tex`` with ``l1 = l2 = 1``, ``l3 = 0.9``.

``-log D(.)`` is computed from discriminator logits as ``softplus(-logit)`` (identical value,
numerically stable).  Expectations are batch means; ``||.||_1`` in ``L_rec`` is the mean absolute
error per pixel (a constant rescaling of the sum).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

DISENT_ADV_WEIGHT = 0.7  # Eq. 6
DISENT_SWAP_WEIGHT = 0.7  # Eq. 6
LAMBDA_VIT = 1.0  # Sec. 4.1, Eq. 9
LAMBDA_STR = 1.0
LAMBDA_TEX = 0.9


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """``E[-log D(G(.))]`` (Eqs. 4, 5, 21), the non-saturating GAN loss of the generator side."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Standard GAN loss of ``D``: ``E[-log D(real)] + E[-log(1 - D(fake))]``.

    The paper states only the generator side; ``D`` needs its counterpart to be trained.
    Pass ``fake_logits`` computed on detached generator outputs.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``1 - <a, b>`` with ``<.,.>`` the cosine similarity of each sample's flattened features,
    averaged over the batch (Eqs. 7-8)."""
    if a.shape != b.shape:
        raise ValueError(f"feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return (1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=eps)).mean()


def reconstruction_loss(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """``L_rec = E ||x - G(E(x))||_1`` (Eq. 3), as a per-pixel mean."""
    return (image - reconstruction).abs().mean()


def disentanglement_loss(
    image: torch.Tensor,
    reconstruction: torch.Tensor,
    reconstruction_logits: torch.Tensor,
    swapped_logits: torch.Tensor,
    adv_weight: float = DISENT_ADV_WEIGHT,
    swap_weight: float = DISENT_SWAP_WEIGHT,
) -> dict[str, torch.Tensor]:
    """``L_Disent = L_rec + 0.7 L_adv + 0.7 L_swap`` (Eq. 6) for the autoencoder's ``E`` and ``G``.

    ``reconstruction_logits = D(G(E(x1)))`` and ``swapped_logits = D(G(z_s^1, z_t^2))``.
    Returns the total under ``"loss"`` and each term for logging.
    """
    rec = reconstruction_loss(image, reconstruction)
    adv = generator_adversarial_loss(reconstruction_logits)
    swap = generator_adversarial_loss(swapped_logits)
    return {"loss": rec + adv_weight * adv + swap_weight * swap, "rec": rec, "adv": adv, "swap": swap}


def cross_resolution_swap_loss(autoencoder: nn.Module, lr_patch: torch.Tensor, hr_patch: torch.Tensor
                               ) -> torch.Tensor:
    """Sec. 3.3's LR/HR swap property as an L1 penalty (optional autoencoder term, weight 0 in Eq. 6).

    "Swapping z_t^LR with z_t^HR and combining with z_s^LR should produce an image very similar to
    the LR image. Similarly, z_t^LR and z_s^HR combine to give a fairly similar representation of
    the higher resolution image."  ``lr_patch``/``hr_patch`` come from ``center_patch_pair`` and
    are resized to the autoencoder's input size so both codes live on the same grid.
    """
    size = (autoencoder.image_size, autoencoder.image_size)
    lr_in, hr_in = _resize(lr_patch, size), _resize(hr_patch, size)
    s_lr, t_lr = autoencoder.encode(lr_in)
    s_hr, t_hr = autoencoder.encode(hr_in)
    lr_like = autoencoder.decode(s_lr, t_hr, size)
    hr_like = autoencoder.decode(s_hr, t_lr, size)
    return reconstruction_loss(lr_in, lr_like) + reconstruction_loss(hr_in, hr_like)


def vit_pretext_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy of the organ/region pretext classification (Sec. 3.2, 4.1)."""
    return F.cross_entropy(logits, labels)


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def freeze(module: nn.Module) -> nn.Module:
    """Pre-trained feature networks are only used to extract features (Appendix D): no updates,
    eval mode; gradients still flow *through* them to the SR image."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class DisentangledSRLoss:
    """Generator loss ``L_SR = L_adv + l1 L_ViT + l2 L_str + l3 L_tex`` (Eq. 9).

    ``L_str``/``L_tex`` (Eq. 7) compare the swapped-AE codes, and ``L_ViT`` (Eq. 8) the ViT tokens,
    of the LR input ``x`` and the generated image ``y``.  Both images are resized to each feature
    network's input size first so their codes lie on the same grid (the paper encodes fixed-size
    centre patches, Sec. 3.3).  ``pixel_weight`` adds an optional ``L1(y, hr)`` term for training
    stability -- not in the paper, 0 by default.  The feature networks are frozen on construction
    (``freeze_networks=True``) and are not registered as sub-modules of any trainable model.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        vit: nn.Module,
        lambda_vit: float = LAMBDA_VIT,
        lambda_str: float = LAMBDA_STR,
        lambda_tex: float = LAMBDA_TEX,
        adv_weight: float = 1.0,
        pixel_weight: float = 0.0,
        freeze_networks: bool = True,
    ):
        self.autoencoder = freeze(autoencoder) if freeze_networks else autoencoder
        self.vit = freeze(vit) if freeze_networks else vit
        self.lambda_vit, self.lambda_str, self.lambda_tex = lambda_vit, lambda_str, lambda_tex
        self.adv_weight, self.pixel_weight = adv_weight, pixel_weight

    def feature_terms(self, lr: torch.Tensor, sr: torch.Tensor) -> dict[str, torch.Tensor]:
        """``L_str``, ``L_tex`` (Eq. 7) and ``L_ViT`` (Eq. 8) between LR input and SR output."""
        ae_size = (self.autoencoder.image_size, self.autoencoder.image_size)
        s_x, t_x = self.autoencoder.encode(_resize(lr, ae_size))
        s_y, t_y = self.autoencoder.encode(_resize(sr, ae_size))
        f_x = self.vit(lr)["features"]
        f_y = self.vit(sr)["features"]
        return {
            "str": cosine_distance(s_x, s_y),
            "tex": cosine_distance(t_x, t_y),
            "vit": cosine_distance(f_x, f_y),
        }

    def __call__(
        self,
        lr: torch.Tensor,
        sr: torch.Tensor,
        fake_logits: torch.Tensor | None = None,
        hr: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Total under ``"loss"`` plus each term.  ``fake_logits = D(sr)`` (Eq. 21); when it is
        ``None`` the adversarial term is left out (e.g. generator warm-up).  ``hr`` is needed only
        when ``pixel_weight > 0``."""
        terms = self.feature_terms(lr, sr)
        total = (self.lambda_vit * terms["vit"] + self.lambda_str * terms["str"]
                 + self.lambda_tex * terms["tex"])
        if fake_logits is not None:
            terms["adv"] = generator_adversarial_loss(fake_logits)
            total = total + self.adv_weight * terms["adv"]
        if self.pixel_weight > 0:
            if hr is None:
                raise ValueError("pixel_weight > 0 needs the HR target")
            terms["pixel"] = (sr - hr).abs().mean()
            total = total + self.pixel_weight * terms["pixel"]
        terms["loss"] = total
        return terms


__all__ = [
    "DISENT_ADV_WEIGHT",
    "DISENT_SWAP_WEIGHT",
    "LAMBDA_STR",
    "LAMBDA_TEX",
    "LAMBDA_VIT",
    "DisentangledSRLoss",
    "cosine_distance",
    "cross_resolution_swap_loss",
    "discriminator_loss",
    "disentanglement_loss",
    "freeze",
    "generator_adversarial_loss",
    "reconstruction_loss",
    "vit_pretext_loss",
]
