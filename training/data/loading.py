"""Loading cases into MONAI datasets with exact geometry and file-named errors.

:class:`LoadCased` reads a case dict (see :mod:`training.data.datasets`) through
``JointSRSegLib.io`` -- the reader inference uses, so training sees the same voxel order and
geometry -- stacks modalities as channels (splitting 4D MSD files) and refuses corrupt data
(unreadable, truncated, NaN/Inf, label off the image grid) with an :class:`InputError` naming
the file.  NIfTI voxels come through nibabel, which refuses short data, because ITK zero-fills
truncated files and turns NaN into 0.  MONAI wraps transform errors in
``RuntimeError("applying transform ...")``; the datasets built here unwrap them again so a
corrupt case is reported by file name, never as a bare traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import CacheDataset, PersistentDataset
from monai.transforms import Compose, MapTransform

from JointSRSegLib.errors import InputError
from JointSRSegLib.io import (
    check_image_content,
    read_image_information,
    read_nifti_voxels,
    read_volume,
    volume_suffix,
)
from JointSRSegLib.volume import Volume

# --------------------------------------------------------------------------- reading


def _read_channels_4d(path: Path, count: int) -> Volume:
    """A 4D file (MSD multi-modal case) as a ``count``-channel Volume with the 3D geometry.

    Like ``JointSRSegLib.io`` for 3D NIfTI: geometry from ITK, voxels from nibabel, because ITK
    turns NaN voxels into 0 and zero-fills a truncated file without an error.
    """
    reader = read_image_information(path)
    if reader.GetDimension() == 3 and count == 1:
        return read_volume(path)
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 4 or size[3] != count:
        raise InputError(path, f"expected a 4D image with {count} channels (one per modality), got size {size}")
    if volume_suffix(path) in (".nii", ".nii.gz"):
        array = read_nifti_voxels(path)
        array = np.moveaxis(array.reshape(size), 3, 0)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(path, f"cannot read image ({str(error).strip().splitlines()[-1][:200]})") from None
        array = sitk.GetArrayFromImage(image).transpose(0, 3, 2, 1)  # (C, K, J, I) -> (C, I, J, K)
    direction = np.array(reader.GetDirection()).reshape(4, 4)[:3, :3]
    return Volume(
        np.ascontiguousarray(array), reader.GetSpacing()[:3], reader.GetOrigin()[:3], direction, source=str(path)
    )


def read_case_image(case: dict) -> Volume:
    """All modalities of a case as channels of one Volume (one file per modality, or one 4D file)."""
    paths = [Path(p) for p in case["images"]]
    modalities = list(case.get("modalities") or [])
    if len(paths) == 1 and len(modalities) > 1:
        volumes = [_read_channels_4d(paths[0], len(modalities))]
        sources = [paths[0]]
    else:
        volumes = [read_volume(p) for p in paths]
        sources = paths
    for path, volume in zip(sources, volumes):
        if volume.array.dtype.kind not in "biuf":
            raise InputError(path, f"unsupported voxel type {volume.array.dtype}")
        check_image_content(volume)
    first = volumes[0]
    for path, volume in zip(sources[1:], volumes[1:]):
        if not volume.grid.almost_equal(first.grid, tol=1e-4):
            raise InputError(path, f"grid differs from {sources[0]}; resample the modalities onto one grid first")
    array = np.concatenate([v.array.astype(np.float32) for v in volumes], axis=0)
    names = tuple(modalities) if len(modalities) == array.shape[0] else None
    return Volume(array, first.spacing, first.origin, first.direction, source=str(paths[0]), channel_names=names)


def read_case_label(case: dict, image: Volume) -> np.ndarray:
    """The label as an integer ``(1, I, J, K)`` array on the image grid."""
    path = Path(case["label"])
    label = read_volume(path)
    array = label.array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InputError(path, "label has NaN or Inf voxels")
        if not np.array_equal(array, np.rint(array)):
            raise InputError(path, "label has non-integer values (interpolated or a probability map?)")
    if not label.grid.almost_equal(image.grid, tol=1e-4):
        raise InputError(path, f"label grid differs from the image grid of {image.source}")
    return array.astype(np.int64 if array.max(initial=0) > 255 or array.min(initial=0) < 0 else np.uint8)


def read_case_probabilities(case: dict, image: Volume) -> np.ndarray:
    """Tissue probability maps ``(1 + L, I, J, K)`` float32 on the image grid, background first.

    ``case["probs"]`` lists one file per label value after background, in label order.  uint8
    files hold ``round(255 p)`` (the bundled sample); float files hold ``p``.  The background
    channel is ``1 - sum`` (clipped), so the channels sum to 1 wherever the tissues do not exceed it.
    """
    channels = []
    for name in case["probs"]:
        path = Path(name)
        volume = read_volume(path)
        if not volume.grid.almost_equal(image.grid, tol=1e-4):
            raise InputError(path, f"probability map grid differs from the image grid of {image.source}")
        stored = volume.array[0]
        array = stored.astype(np.float32) / 255.0 if stored.dtype == np.uint8 else stored.astype(np.float32)
        if not np.isfinite(array).all() or array.min() < -1e-6 or array.max() > 1 + 1e-6:
            raise InputError(path, "probability map has values outside [0, 1]")
        channels.append(np.clip(array, 0.0, 1.0))
    tissue = np.stack(channels)
    return np.concatenate([np.clip(1.0 - tissue.sum(0, keepdims=True), 0.0, 1.0), tissue]).astype(np.float32)


class LoadCased(MapTransform):
    """Case dict -> tensors ``image`` (C, I, J, K) float32, ``label`` (1, I, J, K) integer,
    ``spacing``, ``origin``, ``direction`` (LPS) and ``label_path``, and ``probs`` (1 + L, I, J, K) when
    the case lists tissue probability maps; deterministic, so MONAI caches it."""

    def __init__(self, image_key: str = "image", label_key: str = "label"):
        super().__init__(["images"])
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data):
        d = dict(data)
        if d.get("kind") == "labelmap":
            return self._label_map(d)
        image = read_case_image(d)
        if d.get("reorient") == "RAS":
            image = _ras(image)
        # Tensors throughout: MONAI's disk cache returns tensors, so numpy here would give batches
        # that mix types depending on whether an item came from the cache.
        d[self.image_key] = torch.from_numpy(image.array)
        d["spacing"] = torch.tensor(image.spacing, dtype=torch.float64)
        d["origin"] = torch.tensor(image.origin, dtype=torch.float64)
        d["direction"] = torch.from_numpy(np.asarray(image.direction, dtype=np.float64))
        label_path = d.get("label")
        if label_path is not None and not isinstance(label_path, (str, Path)):
            raise InputError(d.get("id"), "label is already loaded; LoadCased reads paths")
        d["label_path"] = str(label_path) if label_path is not None else ""
        if label_path is not None:
            d[self.label_key] = torch.from_numpy(read_case_label(d, image))
        else:
            d.pop(self.label_key, None)
        if d.get("probs"):
            d["probs"] = torch.from_numpy(read_case_probabilities(d, image))
        else:
            d.pop("probs", None)
        return d


    def _label_map(self, d: dict) -> dict:
        """A label-only case (realistic layout): the FreeSurfer labels as int16, in RAS voxel order,
        no image (each sample synthesises one from the labels)."""
        path = Path(d["label"])
        volume = read_volume(path)
        array = volume.array
        if not np.isfinite(array).all() or not np.array_equal(array, np.rint(array)) or array.min(initial=0) < 0:
            raise InputError(path, "label map must hold non-negative whole numbers")
        volume = Volume(array.astype(np.int16), volume.spacing, volume.origin, volume.direction, source=str(path))
        if d.get("reorient") == "RAS":
            volume = _ras(volume)
        d[self.label_key] = torch.from_numpy(np.ascontiguousarray(volume.array))
        d["spacing"] = torch.tensor(volume.spacing, dtype=torch.float64)
        d["origin"] = torch.tensor(volume.origin, dtype=torch.float64)
        d["direction"] = torch.from_numpy(np.asarray(volume.direction, dtype=np.float64))
        d["label_path"] = str(path)
        d.pop(self.image_key, None)
        d.pop("probs", None)
        return d


def _ras(volume: Volume) -> Volume:
    """``volume`` in RAS voxel order (exact permutation/flip; :func:`training.data.realistic.reorient_to_ras`)."""
    from .realistic import reorient_to_ras

    array, spacing, origin, direction = reorient_to_ras(volume.array, volume.spacing, volume.origin, volume.direction)
    return Volume(array, tuple(spacing), tuple(origin), direction, source=volume.source,
                  channel_names=volume.channel_names)


# --------------------------------------------------------------------------- datasets


def _input_error_in(error: BaseException) -> InputError | None:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def reported_input_errors() -> Iterator[None]:
    """Re-raise the :class:`InputError` inside MONAI's ``RuntimeError`` wrapper, file name first."""
    try:
        yield
    except InputError:
        raise
    except Exception as error:
        found = _input_error_in(error)
        if found is None:
            raise
        raise InputError(found.source, found.problem) from None


