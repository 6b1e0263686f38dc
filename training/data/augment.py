"""Augmentations applied to the HR image + label *before* degradation, and label-to-image synthesis.

Augmenting before :mod:`training.data.pairs` degrades the volume keeps the LR input an exact
product of the standard protocol (augmenting the LR input afterwards would change the protocol).
Intensity parameters assume images scaled to about [0, 1] (noise sigma 0.01 is 1 % of the range).

:class:`SynthesizeImageFromLabels` follows SynthSeg: an image is drawn from a tissue map with a
random Gaussian intensity per label, so a network trained on it cannot rely on one MR contrast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    GaussianSmooth,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandBiasField,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    Randomizable,
)

from .pairs import to_numpy


def hr_augmentations(
    image_keys: KeysCollection = "image",
    label_keys: KeysCollection = "label",
    flip_prob: float = 0.5,
    affine_prob: float = 0.2,
    max_rotation_degrees: float = 15.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    noise_prob: float = 0.2,
    noise_std: float = 0.01,
    bias_prob: float = 0.2,
    bias_coeff_range: tuple[float, float] = (0.0, 0.1),
    gamma_prob: float = 0.2,
    gamma_range: tuple[float, float] = (0.7, 1.5),
    field_keys: KeysCollection = (),
) -> Compose:
    """Flips, rotation (up to 15 degrees), scaling (0.9-1.1), noise (sigma 0.01), bias field and gamma.

    Geometric transforms move labels with nearest-neighbour interpolation so they stay labels, and
    ``field_keys`` (tissue probability maps) with linear interpolation like the images; intensity
    transforms touch only the images.  Labels and fields may be absent (``allow_missing_keys``).
    """
    images = [image_keys] if isinstance(image_keys, str) else list(image_keys)
    labels = [label_keys] if isinstance(label_keys, str) else list(label_keys or [])
    fields = [field_keys] if isinstance(field_keys, str) else list(field_keys or [])
    keys = images + fields + labels
    modes = ["bilinear"] * (len(images) + len(fields)) + ["nearest"] * len(labels)
    angle = math.radians(max_rotation_degrees)
    low, high = scale_range
    if not 0 < low <= 1 <= high:
        raise ValueError(f"scale_range {scale_range} must contain 1")
    transforms = [RandFlipd(keys, prob=flip_prob, spatial_axis=a, allow_missing_keys=True) for a in range(3)]
    transforms += [
        RandAffined(
            keys,
            prob=affine_prob,
            rotate_range=(angle, angle, angle),
            # MONAI adds 1 to the sampled value; an asymmetric range is approximated symmetrically.
            scale_range=(max(1 - low, high - 1),) * 3,
            mode=modes,
            padding_mode="border",
            allow_missing_keys=True,
        ),
        RandBiasFieldd(images, prob=bias_prob, coeff_range=bias_coeff_range),
        RandAdjustContrastd(images, prob=gamma_prob, gamma=gamma_range),
        RandGaussianNoised(images, prob=noise_prob, mean=0.0, std=noise_std, sample_std=False),
    ]
    return Compose(transforms)


def uses_partial_volume(augment: Mapping) -> bool:
    """Whether the ``augment`` config section draws synthetic images from tissue probability maps."""
    return bool(augment["synthesis_partial_volume"] and augment["synthesis_prob"] > 0)


class SynthesizeImageFromLabels(Randomizable, MapTransform):
    """Draw an image from a tissue label map (SynthSeg): per-label Gaussian intensities, then
    optional blur, bias field, [0, 1] normalisation, contrast inversion and noise.

    * ``labels``: label values to draw intensities for (default: the values present in the map).
    * ``prob_key``: optional probability maps ``(L, I, J, K)`` (one channel per entry of ``labels``)
      for partial-volume mixing: voxel intensity ``sum_l p_l (mu_l + sigma_l eps_l)``.
    * ``background_zero``: keep label 0 black (skull-stripped data) instead of random.
    * ``min_contrast``: redraw the means (up to 100 times) until every two labels differ by at least
      this much.  Why: uniform draws sometimes give two tissues the same intensity (e.g. GM 0.174,
      WM 0.171); no MR sequence images brain tissue like that, and no method can separate them, so
      such draws waste training steps and make a validation case meaningless.

    The drawn ``means``/``stds`` (``{label: value}``) stay on the transform for inspection.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        prob_key: str | None = None,
        labels: Sequence[int] | None = None,
        mean_range: tuple[float, float] = (0.0, 1.0),
        std_range: tuple[float, float] = (0.0, 0.05),
        invert_prob: float = 0.0,
        blur_sigma_range: tuple[float, float] | None = (0.0, 1.0),
        bias_field_prob: float = 0.5,
        bias_coeff_range: tuple[float, float] = (0.0, 0.1),
        noise_std: float = 0.01,
        normalize: bool = True,
        background_zero: bool = False,
        min_contrast: float = 0.0,
    ):
        super().__init__([label_key] + ([prob_key] if prob_key else []))
        self.label_key, self.image_key, self.prob_key = label_key, image_key, prob_key
        self.labels = None if labels is None else [int(v) for v in labels]
        self.mean_range, self.std_range = mean_range, std_range
        self.invert_prob = invert_prob
        self.blur_sigma_range = blur_sigma_range
        self.bias_field_prob = bias_field_prob
        self.noise_std = noise_std
        self.normalize = normalize
        self.background_zero = background_zero
        self.min_contrast = float(min_contrast)
        self._bias = RandBiasField(coeff_range=bias_coeff_range, prob=1.0)
        self.means: dict[int, float] = {}
        self.stds: dict[int, float] = {}
        self._invert = False
        self._blur_sigma = 0.0
        self._apply_bias = False

    def randomize(self, data: Sequence[int]) -> None:
        values = list(data)
        for _ in range(100):
            self.means = {v: float(self.R.uniform(*self.mean_range)) for v in values}
            if self.background_zero and 0 in self.means:
                self.means[0] = 0.0
            drawn = sorted(self.means.values())
            if all(b - a >= self.min_contrast for a, b in zip(drawn, drawn[1:])):
                break
        self.stds = {v: float(self.R.uniform(*self.std_range)) for v in values}
        if self.background_zero and 0 in self.means:
            self.means[0], self.stds[0] = 0.0, 0.0
        self._invert = bool(self.R.rand() < self.invert_prob)
        self._blur_sigma = float(self.R.uniform(*self.blur_sigma_range)) if self.blur_sigma_range else 0.0
        self._apply_bias = bool(self.R.rand() < self.bias_field_prob)
        self._bias.set_random_state(state=self.R)

    def _mixture(self, d: dict) -> np.ndarray:
        label = to_numpy(d[self.label_key])
        if label.ndim == 3:
            label = label[None]
        if self.prob_key:
            probs = to_numpy(d[self.prob_key]).astype(np.float32)
            values = self.labels if self.labels is not None else list(range(probs.shape[0]))
            if len(values) != probs.shape[0]:
                raise ValueError(f"{self.prob_key} has {probs.shape[0]} channels for {len(values)} labels")
            self.randomize(values)
            mean = sum(p * self.means[v] for p, v in zip(probs, values))
            std = np.sqrt(sum((p * self.stds[v]) ** 2 for p, v in zip(probs, values)))
            return (mean + std * self.R.standard_normal(mean.shape))[None].astype(np.float32)
        label = np.rint(label).astype(np.int64) if label.dtype.kind == "f" else label.astype(np.int64)
        values = self.labels if self.labels is not None else [int(v) for v in np.unique(label)]
        self.randomize(values)
        lookup_mean = np.zeros(label.shape, np.float32)
        lookup_std = np.zeros(label.shape, np.float32)
        for v in values:
            mask = label == v
            lookup_mean[mask] = self.means[v]
            lookup_std[mask] = self.stds[v]
        noise = self.R.standard_normal(label.shape).astype(np.float32)
        return lookup_mean + lookup_std * noise

    def __call__(self, data):
        d = dict(data)
        image = self._mixture(d)
        if self._blur_sigma > 0:
            image = GaussianSmooth(sigma=self._blur_sigma)(torch.from_numpy(image)).numpy()
        if self._apply_bias:
            image = to_numpy(self._bias(image, randomize=True))
        if self.normalize:
            low, high = float(image.min()), float(image.max())
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        if self._invert:
            image = image.max() + image.min() - image
        if self.noise_std > 0:
            image = image + self.R.normal(0.0, self.noise_std, image.shape)
        d[self.image_key] = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return d
