"""Small MONAI dict transforms the task adapters share (the protocol math stays in training.data).

Deterministic ones run once per case and are cached (region crop, model frame, normalisation,
label indices); random ones run per sample with a seed derived from (run seed, epoch, sample index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable, Transform

from JointSRSegLib.normalization import normalize
from training.data import resolve_axis
from training.data.pairs import block_majority, crop_to_target, degrade_array, to_numpy

SPATIAL_KEYS = ("image", "label", "probs")


class CropRegiond(Transform):
    """Crop ``image``/``label``/``probs`` to the case's ``region`` [[start, stop] x 3] (sample-mode slabs)."""

    def __call__(self, data):
        d = dict(data)
        region = d.get("region")
        if region:
            index = (slice(None),) + tuple(slice(int(a), int(b)) for a, b in region)
            for key in SPATIAL_KEYS:
                if key in d:
                    d[key] = d[key][index]
        return d


class ModelFramed(Transform):
    """Move the through-plane axis last (the model frame of every package) and record ``axis`` = 2.

    After this, every protocol transform works with ``axis=2`` whatever the scan's slice axis was.
    """

    def __init__(self, axis: int | None):
        self.axis = axis

    def __call__(self, data):
        d = dict(data)
        axis = resolve_axis(self.axis, d.get("spacing"), str(d.get("id")))
        for key in SPATIAL_KEYS:
            if key in d:
                d[key] = torch.movedim(torch.as_tensor(d[key]), axis + 1, -1).contiguous()
        spacing = [float(s) for s in to_numpy(d["spacing"]).reshape(-1)[:3]]
        d["spacing"] = torch.tensor([s for i, s in enumerate(spacing) if i != axis] + [spacing[axis]])
        d["scan_axis"] = axis
        return d


class NormalizeIntensityd(Transform):
    """Per-channel intensity normalisation of the package spec, on the whole case (as inference does)."""

    def __init__(self, spec: Mapping):
        self.spec = dict(spec)

    def __call__(self, data):
        d = dict(data)
        if "image" not in d:  # label-map case: the image is synthesised per sample
            return d
        array, _ = normalize(to_numpy(d["image"]).astype(np.float32), self.spec)
        d["image"] = torch.from_numpy(array)
        return d


class LabelIndicesd(Transform):
    """Label values -> class indices (class ``i`` is the ``i``-th label value; unknown values -> 0)."""

    def __init__(self, values: Sequence[int]):
        self.values = [int(v) for v in values]

    def __call__(self, data):
        d = dict(data)
        if "label" in d and d.get("kind") != "labelmap":  # FreeSurfer label maps keep every label
            label = to_numpy(d["label"]).astype(np.int64)
            lut = np.zeros(max(int(label.max(initial=0)), max(self.values)) + 1, np.int64)
            for index, value in enumerate(self.values):
                if value >= 0:
                    lut[value] = index
            d["label"] = torch.from_numpy(lut[np.clip(label, 0, None)].astype(np.uint8))
        return d


class CentreCropd(Transform):
    """Centred crop of ``keys`` to ``size`` (clipped to the case) -- bounded validation cost."""

    def __init__(self, size: Sequence[int] | None, keys: Sequence[str] = SPATIAL_KEYS):
        self.size = None if size is None else [int(s) for s in size]
        self.keys = tuple(keys)

    def __call__(self, data):
        if self.size is None:
            return dict(data)
        d = dict(data)
        shape = to_numpy(d["image"]).shape[1:]
        index = [slice(None)]
        for n, s in zip(shape, self.size):
            s = min(s, n)
            start = (n - s) // 2
            index.append(slice(start, start + s))
        for key in self.keys:
            if key in d:
                d[key] = d[key][tuple(index)]
        return d


class SelectKeysd(Transform):
    """Keep only the keys a batch needs (tensors and numbers collate; path lists do not)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def __call__(self, data):
        out = {}
        for key in self.keys:
            value = data[key]
            if isinstance(value, np.ndarray):
                value = torch.from_numpy(np.ascontiguousarray(value))
            out[key] = value.float() if isinstance(value, torch.Tensor) and key.endswith("image") else value
        return out


class ToLabelTensord(Transform):
    """Label tensors as int64 (MONAI geometric transforms hand labels back as float)."""

    def __init__(self, keys: Sequence[str]):
        self.keys = tuple(keys)

    def __call__(self, data):
        d = dict(data)
        for key in self.keys:
            if key in d:
                d[key] = torch.as_tensor(np.rint(to_numpy(d[key]))).long()
        return d


class RandSynthesisd(Randomizable, MapTransform):
    """With probability ``prob`` replace the image by a SynthSeg image drawn from the label map."""

    def __init__(self, prob: float, synthesizer: Randomizable):
        super().__init__(["image"])
        self.prob = float(prob)
        self.synthesizer = synthesizer
        self._apply = False

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.synthesizer.set_random_state(seed=int(self.R.randint(2**31 - 1)))
        return self

    def randomize(self, data=None) -> None:
        self._apply = bool(self.R.rand() < self.prob)

    def __call__(self, data):
        self.randomize()
        if not self._apply or "label" not in data:
            return dict(data)
        d = self.synthesizer(dict(data))
        channels = to_numpy(data["image"]).shape[0]
        if d["image"].shape[0] != channels:  # one synthetic contrast per input channel
            d["image"] = d["image"].repeat(channels, 1, 1, 1)
        return d


class RecordShaped(Transform):
    """Remember the case's spatial shape before cropping (for position-based pretext labels)."""

    def __call__(self, data):
        d = dict(data)
        d["case_shape"] = torch.tensor(tuple(to_numpy(d["image"]).shape[1:]))
        return d


class ThickVoxelsd(Transform):
    """Degrade ``lr_image`` also along the in-plane axes ``axes`` by the sr protocol (thick voxels:
    SwinSR-UNETR's isotropic 48^3 -> 96^3), after :class:`~training.data.MakeLRHRPaird` made it thick
    along the through-plane axis; ``hr_image``/``hr_label`` are cropped to what the LR covers.

    The same slice profile along each axis (``degrade_array``, sr protocol), so an isotropic factor
    ``R`` makes every LR voxel the profile-weighted mean of an ``R^3`` block; labels stay on the HR grid.
    """

    def __init__(self, factor: int, axes: Sequence[int]):
        self.factor, self.axes = int(factor), tuple(int(a) for a in axes)

    def __call__(self, data):
        d = dict(data)
        lr = to_numpy(d["lr_image"])
        for axis in self.axes:
            lr = degrade_array(lr, "sr", self.factor, axis)
            for key in ("hr_image", "hr_label"):
                if key in d:
                    d[key] = torch.as_tensor(crop_to_target(to_numpy(d[key]), "sr", self.factor, axis))
            if "lr_label" in d:
                d["lr_label"] = torch.as_tensor(block_majority(to_numpy(d["lr_label"]), self.factor, (axis,)))
        d["lr_image"] = torch.as_tensor(np.ascontiguousarray(lr))
        return d
