"""Reading and writing volumes with exact geometry, and the checks every input goes through.

Formats: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM series
(a folder) through SimpleITK; FreeSurfer .mgz/.mgh through nibabel (SimpleITK has no MGH IO).
Everything is converted to one convention: LPS physical space, ITK voxel order, channels first
(see :mod:`JointSRSegLib.volume`).  Writes are atomic: a temporary file in the target folder is
renamed over the destination only once it is complete, so a failed write never leaves a
half-written output or damages an existing file.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import Volume

READ_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".mgz", ".mgh")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def volume_suffix(path: str | Path) -> str:
    """The format suffix of a path, with the double suffix ``.nii.gz`` recognised."""
    name = Path(path).name.lower()
    for suffix in READ_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(path).suffix.lower()


def strip_volume_suffix(path: str | Path) -> str:
    """File name without its volume suffix: ``brain.nii.gz`` -> ``brain``."""
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name


# --------------------------------------------------------------------------- reading


def read_volume(path: str | Path) -> Volume:
    """Read one 3D volume (scalar, or a DICOM series folder) into a :class:`Volume`.

    Raises :class:`InputError` naming the file for anything a user can fix: a missing or
    unreadable file, a 2D or 4D image, an RGB/vector image, zero or negative spacing.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        volume = _read_dicom_series(path)
    elif volume_suffix(path) in (".mgz", ".mgh"):
        volume = _read_with_nibabel(path)
    elif volume_suffix(path) in READ_SUFFIXES:
        volume = _read_with_sitk(path)
    else:
        raise InputError(
            path, f"unsupported format {path.suffix!r}; use one of {', '.join(READ_SUFFIXES)} or a DICOM folder"
        )
    _check_geometry(volume)
    return volume


def read_volumes(paths: Sequence[str | Path], channel_names: Sequence[str] | None = None) -> Volume:
    """Read several co-registered volumes (e.g. T1, T1ce, T2, FLAIR) as channels of one Volume.

    The grids must match (size exactly, spacing/origin/direction within 1e-4 mm); stacking
    images on different grids would silently mix anatomy, so it is refused.
    """
    if not paths:
        raise InputError(None, "no input volume given")
    volumes = [read_volume(p) for p in paths]
    first = volumes[0]
    for path, vol in zip(paths[1:], volumes[1:]):
        if not vol.grid.almost_equal(first.grid, tol=1e-4):
            raise InputError(
                path,
                f"grid {_describe_grid(vol)} does not match {paths[0]} {_describe_grid(first)}; "
                "resample the modalities onto one grid first",
            )
    if len(volumes) == 1:
        return volumes[0]
    array = np.concatenate([v.array for v in volumes], axis=0)
    names = tuple(channel_names) if channel_names else tuple(strip_volume_suffix(p) for p in paths)
    return Volume(array, first.spacing, first.origin, first.direction, source=str(paths[0]), channel_names=names)


def _describe_grid(volume: Volume) -> str:
    return (
        f"(size {volume.shape}, spacing {tuple(round(s, 4) for s in volume.spacing)}, "
        f"origin {tuple(round(o, 3) for o in volume.origin)})"
    )


def _read_with_sitk(path: Path) -> Volume:
    _check_header_spacing(path)
    if volume_suffix(path) in (".nii", ".nii.gz"):
        return _read_nifti(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        message = _first_line(error)
        if "spacing" in message.lower():
            raise InputError(path, "spacing must be positive (the header has a zero spacing)") from None
        raise InputError(path, f"cannot read image ({message})") from None
    return _volume_from_sitk(image, path)


def _read_nifti(path: Path) -> Volume:
    """Geometry from ITK (exactly what Slicer shows), voxels from nibabel.

    ITK's NIfTI reader replaces NaN voxels by 0 and zero-fills a truncated file without an error;
    nibabel returns the stored values and refuses short data, so bad files are caught, not hidden.
    """
    reader = read_image_information(path)
    size = tuple(int(s) for s in reader.GetSize())
    if reader.GetDimension() != 3:
        what = "2D image" if reader.GetDimension() == 2 else f"{reader.GetDimension()}D image"
        raise InputError(path, f"{what}; a 3D volume is needed (one file per modality)")
    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            path, f"{reader.GetNumberOfComponents()}-component (RGB/vector) image; a scalar volume is needed"
        )
    array = read_nifti_voxels(path)
    array = array.reshape(array.shape[:3]) if array.ndim > 3 and int(np.prod(array.shape[3:])) == 1 else array
    if array.shape != size:
        raise InputError(path, f"voxel data of shape {array.shape} does not match the header size {size}")
    return Volume(
        np.ascontiguousarray(array)[None],
        reader.GetSpacing(),
        reader.GetOrigin(),
        np.array(reader.GetDirection()).reshape(3, 3),
        source=str(path),
    )


