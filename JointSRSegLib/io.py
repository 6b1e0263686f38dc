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
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def read_volume(path: str | Path, series: str | None = None) -> Volume:
    """Read one 3D volume (scalar, or a DICOM series folder) into a :class:`Volume`.

    Raises :class:`InputError` naming the file for anything a user can fix: a missing or
    unreadable file, a 2D or 4D image, an RGB/vector image, a non-finite or non-positive spacing,
    a non-finite origin, a direction that is not orthonormal, a detached header whose data file
    lies outside the header's folder, a DICOM folder with several series (``series`` chooses one)
    or with slices that do not fit together.  Headers are checked before any voxel is read.
    """
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InputError(None, f"input path must be a non-empty file or folder name, got {path!r}")
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    with quiet_itk():
        if path.is_dir():
            volume = _read_dicom_series(path, series)
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


@contextmanager
def quiet_itk() -> Iterator[None]:
    """ITK's global warning output off while reading (its multi-line warnings would precede our one line)."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def read_volumes(
    paths: Sequence[str | Path], channel_names: Sequence[str] | None = None, series: str | None = None
) -> Volume:
    """Read several co-registered volumes (e.g. T1, T1ce, T2, FLAIR) as channels of one Volume.

    The grids must match (size exactly, spacing/origin/direction within 1e-4 mm); stacking
    images on different grids would silently mix anatomy, so it is refused.
    """
    if not paths:
        raise InputError(None, "no input volume given")
    volumes = [read_volume(p, series) for p in paths]
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
    if volume_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_header(path)
        _check_header_spacing(path)
        return _read_nifti(path)
    check_text_header(path)  # data files inside the header's folder, geometry fields valid
    _check_header_spacing(path)
    reader = read_image_information(path)
    if reader.GetDimension() == 3:
        check_grid_fields(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    try:
        image = reader.Execute()
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


def _read_dicom_series(folder: Path, series: str | None = None) -> Volume:
    reader = sitk.ImageSeriesReader()
    series_ids = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series_ids:
        raise InputError(folder, "folder contains no DICOM series")
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    if series is not None:
        if series not in files_per_series:
            listed = _list_series(files_per_series)
            raise InputError(folder, f"no DICOM series {series!r} here; the folder has {listed}")
        series_id = series
    elif len(series_ids) > 1:
        raise InputError(
            folder,
            f"folder holds {len(series_ids)} DICOM series: {_list_series(files_per_series)}; "
            "choose one with --series UID (Python: series=UID)",
        )
    else:
        series_id = series_ids[0]
    files = files_per_series[series_id]
    if len(files) < 2:
        raise InputError(folder, "DICOM series has a single slice; a 3D volume needs at least two")
    _check_dicom_slices(folder, files)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(folder, f"cannot read DICOM series ({_first_line(error)})") from None
    return _volume_from_sitk(image, folder)


def _list_series(files_per_series: dict[str, Sequence[str]]) -> str:
    return ", ".join(f"{sid} ({len(files)} files)" for sid, files in files_per_series.items())


def _check_dicom_slices(folder: Path, files: Sequence[str]) -> None:
    """All slices of a series must have one size, one pixel layout and parallel orientations."""
    kinds = ("size", "pixel type", "orientation", "in-plane spacing")
    groups: dict[str, dict[tuple, list[str]]] = {kind: {} for kind in kinds}
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
        except RuntimeError as error:
            raise InputError(name, f"cannot read DICOM slice ({_first_line(error)})") from None
        size = tuple(int(v) for v in reader.GetSize()[:2])
        keys = {
            "size": size,
            "pixel type": (sitk.GetPixelIDValueAsString(reader.GetPixelID()), reader.GetNumberOfComponents()),
            "orientation": tuple(round(float(v), 3) for v in reader.GetDirection()[:6]),
            "in-plane spacing": tuple(round(float(v), 4) for v in reader.GetSpacing()[:2]),
        }
        for what, key in keys.items():
            groups[what].setdefault(key, []).append(Path(name).name)
    for what, by_value in groups.items():
        if len(by_value) > 1:
            parts = [
                f"{'x'.join(str(v) for v in key) if what == 'size' else key} in {len(names)} file(s) (e.g. {names[0]})"
                for key, names in sorted(by_value.items(), key=lambda item: -len(item[1]))
            ]
            raise InputError(folder, f"DICOM series is inconsistent: slice {what} differs: {'; '.join(parts)}")


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
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputError(path, f"cannot read image ({_first_line(error)})") from None
    affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        r, c = (int(v) for v in np.argwhere(~np.isfinite(affine))[0])
        field = f"origin[{r}]" if c == 3 else f"spacing[{c}]"
        raise InputError(path, f"{field} is {_describe_number(affine[r, c])} (MGH header); the header is corrupt")
    try:
        array = np.asanyarray(image.dataobj)
    except Exception as error:
        raise InputError(path, f"cannot read image ({_first_line(error)})") from None
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(path, f"{array.ndim}D image; a 3D volume is needed (one file per modality)")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise InputError(path, f"spacing {tuple(spacing)} must be positive")
    direction = _RAS_TO_LPS @ (affine[:3, :3] / spacing)
    origin = _RAS_TO_LPS @ affine[:3, 3]
    return Volume(np.ascontiguousarray(array)[None], spacing, origin, direction, source=str(path))


def _check_geometry(volume: Volume) -> None:
    check_grid_fields(volume.source, volume.spacing, volume.origin, volume.direction)
    if min(volume.shape) < 2:
        raise InputError(volume.source, f"size {volume.shape} is a 2D image; a 3D volume is needed")


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


# --------------------------------------------------------------------------- header checks
#
# Text headers (NRRD, MetaImage) are parsed here before ITK sees the file: a detached header's data
# file must lie inside the header's own folder (ITK would read any file on the machine), and every
# geometry field must be finite and sane (ITK reads a NaN spacing as 1.0 and reports a singular
# direction as "(0 0 1)").  Nothing here reads voxels.

MAX_TEXT_HEADER_BYTES = 1 << 20
DIRECTION_TOLERANCE = 1e-3
_NUMBER = r"[-+]?(?:nan|infinity|inf|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)"


def _text_header(path: Path, nrrd: bool) -> tuple[dict[str, str], list[str]]:
    """Fields of an NRRD (``key: value``) or MetaImage (``Key = value``) header, and the lines after
    the field that ends it (NRRD ``data file: LIST``, MetaImage ``ElementDataFile = LIST``)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_TEXT_HEADER_BYTES)
    except OSError as error:
        raise InputError(path, f"cannot read ({error.strerror or error})") from None
    if nrrd and not head.startswith(b"NRRD"):
        raise InputError(path, "not an NRRD file (no NRRD magic line)")
    fields: dict[str, str] = {}
    lines = head.decode("latin-1").split("\n")
    rest: list[str] = []
    for number, raw in enumerate(lines[1:] if nrrd else lines, start=1):
        line = raw.rstrip("\r")
        if nrrd:
            if not line:  # the blank line ends an NRRD header
                break
            if line.startswith("#") or ":=" in line:
                continue
            key, sep, value = line.partition(": ")
        else:
            key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        fields[key] = value.strip()
        ending = key in ("data file", "datafile") if nrrd else key == "elementdatafile"
        if ending and value.strip().upper().startswith("LIST"):
            rest = [r.rstrip("\r").strip() for r in lines[(number + 1 if nrrd else number) :]]
            rest = [r for r in rest if r]
            break
        if not nrrd and key == "elementdatafile":
            break  # binary data follows in a .mha
    return fields, rest


