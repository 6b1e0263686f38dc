"""Swapped autoencoder that splits an image into a spatial structure code and a texture vector.

Sec. 3.3 / Appendix A of ``cnn-vit-disentangled-sr.txt`` (after Park et al., "Swapping
Autoencoder", ref. [162]).  Sec. 4.1 gives the size: "The encoder consists of 4 convolution
blocks followed by max pooling after each step. The decoder is also symmetrically designed.
3x3 convolution filters ... 64, 64, 32, 32 filters ... The input to the AE is 256 x 256 and
dimension of z_tex is 256, while z_str is 64 x 64."

A 64x64 ``z_str`` from a 256x256 input after four poolings means the structure code branches
off after the second pooling (1/4 resolution) while blocks 3-4 continue to 1/16 and are globally
pooled into the texture vector -- the same trunk/branch layout as Park et al.'s encoder.  The
decoder injects the texture vector into every block by AdaIN-style feature modulation (Park et
al. use StyleGAN2 modulated convolutions; the paper does not specify, see docs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

_LEAKY = ("leakyrelu", {"negative_slope": 0.2})


def center_patch_pair(lr: torch.Tensor, hr: torch.Tensor, size: int, scale: int | Sequence[int]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-located centre patches: ``n x n`` from the LR image, ``mn x mn`` from the HR image.

    Sec. 3.3: "Patches of size n x n are extracted around the center of the LR image and
    corresponding patches of size mn x mn are extracted from the center of the HR image, m being
    the upscaling factor. This ensures that the two patches show the same region of interest."
    The HR window starts at ``m * (LR start)`` so LR pixel ``i`` still covers HR ``m*i .. m*i+m-1``.
    """
    mh, mw = (scale, scale) if isinstance(scale, int) else tuple(scale)
    h, w = lr.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"patch size {size} larger than LR image {h}x{w}")
    top, left = (h - size) // 2, (w - size) // 2
    lr_patch = lr[..., top:top + size, left:left + size]
    hr_patch = hr[..., mh * top:mh * (top + size), mw * left:mw * (left + size)]
    if hr_patch.shape[-2:] != (mh * size, mw * size):
        raise ValueError(f"HR image {tuple(hr.shape[-2:])} too small for scale {(mh, mw)} of LR {h}x{w}")
    return lr_patch, hr_patch


class TextureModulation(nn.Module):
    """AdaIN-style modulation: instance-normalise features, then scale/shift them from ``z_tex``.

    Lets one global texture vector restyle a spatial structure code (Sec. 3.3's swap).
    ``1 + gamma`` keeps the block an identity-scaled map at initialisation.
    """

    def __init__(self, channels: int, texture_dim: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.affine = nn.Linear(texture_dim, 2 * channels)

    def forward(self, x: torch.Tensor, texture: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(texture)[..., None, None].chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class StructureTextureEncoder(nn.Module):
    """Encoder ``E``: 4 conv blocks, each followed by 2x2 max pooling (Sec. 4.1).

    Returns ``z_str`` (``structure_channels x H/4 x W/4``, taken after block 2) and ``z_tex``
    (a ``texture_dim`` vector from globally pooled block-4 features).
    """

    def __init__(self, in_channels: int, channels: Sequence[int], structure_channels: int, texture_dim: int):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("the encoder has exactly 4 conv blocks (Sec. 4.1)")
        c = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            [Convolution(2, c[i], c[i + 1], kernel_size=3, act=_LEAKY, norm=None) for i in range(4)]
        )
        self.pool = nn.MaxPool2d(2)
        self.to_structure = Convolution(2, c[2], structure_channels, kernel_size=1, conv_only=True)
        self.to_texture = nn.Linear(c[4], texture_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        for block in self.blocks[:2]:
            h = self.pool(block(h))
        structure = self.to_structure(h)
        for block in self.blocks[2:]:
            h = self.pool(block(h))
        texture = self.to_texture(h.mean(dim=(-2, -1)))
        return structure, texture


class StructureTextureDecoder(nn.Module):
    """Decoder ``G``: mirror of the encoder (blocks of 32, 32, 64, 64 filters for the paper's sizes).

    Two blocks at the structure resolution, then bilinear x2 upsampling before blocks 3 and 4 so
    the output has exactly the requested size (odd sizes too); every block is texture-modulated.
    """

    def __init__(self, out_channels: int, channels: Sequence[int], structure_channels: int, texture_dim: int):
        super().__init__()
        c = [structure_channels, *reversed(list(channels))]
        self.convs = nn.ModuleList(
            [Convolution(2, c[i], c[i + 1], kernel_size=3, conv_only=True) for i in range(4)]
        )
        self.mods = nn.ModuleList([TextureModulation(c[i + 1], texture_dim) for i in range(4)])
        self.act = nn.LeakyReLU(0.2)
        self.to_image = Convolution(2, c[4], out_channels, kernel_size=3, conv_only=True)

    def forward(self, structure: torch.Tensor, texture: torch.Tensor,
                output_size: Sequence[int] | None = None) -> torch.Tensor:
        if output_size is None:
            output_size = tuple(4 * s for s in structure.shape[-2:])
        out_h, out_w = int(output_size[0]), int(output_size[1])
        sizes = [None, None, ((out_h + 1) // 2, (out_w + 1) // 2), (out_h, out_w)]
        h = structure
        for conv, mod, size in zip(self.convs, self.mods, sizes):
            if size is not None:
                h = F.interpolate(h, size=size, mode="bilinear", align_corners=False)
            h = self.act(mod(conv(h), texture))
        return self.to_image(h)


class SwappingAutoencoder(nn.Module):
    """``E`` + ``G`` of Fig. 1(b); ``forward(x1, x2)`` gives the reconstruction and the swap.

    ``reconstruction = G(z_s^1, z_t^1)`` (Eqs. 3-4) and ``swapped = G(z_s^1, z_t^2)`` (Eq. 5):
    structure of ``x1`` with the texture of another image ``x2`` of the same minibatch (default:
    the batch rolled by one, so ``x1 != x2`` needs a batch of at least 2).  ``image_size`` is the
    training input size (256 in the paper); SR losses resize images to it before encoding.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 64, 32, 32),
        structure_channels: int = 1,
        texture_dim: int = 256,
        image_size: int = 256,
    ):
        super().__init__()
        self.image_size = int(image_size)
        self.encoder = StructureTextureEncoder(in_channels, channels, structure_channels, texture_dim)
        self.decoder = StructureTextureDecoder(in_channels, channels, structure_channels, texture_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_str, z_tex)`` of ``x``."""
        return self.encoder(x)

    def decode(self, structure: torch.Tensor, texture: torch.Tensor,
               output_size: Sequence[int] | None = None) -> torch.Tensor:
        return self.decoder(structure, texture, output_size)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x2 is None:
            if x1.shape[0] < 2:
                raise ValueError("the swap needs two different images: pass x2 or a batch of >= 2")
            x2 = x1.roll(1, dims=0)
        structure, texture = self.encode(x1)
        _, texture2 = self.encode(x2)
        size = x1.shape[-2:]
        return {
            "reconstruction": self.decode(structure, texture, size),
            "swapped": self.decode(structure, texture2, size),
            "structure": structure,
            "texture": texture,
        }


__all__ = [
    "StructureTextureDecoder",
    "StructureTextureEncoder",
    "SwappingAutoencoder",
    "TextureModulation",
    "center_patch_pair",
]
