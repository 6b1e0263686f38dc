"""On-the-fly LR/HR training pairs as MONAI dict transforms, with the library's exact protocols.

The LR input is made by the very functions inference is evaluated against
(:mod:`JointSRSegLib.degradation`), so a model never learns a slightly different degradation:

* ``"sr"``: thick slices (Gaussian profile, FWHM = R HR voxels); LR slice ``i`` covers HR
  slices ``iR ... iR+R-1``; the HR target is cropped to the first ``R * floor(n / R)`` slices
  (the subdivided grid an SR output lives on).
* ``"interp"``: LR slice ``i`` is HR slice ``iR``; the HR target has ``(n_lr - 1) R + 1`` slices
  (the inserted grid).
* ``"inplane"``: the RDST protocol, bicubic downsampling of both in-plane axes plus noise.

Labels: ``hr_label`` is the label on the target grid; ``lr_label`` is the label on the LR grid
(``interp``: the kept slices; ``sr``/``inplane``: the majority label of each block of ``R``
(``R x R``) HR voxels, ties to the lower value) -- REHRSeg needs it.

LR-only cases (``lr_only=True``) have no HR image: :class:`MakeLRHRPaird` refuses them, and
:class:`SelfSupervisedPaird` degrades an *in-plane* axis of the LR scan instead (REHRSeg's
self-supervision) and writes ``target_*`` keys, never ``hr_*`` keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from JointSRSegLib.degradation import (
    inplane_axes,
    simulate_inplane_bicubic,
    simulate_slice_gaps,
    simulate_thick_slices,
)
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import through_plane_axis
from JointSRSegLib.vocabulary import check_axis, check_factor, check_protocol
from JointSRSegLib.volume import Volume


def to_numpy(value) -> np.ndarray:
    """Arrays from numpy, torch or MONAI MetaTensor inputs (metadata dropped)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def resolve_axis(axis: int | str | None, spacing, source: str | None = None) -> int:
    """The through-plane axis: ``axis`` when given, else the largest-spacing axis of ``spacing``.

    Isotropic data (e.g. the 1 mm MNI template) has no such axis; the config must name one.
    """
    if axis is not None and axis != "auto":
        return check_axis(int(axis), source)
    if spacing is None:
        raise InputError(source, "no spacing to detect the through-plane axis; give the axis explicitly")
    spacing = tuple(float(s) for s in to_numpy(spacing).reshape(-1)[:3])
    probe = Volume(np.zeros((1, 2, 2, 2), np.float32), spacing, (0.0, 0.0, 0.0), source=source)
    return through_plane_axis(probe, None)


def degraded_axes(protocol: str, axis: int) -> tuple[int, ...]:
    """Spatial axes whose resolution the protocol reduces (``inplane``: the two in-plane axes)."""
    return tuple(inplane_axes(axis)) if check_protocol(protocol) == "inplane" else (axis,)


def lr_length(n_hr: int, protocol: str, factor: int) -> int:
    """LR slices made from ``n_hr`` HR slices along a degraded axis."""
    return (n_hr - 1) // factor + 1 if protocol == "interp" else n_hr // factor


def target_length(n_hr: int, protocol: str, factor: int) -> int:
    """HR slices an output reconstructed from those LR slices covers (the target's length)."""
    n_lr = lr_length(n_hr, protocol, factor)
    return (n_lr - 1) * factor + 1 if protocol == "interp" else n_lr * factor