def _numbers(path: Path, field: str, text: str) -> list[float]:
    values = re.findall(_NUMBER, text, flags=re.IGNORECASE)
    try:
        return [float(v) for v in values]
    except ValueError:
        raise InputError(path, f"header field {field!r} is not a list of numbers: {text[:60]!r}") from None


def _describe_number(value: float) -> str:
    return "NaN" if np.isnan(value) else ("infinite" if np.isinf(value) else str(value))


def check_grid_fields(source, spacing, origin, direction, where: str = "") -> None:
    """Refuse a non-finite or non-positive spacing, a non-finite origin and a direction matrix that is
    not orthonormal, naming the field (``spacing[2] is NaN``)."""
    suffix = f" ({where})" if where else ""
    for i, value in enumerate(spacing):
        if not np.isfinite(value):
            raise InputError(source, f"spacing[{i}] is {_describe_number(value)}{suffix}; spacing must be positive")
        if value <= 0:
            raise InputError(source, f"spacing[{i}] is {value}{suffix}; spacing must be positive")
    for i, value in enumerate(origin):
        if not np.isfinite(value):
            raise InputError(source, f"origin[{i}] is {_describe_number(value)}{suffix}; the origin must be finite")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    bad = np.argwhere(~np.isfinite(matrix))
    if bad.size:
        r, c = (int(v) for v in bad[0])
        raise InputError(source, f"direction[{r}][{c}] is {_describe_number(matrix[r, c])}{suffix}")
    error = np.abs(matrix.T @ matrix - np.eye(3))
    if error.max() > DIRECTION_TOLERANCE:
        r, c = (int(v) for v in np.unravel_index(np.argmax(error), error.shape))
        what = f"column {r} does not have unit length" if r == c else f"columns {r} and {c} are not perpendicular"
        raise InputError(
            source,
            f"direction matrix{suffix} is not orthonormal ({what}, error {error[r, c]:.3g} > {DIRECTION_TOLERANCE}); "
            "the orientation is degenerate",
        )


