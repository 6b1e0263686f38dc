"""REHRSeg (Song et al., "REHRSeg: Unleashing the Power of Self-Supervised Super-Resolution for
Resource-Efficient 3D MRI Segmentation"): registry entries for its two networks.

* ``rehrseg_sr`` -- :class:`~.rehrseg_sr.REHRSegSR`, the self-SR model for annotated MR images
  (FLAVR backbone, section 3.2, + UASR head, section 3.4).  Stage (a) of Fig. 2.
* ``rehrseg_seg`` -- :class:`~.rehrseg_seg.REHRSegSegmenter`, the nnU-Net-3D segmenter with LR
  and HR heads (sections 3.3, 4.2), trained with uncertainty guidance and structural distillation
  from ``rehrseg_sr`` (``JointSRSegLib.losses.rehrseg``).  Stage (b) of Fig. 2.
* ``rehrseg_seg_uasr`` -- :class:`~.rehrseg_uasr_seg.REHRSegWithUASR`, both trained networks in one
  module for inference: the segmenter's HR segmentation plus the teacher's UASR map ``U`` (Eq. 5),
  computed with the segmenter's LR segmentation as the annotation.  What REHRSeg packages ship.

Presets: ``base`` is the paper's size (FLAVR R3D-18 widths ``64..512``; nnU-Net default widths
``32..320``), ``small`` halves/quarters the widths for whole-volume CPU inference, ``tiny`` stays
under one million parameters for tests.  See docs/architectures/rehrseg.md.
"""

from __future__ import annotations

from .registry import ArchitectureSpec
from .rehrseg_seg import REHRSegSegmenter, nnunet_plan
from .rehrseg_sr import REHRSegSR
from .rehrseg_uasr_seg import REHRSegWithUASR

__all__ = ["SPECS", "REHRSegSR", "REHRSegSegmenter", "REHRSegWithUASR", "nnunet_plan"]

_SR_COMMON = {
    "in_channels": 1,
    "num_classes": 2,
    "scale": 4,
    "slice_axis": 2,
    "num_input_slices": 4,
    "num_hypotheses": 4,
    "annotation_input": True,
}
_SEG_COMMON = {"in_channels": 1, "num_classes": 2, "scale": (1, 1, 4), "hr_interpolation": "trilinear"}
_SR_PRESETS = {
    "tiny": {**_SR_COMMON, "features": (8, 16, 24, 32), "blocks_per_layer": (1, 1, 1, 1)},
    "small": {**_SR_COMMON, "features": (24, 48, 96, 192), "blocks_per_layer": (2, 2, 2, 2), "windows_per_pass": 8},
    "base": {**_SR_COMMON, "features": (64, 128, 256, 512), "blocks_per_layer": (2, 2, 2, 2), "windows_per_pass": 4},
}
_SEG_PRESETS = {
    "tiny": {**_SEG_COMMON, "features": (8, 16, 32, 48)},
    "small": {**_SEG_COMMON, "features": (16, 32, 64, 128, 256)},
    "base": {**_SEG_COMMON, "features": (32, 64, 128, 256, 320, 320)},
}

SPECS = (
    ArchitectureSpec(
        name="rehrseg_sr",
        builder=REHRSegSR,
        presets=_SR_PRESETS,
        tasks=("sr", "seg", "sr_uncertainty"),
        dims=3,
        paper="rehrseg.txt",
        description="REHRSeg self-SR of annotated MRI: FLAVR 3D U-Net over slice windows + uncertainty-aware "
        "SR head (image, annotation, uncertainty)",
    ),
    ArchitectureSpec(
        name="rehrseg_seg",
        builder=REHRSegSegmenter,
        presets=_SEG_PRESETS,
        tasks=("seg",),
        dims=3,
        paper="rehrseg.txt",
        description="REHRSeg segmenter: nnU-Net-3D on the LR volume with LR and HR (feature interpolation) "
        "heads",
    ),
    ArchitectureSpec(
        name="rehrseg_seg_uasr",
        builder=REHRSegWithUASR,
        presets={p: {"segmenter": _SEG_PRESETS[p], "teacher": _SR_PRESETS[p]} for p in ("tiny", "small", "base")},
        tasks=("seg", "sr_uncertainty"),
        dims=3,
        paper="rehrseg.txt",
        description="REHRSeg for inference: the segmenter's HR segmentation plus the self-SR teacher's UASR "
        "uncertainty map (teacher annotated with the segmenter's LR segmentation)",
    ),
)