def read_image_information(path: str | Path) -> sitk.ImageFileReader:
    """An ITK reader holding the header (size, geometry, components) without the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(path, f"cannot read image ({_first_line(error)})") from None
    return reader


def read_nifti_voxels(path: str | Path) -> np.ndarray:
    """The stored voxels of a NIfTI file in file order, through nibabel (see :func:`_read_nifti`).

    Scaled integers become float32, as ITK (and so Slicer) reads them; truncated data or a corrupt
    gzip stream raises :class:`InputError` naming the file.
    """
    import nibabel as nib

    try:
        proxy = nib.load(str(path)).dataobj
        scaled = float(proxy.slope) != 1.0 or float(proxy.inter) != 0.0
        return np.asanyarray(proxy).astype(np.float32) if scaled else np.asanyarray(proxy)
    except Exception as error:  # truncated data, corrupt gzip stream
        raise InputError(path, f"file is truncated or corrupt ({_first_line(error)})") from None


def _header_spacing(path: Path) -> tuple[float, ...] | None:
    """Spacing as written in the header, before ITK replaces zeros by 1 or drops signs."""
    suffix = volume_suffix(path)
    if suffix in (".nii", ".nii.gz"):
        import nibabel as nib

        opener = gzip.open if suffix == ".nii.gz" else open
        try:
            with opener(path, "rb") as handle:
                header = nib.Nifti1Header.from_fileobj(handle, check=False)  # check=True "fixes" zeros
        except Exception:  # unreadable headers are reported by the real reader
            return None
        if int(header["sform_code"]) > 0:
            return tuple(float(v) for v in np.linalg.norm(header.get_sform()[:3, :3], axis=0))
        return tuple(float(v) for v in header["pixdim"][1:4])
    if suffix in (".mha", ".mhd"):
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("latin-1", errors="replace")
        for line in head.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("ElementSpacing", "ElementSize"):
                try:
                    return tuple(float(v) for v in value.split()[:3])
                except ValueError:
                    return None
    return None


def _check_header_spacing(path: Path) -> None:
    spacing = _header_spacing(path)
    if spacing is not None and (len(spacing) < 3 or not all(np.isfinite(s) and s > 0 for s in spacing[:3])):
        raise InputError(path, f"spacing {tuple(spacing)} in the header must be positive")


def _read_dicom_series(folder: Path) -> Volume:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(folder, "folder contains no DICOM series")
    # Several series in one folder: take the one with the most slices and say so in the source.
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    files = files_per_series[series_id]
    if len(files) < 2:
        raise InputError(folder, "DICOM series has a single slice; a 3D volume needs at least two")
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"cannot read DICOM series ({_first_line(error)})") from None
    return _volume_from_sitk(image, folder)


def _volume_from_sitk(image: sitk.Image, path: Path) -> Volume:
    if image.GetDimension() != 3:
        what = "2D image" if image.GetDimension() == 2 else f"{image.GetDimension()}D image"
        raise InputError(path, f"{what}; a 3D volume is needed (one file per modality)")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"{image.GetNumberOfComponentsPerPixel()}-component (RGB/vector) image; a scalar volume is needed",
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (K, J, I) -> (I, J, K)
    return Volume(
        np.ascontiguousarray(array)[None],
        image.GetSpacing(),
        image.GetOrigin(),
        np.array(image.GetDirection()).reshape(3, 3),
        source=str(path),
    )


def _read_with_nibabel(path: Path) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputError(path, f"cannot read image ({_first_line(error)})") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(path, f"{array.ndim}D image; a 3D volume is needed (one file per modality)")
    affine = np.asarray(image.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(path, f"spacing {tuple(spacing)} must be positive")
    direction = _RAS_TO_LPS @ (affine[:3, :3] / spacing)
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return Volume(np.ascontiguousarray(array)[None], spacing, origin, direction, source=str(path))


def _check_geometry(volume: Volume) -> None:
    spacing = np.asarray(volume.spacing)
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(volume.source, f"spacing {tuple(volume.spacing)} must be positive")
    if min(volume.shape) < 2:
        raise InputError(volume.source, f"size {volume.shape} is a 2D image; a 3D volume is needed")
    det = np.linalg.det(volume.direction)
    if not np.isfinite(det) or abs(abs(det) - 1.0) > 1e-3:
        raise InputError(volume.source, "direction matrix is not a rotation (degenerate orientation)")


def check_image_content(volume: Volume) -> None:
    """Refuse intensities no model can work with: NaN/Inf voxels or a constant volume."""
    array = volume.array
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        raise InputError(volume.source, f"{bad} voxel(s) are NaN or Inf")
    if array.size and float(array.max()) == float(array.min()):
        raise InputError(volume.source, f"all voxels have the same value ({array.flat[0]}); nothing to process")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    useful = [line.strip() for line in text if line.strip() and "sitk::ERROR" in line] or [
        line.strip() for line in text if line.strip()
    ]
    return (useful[-1] if useful else type(error).__name__)[:200]


# --------------------------------------------------------------------------- writing


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert to a SimpleITK image (vector image when there are several channels)."""
    array = volume.array
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if volume.channels == 1:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[0].transpose(2, 1, 0)))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(3, 2, 1, 0)), isVector=True)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(np.asarray(volume.direction).ravel()))
    return image


def write_volume(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write atomically to NIfTI/NRRD/MetaImage; the format follows the suffix."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(path, f"cannot write {suffix!r}; use one of {', '.join(WRITE_SUFFIXES)}")
    if suffix in (".nhdr", ".mhd"):
        # Detached headers reference a second data file: write both, then rename both.
        return _write_detached(volume, path, compress)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(volume_to_sitk(volume), temp, compress)
        os.chmod(temp, _default_file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _default_file_mode() -> int:
    """Permissions a plain ``open()`` would give (temp files are created 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _write_detached(volume: Volume, path: Path, compress: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as temp_dir:
        temp_path = Path(temp_dir) / path.name
        sitk.WriteImage(volume_to_sitk(volume), str(temp_path), compress)
        written = sorted(Path(temp_dir).iterdir(), key=lambda p: p == temp_path)  # header last
        for item in written:
            os.chmod(item, _default_file_mode())
            os.replace(item, path.parent / item.name)
    return path