def _check_data_files(path: Path, names: list[str], field: str) -> None:
    """Every data file of a detached header must resolve inside the header's folder."""
    root = path.absolute().parent.resolve()
    for name in names:
        if not name or "\x00" in name:
            raise InputError(path, f"{field} names an empty data file")
        pure = Path(name)
        if pure.is_absolute() or re.match(r"^[A-Za-z]:[\\/]", name) or name.startswith("\\"):
            raise InputError(path, f"{field} {name!r} is an absolute path; the data file must lie next to the header")
        if ".." in re.split(r"[\\/]", name):
            raise InputError(path, f"{field} {name!r} points outside the header's folder ('..'); refused")
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise InputError(path, f"{field} {name!r} resolves outside the header's folder (a link); refused")


def _expand_pattern(path: Path, field: str, spec: str, nrrd: bool) -> list[str]:
    """``name%03d.raw min max step`` (NRRD: ``min max step [subdim]``) -> the file names it means."""
    parts = spec.split()
    if len(parts) < 4 or "%" not in parts[0]:
        return [spec]
    try:
        start, stop, step = (int(v) for v in parts[1:4])
        if step == 0 or abs(stop - start) // abs(step) > 100000:
            raise ValueError
        names = [parts[0] % i for i in range(start, stop + (1 if step > 0 else -1), step)]
    except (ValueError, TypeError):
        raise InputError(path, f"{field} {spec[:60]!r} is not a valid file-name pattern") from None
    return names


def check_text_header(path: str | Path) -> None:
    """NRRD / MetaImage headers: data files inside the header's folder, geometry fields valid."""
    path = Path(path)
    suffix = volume_suffix(path)
    if suffix in (".nrrd", ".nhdr"):
        _check_nrrd_header(path)
    elif suffix in (".mha", ".mhd"):
        _check_meta_header(path)