def degrade_array(
    array: np.ndarray,
    protocol: str,
    factor: int,
    axis: int,
    noise_std: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """LR version of a ``(C, I, J, K)`` array by ``JointSRSegLib.degradation`` (same math, no copy of it)."""
    volume = Volume(np.asarray(array, dtype=np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    if check_protocol(protocol) == "sr":
        return simulate_thick_slices(volume, factor, axis).array
    if protocol == "interp":
        return simulate_slice_gaps(volume, factor, axis).array
    return simulate_inplane_bicubic(volume, factor, axis, noise_std=noise_std, seed=seed).array


def crop_to_target(array: np.ndarray, protocol: str, factor: int, axis: int) -> np.ndarray:
    """Crop a ``(C, I, J, K)`` HR array to the grid an output made from its LR version covers."""
    index = [slice(None)] * 4
    for a in degraded_axes(protocol, axis):
        index[a + 1] = slice(0, target_length(array.shape[a + 1], protocol, factor))
    return np.ascontiguousarray(array[tuple(index)])


def block_majority(label: np.ndarray, factor: int, axes: Sequence[int]) -> np.ndarray:
    """Most frequent value in each block of ``factor`` voxels along every spatial axis in ``axes``
    of a ``(C, I, J, K)`` label array (ties go to the lower value)."""
    label = np.asarray(label)
    index = [slice(None)] * 4
    for a in axes:
        index[a + 1] = slice(0, (label.shape[a + 1] // factor) * factor)
    label = label[tuple(index)]
    shape: list[int] = []
    block_dims = []
    for dim, n in enumerate(label.shape):
        if dim - 1 in axes:
            shape += [n // factor, factor]
            block_dims.append(len(shape) - 1)
        else:
            shape.append(n)
    blocks = label.reshape(shape)
    values = np.unique(label)
    counts = np.stack([(blocks == v).sum(axis=tuple(block_dims)) for v in values])
    return values[np.argmax(counts, axis=0)].astype(label.dtype)


def degrade_label(label: np.ndarray, protocol: str, factor: int, axis: int) -> np.ndarray:
    """Label on the LR grid of the protocol (see the module docstring)."""
    if check_protocol(protocol) == "interp":
        index = [slice(None)] * 4
        index[axis + 1] = slice(0, None, factor)
        return np.ascontiguousarray(np.asarray(label)[tuple(index)])
    return block_majority(label, factor, degraded_axes(protocol, axis))


def _case_name(data: dict) -> str | None:
    return str(data["id"]) if data.get("id") is not None else None


class MakeLRHRPaird(Randomizable, MapTransform):
    """HR image (+ label) -> ``lr_image``, ``hr_image``, ``hr_label``, ``lr_label`` and ``axis``.

    ``axis`` is the through-plane axis (``None``: largest spacing from ``data[spacing_key]``).
    Randomizable only for the in-plane protocol's noise, whose seed is drawn from ``self.R``.
    The source keys are removed (``keep_source=False``) so the HR volume is not carried twice.
    """

    def __init__(
        self,
        protocol: str = "sr",
        factor: int = 4,
        axis: int | None = None,
        image_key: str = "image",
        label_key: str | None = "label",
        spacing_key: str = "spacing",
        inplane_noise_std: float = 0.01,
        keep_source: bool = False,
        output_prefix: str = "hr",
    ):
        keys = [image_key] + ([label_key] if label_key else [])
        super().__init__(keys, allow_missing_keys=True)
        self.protocol = check_protocol(protocol)
        self.factor = check_factor(factor)
        self.axis = axis
        self.image_key, self.label_key, self.spacing_key = image_key, label_key, spacing_key
        self.inplane_noise_std = float(inplane_noise_std)
        self.keep_source = keep_source
        self.output_prefix = output_prefix
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def degradation_axis(self, data: dict) -> int:
        """The axis the protocol degrades (through-plane axis for ``inplane``)."""
        return resolve_axis(self.axis, data.get(self.spacing_key), _case_name(data))

    def check_case(self, data: dict) -> None:
        if data.get("lr_only"):
            raise InputError(
                _case_name(data),
                "LR-only case: no HR image exists, so no HR target can be made (use SelfSupervisedPaird)",
            )

    def __call__(self, data):
        d = dict(data)
        self.check_case(d)
        if self.image_key not in d:
            raise KeyError(f"{_case_name(d)}: no {self.image_key!r} in the data")
        self.randomize()
        image = to_numpy(d[self.image_key]).astype(np.float32, copy=False)
        axis = self.degradation_axis(d)
        lr = degrade_array(image, self.protocol, self.factor, axis, self.inplane_noise_std, self._seed)
        d["lr_image"] = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32))
        d[f"{self.output_prefix}_image"] = torch.from_numpy(crop_to_target(image, self.protocol, self.factor, axis))
        if self.label_key and d.get(self.label_key) is not None:
            label = to_numpy(d[self.label_key])
            if label.dtype.kind == "f":  # MONAI spatial transforms return float labels
                label = np.rint(label).astype(np.int64)
            d[f"{self.output_prefix}_label"] = torch.from_numpy(
                crop_to_target(label, self.protocol, self.factor, axis)
            )
            d["lr_label"] = torch.from_numpy(degrade_label(label, self.protocol, self.factor, axis))
        d["axis"] = axis
        if not self.keep_source:
            for key in (self.image_key, self.label_key):
                d.pop(key, None)
        return d


class SelfSupervisedPaird(MakeLRHRPaird):
    """REHRSeg self-supervision for LR-only data: degrade an in-plane axis of the LR scan.

    The scan's slice axis is ``slice_axis`` (or its largest spacing); the degraded axis is
    ``degrade_axis`` or one of the two in-plane axes at random.  Outputs ``lr_image``,
    ``target_image``, ``target_label``, ``lr_label`` and ``axis`` (the degraded axis).
    Degrading the slice axis would pass the LR scan off as an HR target, so it is refused.
    """

    def __init__(
        self,
        protocol: str = "sr",
        factor: int = 4,
        slice_axis: int | None = None,
        degrade_axis: int | None = None,
        image_key: str = "image",
        label_key: str | None = "label",
        spacing_key: str = "spacing",
        keep_source: bool = False,
    ):
        if protocol == "inplane":
            raise ValueError("self-supervised pairs degrade one in-plane axis: use protocol 'sr' or 'interp'")
        super().__init__(
            protocol, factor, None, image_key, label_key, spacing_key, 0.0, keep_source, output_prefix="target"
        )
        self.slice_axis = slice_axis
        self.degrade_axis = degrade_axis
        self._choice = 0

    def randomize(self, data=None) -> None:
        super().randomize(data)
        self._choice = int(self.R.randint(0, 2))

    def check_case(self, data: dict) -> None:
        """Every case is allowed: the target is the scan itself, never an HR image."""

    def degradation_axis(self, data: dict) -> int:
        source = _case_name(data)
        slice_axis = resolve_axis(self.slice_axis, data.get(self.spacing_key), source)
        if self.degrade_axis is None:
            return inplane_axes(slice_axis)[self._choice]
        axis = check_axis(self.degrade_axis, source)
        if axis == slice_axis:
            raise InputError(source, f"axis {axis} is the scan's slice axis; self-supervision degrades in-plane axes")
        return axis


class RandAlignedCropd(Randomizable, MapTransform):
    """Random patch of ``roi_size`` from HR ``keys`` (and matching LR patch from ``lr_keys``).

    Along each degraded axis the HR patch starts at a multiple of ``factor`` so LR voxel ``i`` of
    the LR patch covers HR voxels ``iR ... iR+R-1`` of the HR patch (``sr``/``inplane`` also
    need the patch size there to be a multiple of ``factor``).  Writes ``crop_start`` (HR voxels).
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int],
        factor: int,
        protocol: str = "sr",
        axis: int | None = None,
        lr_keys: KeysCollection = (),
        spacing_key: str = "spacing",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.roi_size = tuple(int(s) for s in roi_size)
        if len(self.roi_size) != 3:
            raise ValueError(f"roi_size {roi_size} must have three entries")
        self.factor = check_factor(factor)
        self.protocol = check_protocol(protocol)
        self.axis = axis
        self.lr_keys = (lr_keys,) if isinstance(lr_keys, str) else tuple(lr_keys)
        self.spacing_key = spacing_key
        self._start: tuple[int, ...] = (0, 0, 0)

    def randomize(self, data=None) -> None:
        shape, axes = data
        start = []
        for a, (n, size) in enumerate(zip(shape, self.roi_size)):
            step = self.factor if a in axes else 1
            start.append(int(self.R.randint(0, (n - size) // step + 1)) * step)
        self._start = tuple(start)

    def __call__(self, data):
        d = dict(data)
        source = _case_name(d)
        keys = list(self.key_iterator(d))
        if not keys:
            raise KeyError(f"{source}: none of {self.keys} in the data")
        shape = to_numpy(d[keys[0]]).shape[1:]
        axes = degraded_axes(self.protocol, resolve_axis(self.axis, d.get(self.spacing_key), source))
        for a in axes:
            if self.protocol != "interp" and self.roi_size[a] % self.factor:
                raise ValueError(f"patch size {self.roi_size} along axis {a} must be a multiple of {self.factor}")
        if any(size > n for size, n in zip(self.roi_size, shape)):
            raise InputError(source, f"size {tuple(shape)} is smaller than the patch {self.roi_size}; pad it first")
        self.randomize((shape, axes))
        hr_index = (slice(None),) + tuple(slice(s, s + n) for s, n in zip(self._start, self.roi_size))
        for key in keys:
            d[key] = d[key][hr_index]
        lr_index = [slice(None)]
        for a, (s, n) in enumerate(zip(self._start, self.roi_size)):
            if a in axes:
                s, n = s // self.factor, lr_length(n, self.protocol, self.factor)
            lr_index.append(slice(s, s + n))
        for key in self.lr_keys:
            if key in d:
                cropped = d[key][tuple(lr_index)]
                if tuple(cropped.shape[1:]) != tuple(sl.stop - sl.start for sl in lr_index[1:]):
                    raise InputError(source, f"{key} of shape {tuple(d[key].shape)} does not cover the HR patch")
                d[key] = cropped
        d["crop_start"] = np.asarray(self._start, dtype=np.int64)
        return d
