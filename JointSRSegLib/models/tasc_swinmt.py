"""TASC-SwinMT: joint slice interpolation and three-frame segmentation with a shared 2D Swin-UNet.

Sun, Yang & Bao, Tomography 12(6):80, 2026 (``tasc-swinmt.txt``), Algorithm 1 / Figure 1:
shared Swin encoder with TALA after every stage, two task decoders (PatchExpand -> MSTAF skip fusion ->
Swin block) with CTCI between them after every stage, PixelShuffle heads.

Input ``x`` (B, 2C, H, W) = [frame 1, frame 3]; output ``{"interp": (B, C, H, W), "seg": (B, 3, K, H, W)}``
(segmentation logits for [frame 1, middle, frame 3]). See docs/architectures/tasc_swinmt.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from .registry import ArchitectureSpec
from .tasc_backbone import PatchExpand, PixelShuffleHead, PositionFiLM, SwinStage, TASCEncoder
from .tasc_blocks import CTCI, MSTAF

__all__ = ["SPECS", "SkipConcat", "TASCSwinMT", "TaskDecoder"]


class SkipConcat(nn.Module):
    """Plain Swin-UNet skip fusion ``Linear(Concat(f_dec, f_skip))`` -- used when MSTAF is ablated."""

    def __init__(self, channels: int):
        super().__init__()
        self.reduce = nn.Linear(2 * channels, channels)

    def forward(self, f_dec: torch.Tensor, f_skip: torch.Tensor) -> tuple[torch.Tensor, None]:
        fused = self.reduce(rearrange(torch.cat([f_dec, f_skip], 1), "b c h w -> b h w c"))
        return rearrange(fused, "b h w c -> b c h w"), None


class TaskDecoder(nn.Module):
    """One task's decoder stages (section 3.2.8): PatchExpand, skip fusion, Swin block(s).

    ``fusions`` may be shared between the two decoders (see :class:`TASCSwinMT` ``share_mstaf``).
    MSTAF returns the aligned decoder and skip streams (``Out_int``, ``Out_seg``); their sum is the
    decoder's fused feature, so both outputs (and both residual convs) are used.
    """

    def __init__(self, dims: Sequence[int], depths: Sequence[int], num_heads: Sequence[int], window_size: int,
                 fusions: nn.ModuleList, mlp_ratio: float = 4.0):
        super().__init__()
        # dims/depths/heads are listed deepest-first: dims[j] is the channel count after expansion j.
        self.expands = nn.ModuleList(PatchExpand(2 * d) for d in dims)
        self.fusions = fusions
        self.blocks = nn.ModuleList(
            SwinStage(d, n, h, window_size, shift_first=j % 2 == 1, mlp_ratio=mlp_ratio)
            for j, (d, n, h) in enumerate(zip(dims, depths, num_heads))
        )

    def stage(self, j: int, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Algorithm 1 lines 16-18 (or 19-21) for decoder stage ``j``."""
        out_dec, out_skip = self.fusions[j](self.expands[j](x), skip)
        return self.blocks[j](out_dec if out_skip is None else out_dec + out_skip)