def _check_nrrd_header(path: Path) -> None:
    fields, listed = _text_header(path, nrrd=True)
    data_key = "data file" if "data file" in fields else "datafile" if "datafile" in fields else None
    if data_key is not None:
        value = fields[data_key]
        if value.upper().startswith("LIST"):
            if not listed:
                raise InputError(path, "data file: LIST names no data files")
            _check_data_files(path, listed, "data file")
        else:
            _check_data_files(path, _expand_pattern(path, "data file", value, True), "data file")
    elif suffix_is_detached(path):
        raise InputError(path, "detached NRRD header (.nhdr) without a 'data file' field")
    if fields.get("dimension", "3").strip() != "3":
        return  # 2D/4D images are refused by the reader with their own message
    where = "NRRD header"
    spacing = origin = direction = None
    if "space directions" in fields:
        vectors = re.findall(r"\(([^)]*)\)", fields["space directions"])
        if len(vectors) < 3:
            raise InputError(path, f"space directions {fields['space directions'][:80]!r} must give three vectors")
        columns = []
        for i, vector in enumerate(vectors[:3]):
            values = _numbers(path, "space directions", vector)
            if len(values) != 3:
                raise InputError(path, f"space directions vector {i} {vector!r} must have three components")
            columns.append(values)
        matrix = np.array(columns, dtype=float).T
        spacing = np.linalg.norm(matrix, axis=0) if np.all(np.isfinite(matrix)) else None
        if spacing is None:
            r, c = (int(v) for v in np.argwhere(~np.isfinite(matrix))[0])
            raise InputError(path, f"spacing[{c}] is {_describe_number(matrix[r, c])} (NRRD space directions)")
        for i, s in enumerate(spacing):
            if s <= 0:
                raise InputError(path, f"spacing[{i}] is 0 (NRRD space directions vector {i} is zero)")
        direction = matrix / spacing
    elif "spacings" in fields:
        spacing = _numbers(path, "spacings", fields["spacings"])[:3]
    if "space origin" in fields:
        origin = _numbers(path, "space origin", fields["space origin"].strip("()"))
    check_grid_fields(
        path,
        spacing if spacing is not None else (1.0, 1.0, 1.0),
        origin if origin is not None else (0.0, 0.0, 0.0),
        direction if direction is not None else np.eye(3),
        where,
    )


def suffix_is_detached(path: Path) -> bool:
    return volume_suffix(path) in (".nhdr", ".mhd")


def _check_meta_header(path: Path) -> None:
    fields, listed = _text_header(path, nrrd=False)
    value = fields.get("elementdatafile")
    if value is None:
        raise InputError(path, "MetaImage header without ElementDataFile")
    if value.upper() == "LOCAL":
        if suffix_is_detached(path):
            raise InputError(path, "ElementDataFile = LOCAL in a detached .mhd header; it has no data")
    elif value.upper().startswith("LIST"):
        if not listed:
            raise InputError(path, "ElementDataFile = LIST names no data files")
        _check_data_files(path, listed, "ElementDataFile")
    else:
        _check_data_files(path, _expand_pattern(path, "ElementDataFile", value, False), "ElementDataFile")
    if fields.get("ndims", "3").strip() != "3":
        return
    where = "MetaImage header"
    spacing = next((fields[k] for k in ("elementspacing", "elementsize") if k in fields), None)
    origin = next((fields[k] for k in ("offset", "origin", "position") if k in fields), None)
    matrix = next((fields[k] for k in ("transformmatrix", "rotation", "orientation") if k in fields), None)
    spacing_values = _numbers(path, "ElementSpacing", spacing)[:3] if spacing else [1.0, 1.0, 1.0]
    origin_values = _numbers(path, "Offset", origin)[:3] if origin else [0.0, 0.0, 0.0]
    direction = np.eye(3)
    if matrix:
        values = _numbers(path, "TransformMatrix", matrix)
        if len(values) == 9:
            direction = np.array(values).reshape(3, 3).T  # stored row by row: each row is one axis
    check_grid_fields(path, spacing_values, origin_values, direction, where)


def _check_nifti_header(path: Path) -> None:
    """The NIfTI geometry fields (pixdim, qform, sform) are finite before ITK or nibabel use them."""
    import nibabel as nib

    opener = gzip.open if volume_suffix(path) == ".nii.gz" else open
    try:
        with opener(path, "rb") as handle:
            header = nib.Nifti1Header.from_fileobj(handle, check=False)
    except Exception:  # unreadable headers are reported by the real reader
        return
    fields = {
        "pixdim": [float(v) for v in header["pixdim"][1:4]],
        "qoffset": [float(header[k]) for k in ("qoffset_x", "qoffset_y", "qoffset_z")],
        "quatern": [float(header[k]) for k in ("quatern_b", "quatern_c", "quatern_d")],
    }
    if int(header["sform_code"]) > 0:
        for row in ("srow_x", "srow_y", "srow_z"):
            fields[row] = [float(v) for v in header[row]]
    for name, values in fields.items():
        for i, value in enumerate(values):
            if not np.isfinite(value):
                label = f"spacing[{i}]" if name == "pixdim" else f"{name}[{i}]"
                raise InputError(path, f"{label} is {_describe_number(value)} (NIfTI {name}); the header is corrupt")


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
