"""UNETR's ViT encoder as a global-context feature extractor, with the organ/region pretext head.

Sec. 3.2 / Appendix B of ``cnn-vit-disentangled-sr.txt``: the ViT of UNETR (ViT-B/16: K=768,
L=12, 12 heads, learnable 1D positional embedding, pre-norm MSA/MLP blocks, Eq. 1-2) is
fine-tuned with a pretext task: "We remove the pre-trained prediction head and attach a
zero-initialized D x K feedforward layer ... We define a pre-text task to identify the primary
organ in the images, which is akin to a classification problem involving K classes", trained with
cross entropy (Sec. 4.1).  The frozen extractor then gives ``f_ViT`` for ``L_ViT`` (Eq. 8).

We use MONAI's ``ViT`` (the UNETR encoder) in 2D (the paper's SR works on 2D slices) with its
class token + linear head, zero-initialised, and train from scratch on our data (no downloaded
weights).  The learned positional embedding fixes the token grid, so inputs are bilinearly
resized to ``img_size``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import ViT


def slice_region_labels(slice_index: torch.Tensor | int, num_slices: int, num_classes: int) -> torch.Tensor:
    """Pretext label for single-organ data: which of ``num_classes`` equal slabs a slice lies in.

    The paper's pretext target is the primary organ of the image.  Our training volumes are mostly
    one organ (brain), where that label is constant; the anatomical region along the slice axis
    (e.g. vertex ... skull base) is the analogous "which part of the body" label.  Multi-organ data
    can pass organ labels directly instead.
    """
    index = torch.as_tensor(slice_index, dtype=torch.long)
    if num_slices < 1 or num_classes < 1:
        raise ValueError("num_slices and num_classes must be positive")
    if (index < 0).any() or (index >= num_slices).any():
        raise ValueError(f"slice index out of range [0, {num_slices})")
    return torch.div(index * num_classes, num_slices, rounding_mode="floor")


class ViTFeatureExtractor(nn.Module):
    """MONAI ``ViT`` + zero-initialised pretext classifier; ``forward`` gives logits and tokens.

    Returns ``{"logits": (B, num_classes), "features": (B, N, hidden_size)}`` where ``features``
    are the layer-normalised patch tokens of the last transformer block (the class token is
    excluded) -- the ``f_ViT`` compared by Eq. 8.
    """

    def __init__(
        self,
        in_channels: int = 1,
        img_size: int = 256,
        patch_size: int = 16,
        hidden_size: int = 768,
        mlp_dim: int = 3072,
        num_layers: int = 12,
        num_heads: int = 12,
        num_classes: int = 8,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.img_size = int(img_size)
        self.vit = ViT(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=True,
            num_classes=num_classes,
            dropout_rate=dropout_rate,
            spatial_dims=2,
            post_activation=None,
        )
        # MONAI's TransformerBlock always allocates ``norm_cross_attn`` but only calls it with cross
        # attention, which the ViT never uses: drop those dead LayerNorms so every parameter trains.
        for block in self.vit.blocks:
            if not block.with_cross_attention:
                block.norm_cross_attn = nn.Identity()
        # "attach a zero-initialized D x K feedforward layer" (Sec. 3.2, after Dosovitskiy et al.).
        nn.init.zeros_(self.vit.classification_head.weight)
        nn.init.zeros_(self.vit.classification_head.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        logits, hidden_states = self.vit(x)
        tokens = self.vit.norm(hidden_states[-1])[:, 1:]
        return {"logits": logits, "features": tokens}


__all__ = ["ViTFeatureExtractor", "slice_region_labels"]