class TASCSwinMT(nn.Module):
    """TASC-SwinMT (Algorithm 1). ``forward(x, t=None) -> {"interp", "seg"}``.

    Args:
        in_channels: channels C of one frame; ``x`` carries 2C (frame 1 then frame 3).
        seg_channels: K. 1 = binary (sigmoid/BCE, the paper); K > 1 = softmax classes incl. background.
        embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio: Swin-UNet sizes (Table 2).
        decoder_depths: Swin blocks per decoder stage, deepest first (paper: one).
        tala_reduction: TALA's bottleneck ratio.
        use_tala, use_mstaf, use_ctci: ablation switches (section 4.2.2); without MSTAF the skip is fused
            by Swin-UNet's concat + Linear, without CTCI the decoders do not interact.
        independent_encoders: the paper's IndEnc ablation -- one encoder per task, no shared features.
        share_mstaf: one MSTAF per scale used by both decoders (Algorithm 1 calls the same ``MSTAF`` in
            lines 17 and 20; this is what reproduces the paper's 33.36 M parameters); False gives each
            decoder its own.
        position_conditioning: FiLM of the fractional position ``t`` (our extension for R > 2).
        interp_activation: ``"sigmoid"`` (paper: intensities normalised to [0, 1]) or ``"none"``.
        global_residual: predict the middle frame as a residual over the linear blend ``(1 - t) x_1 + t x_3``
            of the input pair (added before the activation: in logit space with ``"sigmoid"``).  Not in
            the paper (default False); it lets a short CPU training beat classical interpolation.
        init: ``"he"`` -- Sec. 3.3.2 as printed, He-normal (fan-in, gain sqrt(2)) for every convolution;
            ``"mixed"`` (default) -- fan-in normal with gain 1 (LeCun) except gain sqrt(2) where a SiLU
            follows, because sqrt(2) everywhere compounds into saturated sigmoid heads at initialisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        seg_channels: int = 1,
        embed_dim: int = 96,
        depths: Sequence[int] = (1, 1, 1, 1),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        decoder_depths: Sequence[int] = (1, 1, 1),
        window_size: int = 8,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
        tala_reduction: int = 4,
        use_tala: bool = True,
        use_mstaf: bool = True,
        use_ctci: bool = True,
        independent_encoders: bool = False,
        share_mstaf: bool = True,
        position_conditioning: bool = True,
        interp_activation: str = "sigmoid",
        global_residual: bool = False,
        init: str = "mixed",
    ):
        super().__init__()
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {', '.join(INIT_SCHEMES)}, got {init!r}")
        if len(num_heads) != len(depths) or len(decoder_depths) != len(depths) - 1:
            raise ValueError("need one head count per stage and one decoder depth per decoder stage")
        if interp_activation not in ("sigmoid", "none"):
            raise ValueError(f"interp_activation must be 'sigmoid' or 'none', got {interp_activation!r}")
        self.in_channels = in_channels
        self.seg_channels = seg_channels
        self.interp_activation = interp_activation
        self.global_residual = bool(global_residual)
        self.size_multiple = patch_size * 2 ** (len(depths) - 1)
        n_enc = 2 if independent_encoders else 1
        self.encoders = nn.ModuleList(
            TASCEncoder(2 * in_channels, embed_dim, depths, num_heads, window_size, patch_size, use_tala,
                        tala_reduction, mlp_ratio)
            for _ in range(n_enc)
        )
        enc_dims = [embed_dim * 2**i for i in range(len(depths))]
        dims = enc_dims[-2::-1]  # decoder stages, deepest first
        heads = list(num_heads)[-2::-1]

        def fusions() -> nn.ModuleList:
            if use_mstaf:
                return nn.ModuleList(MSTAF(d, h) for d, h in zip(dims, heads))
            return nn.ModuleList(SkipConcat(d) for d in dims)

        shared = fusions()
        self.decoders = nn.ModuleDict({
            "interp": TaskDecoder(dims, decoder_depths, heads, window_size, shared, mlp_ratio),
            "seg": TaskDecoder(dims, decoder_depths, heads, window_size,
                               shared if use_mstaf and share_mstaf and not independent_encoders
                               else fusions(), mlp_ratio),
        })
        self.ctci = nn.ModuleList(CTCI(d) for d in dims) if use_ctci else None
        self.film = PositionFiLM(dims) if position_conditioning else None
        self.interp_head = PixelShuffleHead(embed_dim, in_channels, patch_size)
        self.seg_head = PixelShuffleHead(embed_dim, 3 * seg_channels, patch_size)
        self._init_convolutions(init)

    def _init_convolutions(self, init: str) -> None:
        """Section 3.3.2 "He normal initialization for convolutional layers", fan-in normal weights.

        ``he``: gain sqrt(2) for every convolution (the paper as printed).  ``mixed``: the rectifier
        gain sqrt(2) only where a SiLU follows (CTCI's dilated cascade, which would otherwise shrink
        the features it correlates), gain 1 elsewhere, because most convolutions here are linear maps
        in series and the sqrt(2) gain compounds into saturated sigmoid heads at initialisation.
        Sub-pixel convs keep MONAI's ICNR (built from He-normal kernels) in both.
        """
        icnr = {id(up.conv_block) for head in (self.interp_head, self.seg_head) for up in head.ups}
        rectified = {id(m) for c in self.modules() if isinstance(c, CTCI) for m in c.dilated}
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and id(module) not in icnr:
                gain = "relu" if init == "he" or id(module) in rectified else "linear"
                nn.init.kaiming_normal_(module.weight, nonlinearity=gain)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad H, W up to a multiple of ``patch * 2**merges`` and at least two such blocks
        (the deepest map must hold more than one value for TALA's BatchNorm)."""
        m = self.size_multiple
        h, w = x.shape[-2:]
        hp, wp = max(-(-h // m) * m, 2 * m), max(-(-w // m) * m, 2 * m)
        return F.pad(x, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else x

    def _position(self, t: torch.Tensor | float | None, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if t is None:
            t = 0.5
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(b) if t.ndim == 0 else t.reshape(-1)
        if t.shape[0] != b:
            raise ValueError(f"t must hold one position per batch item ({b}), got {tuple(t.shape)}")
        return t

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 2 * self.in_channels:
            raise ValueError(f"expected x of shape (B, {2 * self.in_channels}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        t = self._position(t, x)
        xp = self._pad(x)
        skips_interp = self.encoders[0](xp)
        skips_seg = self.encoders[-1](xp) if len(self.encoders) > 1 else skips_interp
        f_interp, f_seg = skips_interp[-1], skips_seg[-1]
        film = self.film(t) if self.film is not None else None
        n_dec = len(self.decoders["interp"].blocks)
        for j in range(n_dec):
            k = n_dec - 1 - j  # skip index S_{4-i}
            f_interp = self.decoders["interp"].stage(j, f_interp, skips_interp[k])
            f_seg = self.decoders["seg"].stage(j, f_seg, skips_seg[k])
            if film is not None:
                (g_i, b_i), (g_s, b_s) = film[0][j], film[1][j]
                f_interp = f_interp * (1 + g_i) + b_i
                f_seg = f_seg * (1 + g_s) + b_s
            if self.ctci is not None:
                f_interp, f_seg = self.ctci[j](f_interp, f_seg)
        interp = self.interp_head(f_interp)[..., :h, :w]
        if self.global_residual:
            tt = t.view(b, 1, 1, 1).to(x.dtype)
            blend = (1 - tt) * x[:, : self.in_channels] + tt * x[:, self.in_channels :]
            if self.interp_activation == "sigmoid":
                blend = torch.logit(blend.clamp(1e-4, 1 - 1e-4))
            interp = interp + blend
        if self.interp_activation == "sigmoid":
            interp = torch.sigmoid(interp)
        seg = self.seg_head(f_seg)[..., :h, :w].reshape(b, 3, self.seg_channels, h, w)
        return {"interp": interp, "seg": seg}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer (deepest encoder stage) whose gradient norms GradNorm balances."""
        return [p for enc in self.encoders for p in enc.last_stage_parameters()]


INIT_SCHEMES = ("he", "mixed")  # convolution initialisations of TASCSwinMT (``init``)

_COMMON = {"depths": (1, 1, 1, 1), "decoder_depths": (1, 1, 1), "patch_size": 4}

SPECS = (
    ArchitectureSpec(
        name="tasc_swinmt",
        builder=TASCSwinMT,
        presets={
            "tiny": {**_COMMON, "embed_dim": 12, "num_heads": (1, 2, 2, 4), "window_size": 4},
            "small": {**_COMMON, "embed_dim": 32, "num_heads": (1, 2, 4, 8), "window_size": 8},
            "base": {**_COMMON, "embed_dim": 96, "num_heads": (2, 4, 8, 16), "window_size": 8},
        },
        tasks=("interp", "seg"),
        dims=2,
        paper="tasc-swinmt.txt",
        description="Shared 2D Swin-UNet + TALA/MSTAF/CTCI, joint middle-slice interpolation and 3-frame "
                    "segmentation",
    ),
)
