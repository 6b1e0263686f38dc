"""FreeSurfer / SynthSeg anatomical labels -> the two tissue classes every brain package predicts.

Why one table: training (label-to-image synthesis), the benchmarks (reference segmentations of the
label-map subjects) and the classical baseline all compare against the same GM/WM split; writing it
twice is how reference and prediction drift apart.

Source of the label values: FreeSurfer's ``FreeSurferColorLUT.txt`` (the numbering SynthSeg's
``labels_table.txt`` follows, ``../shared/data/synthseg_labels``).  The split follows the usual
two-class brain tissue model (as in FSL FAST / ANTs Atropos GM/WM priors): cortex and deep grey nuclei
are grey matter; cerebral and cerebellar white matter, the brainstem (mostly white matter tracts),
white-matter hypointensities and the corpus callosum are white matter.  Everything else -- CSF,
ventricles, choroid plexus, vessels, and the extra-cerebral labels (500+ in the SynthSeg training maps:
skull, scalp, eyes, ...) -- is background.
"""

from __future__ import annotations

import numpy as np

BACKGROUND, GREY_MATTER, WHITE_MATTER = 0, 1, 2
TISSUE_NAMES = {GREY_MATTER: "Grey matter", WHITE_MATTER: "White matter"}

GREY_MATTER_LABELS: tuple[int, ...] = (
    3, 42,  # left / right cerebral cortex
    8, 47,  # left / right cerebellar cortex
    10, 11, 12, 13,  # left thalamus, caudate, putamen, pallidum
    17, 18, 26, 28,  # left hippocampus, amygdala, accumbens, ventral DC
    49, 50, 51, 52, 53, 54, 58, 60,  # the same on the right
)  # fmt: skip
WHITE_MATTER_LABELS: tuple[int, ...] = (
    2, 41,  # left / right cerebral white matter
    7, 46,  # left / right cerebellar white matter
    16,  # brainstem
    77,  # white-matter hypointensities
    251, 252, 253, 254, 255,  # corpus callosum (posterior ... anterior)
)  # fmt: skip


def tissue_class_lookup(max_label: int) -> np.ndarray:
    """A lookup table ``lut[label] -> tissue class`` for labels ``0 ... max_label``."""
    lut = np.zeros(max(int(max_label), 255) + 1, dtype=np.uint8)
    lut[list(GREY_MATTER_LABELS)] = GREY_MATTER
    lut[list(WHITE_MATTER_LABELS)] = WHITE_MATTER
    return lut


def tissue_classes(labels: np.ndarray) -> np.ndarray:
    """Map a FreeSurfer label map to tissue classes (0 background, 1 GM, 2 WM), same shape, uint8.

    Negative labels have no meaning in FreeSurfer's table and are refused rather than wrapped.
    """
    array = np.asarray(labels)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.rint(array)):
            raise ValueError("a label map holds whole numbers; this one has fractional or non-finite values")
        array = array.astype(np.int64)
    if array.size and int(array.min()) < 0:
        raise ValueError(f"label map has negative label {int(array.min())}")
    lut = tissue_class_lookup(int(array.max(initial=0)))
    return lut[array]