class CaseCacheDataset(CacheDataset):
    """``CacheDataset`` (cases kept in memory after :class:`LoadCased`) with file-named errors."""

    def _load_cache_item(self, idx: int):
        with reported_input_errors():
            return super()._load_cache_item(idx)

    def _transform(self, index: int):
        with reported_input_errors():
            return super()._transform(index)


class CasePersistentDataset(PersistentDataset):
    """``PersistentDataset`` (cases cached on disk in ``cache_dir``) with file-named errors."""

    def _transform(self, index: int):
        with reported_input_errors():
            return super()._transform(index)


def case_transforms(transforms: Sequence[Callable] | None = None, image_key: str = "image") -> Compose:
    """:class:`LoadCased` followed by ``transforms`` (augmentation, pairs, crops)."""
    return Compose([LoadCased(image_key=image_key), *(transforms or [])])


def build_dataset(
    cases: Sequence[dict],
    transforms: Sequence[Callable] | None = None,
    cache_dir: str | Path | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 1,
    progress: bool = False,
    warm_cache: bool = True,
) -> CacheDataset | PersistentDataset:
    """MONAI dataset of ``cases``: in-memory ``CacheDataset``, or on-disk ``PersistentDataset``
    when ``cache_dir`` is given (for datasets larger than memory).  The deterministic loading is
    cached; random transforms run on every access.  Corrupt cases raise ``InputError`` naming the
    file here, in the main process, while the cache is filled (``PersistentDataset``: unless
    ``warm_cache=False``) -- not later inside a DataLoader worker, whose errors come as tracebacks."""
    transform = case_transforms(transforms)
    data = [dict(case) for case in cases]
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        dataset = CasePersistentDataset(data, transform=transform, cache_dir=cache_dir)
        if warm_cache:
            for item in data:
                with reported_input_errors():
                    dataset._cachecheck(item)
        return dataset
    return CaseCacheDataset(
        data, transform=transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress
    )
