"""Safe file handling for model packages: untrusted zips in, atomic writes out.

Zips come from other people: every entry name is checked before anything is written (no
absolute paths, no ``..``, no symbolic links, bounded size), and each extracted file is
checked again to resolve inside the destination.  Writes go to a hidden temporary sibling of
the destination that is renamed into place only when complete, so an interrupted save or
import never leaves a half-written package behind or damages the one already there.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from .errors import InputError

MAX_ZIP_ENTRIES = 1000
MAX_PACKAGE_BYTES = 100 * 1024**2  # a package is at most 100 MB uncompressed (the shipped ones: 2-17 MB)
MAX_COMPRESSION_RATIO = 100  # per member above 1 MiB: weights barely compress, zip bombs compress ~1000:1
# The files a package has: the two it needs and an optional read-me or model card.  Nothing else is extracted.
PACKAGE_FILES = ("model.json", "model.safetensors")
OPTIONAL_PACKAGE_FILES = ("README.md", "README.txt", "README", "MODEL_CARD.md", "model_card.md", "card.md")


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip, refusing archives whose declared size could fill the disk (zip bombs)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise InputError(path, f"cannot open zip ({error})") from None
    infos = archive.infolist()
    total = sum(i.file_size for i in infos)
    problem = None
    if len(infos) > MAX_ZIP_ENTRIES:
        problem = f"zip has {len(infos)} entries; a model package has a few"
    elif total > MAX_PACKAGE_BYTES:
        problem = f"zip holds {total:,} bytes uncompressed; a model package is at most {MAX_PACKAGE_BYTES:,} bytes"
    else:
        for info in infos:
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > 1024**2 and ratio > MAX_COMPRESSION_RATIO:
                problem = (
                    f"zip entry {info.filename!r} expands {ratio:.0f}-fold ({info.file_size:,} bytes); "
                    f"more than {MAX_COMPRESSION_RATIO}-fold is refused (zip bomb)"
                )
                break
    if problem is not None:
        archive.close()
        raise InputError(path, problem)
    return archive


def check_package_members(names: list[str], prefix: str, source: Path) -> None:
    """Only the files a package has (model.json, model.safetensors, an optional README/card), under
    ``prefix``; any other entry is refused rather than silently installed."""
    allowed = {prefix + name for name in (*PACKAGE_FILES, *OPTIONAL_PACKAGE_FILES)}
    folders = {prefix} if prefix else set()
    unknown = [n for n in names if n not in allowed and n.rstrip("/") + "/" not in folders]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        known = ", ".join((*PACKAGE_FILES, *OPTIONAL_PACKAGE_FILES))
        raise InputError(source, f"zip has entries a model package does not have: {listed}; a package holds {known}")
    if len(set(names)) != len(names):
        raise InputError(source, "zip lists an entry twice; refusing an ambiguous package")


def safe_member_name(info: zipfile.ZipInfo, source: Path) -> PurePosixPath:
    """The entry's relative path, refusing anything that could land outside the target folder."""
    name = info.filename.replace("\\", "/")
    if not name or "\x00" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InputError(source, f"zip entry {info.filename!r} has an absolute path; refusing to extract")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise InputError(source, f"zip entry {info.filename!r} points outside its folder ('..'); refusing to extract")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(source, f"zip entry {info.filename!r} is a symbolic link; refusing to extract")
    return PurePosixPath(*parts)


def write_zip_atomically(out: Path, members: Mapping[str, bytes]) -> None:
    """Write ``members`` (name -> bytes) as the zip ``out`` via a temporary file and one rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w") as archive:
            for name, data in members.items():
                # raw float weights barely compress; storing them keeps saving fast
                kind = zipfile.ZIP_STORED if name.endswith(".safetensors") else zipfile.ZIP_DEFLATED
                archive.writestr(name, data, compress_type=kind)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


@contextmanager
def staging_dir(parent: Path, name: str) -> Iterator[Path]:
    """A hidden temporary folder next to the destination, removed unless renamed into place.

    ``mkdtemp`` makes it private (0700); it is opened to the umask's default (as ``mkdir`` would) so
    the package it becomes is readable by the other users of a shared model folder or Slicer install.
    """
    path = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def replace_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing target is swapped out first, then deleted."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    if backup is not None and backup.is_dir():
        shutil.rmtree(backup, ignore_errors=True)
    elif backup is not None:
        backup.unlink()


def extract_zip(path: Path, prefix: str, dest: Path) -> None:
    """Extract the package's entries (those under ``prefix``) into ``dest``, each checked to stay inside."""
    root = dest.resolve()
    written = 0
    with open_zip(path) as archive:
        check_package_members(
            [safe_member_name(i, path).as_posix() + ("/" if i.is_dir() else "") for i in archive.infolist()],
            prefix,
            path,
        )
        for info in archive.infolist():
            name = safe_member_name(info, path).as_posix()
            if info.is_dir() or not name.startswith(prefix):
                continue
            target = (root / name[len(prefix) :]).resolve()
            if root not in target.parents:
                raise InputError(path, f"zip entry {info.filename!r} points outside its folder; refusing to extract")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(target, "xb") as dst:
                    written += _copy_bounded(src, dst, MAX_PACKAGE_BYTES - written)
            except (OSError, zipfile.BadZipFile) as error:
                raise InputError(path, f"cannot extract zip entry {info.filename!r} ({error})") from None
            except OverflowError:
                raise InputError(path, f"zip expands beyond {MAX_PACKAGE_BYTES:,} bytes; refused") from None


def _copy_bounded(src, dst, limit: int) -> int:
    """Copy at most ``limit`` bytes (the declared sizes of a zip can lie); OverflowError beyond."""
    copied = 0
    while chunk := src.read(1024 * 1024):
        copied += len(chunk)
        if copied > limit:
            raise OverflowError
        dst.write(chunk)
    return copied


def copy_folder(src: Path, dest: Path) -> None:
    """Copy the files a package has (regular files, no links, at most 100 MB), so an installed package
    never points elsewhere and carries nothing else from the folder it came from."""
    total = 0
    for name in (*PACKAGE_FILES, *OPTIONAL_PACKAGE_FILES):
        item = src / name
        if item.is_symlink():
            raise InputError(item, "model packages may not contain symbolic links")
        if not item.is_file():
            continue
        total += item.stat().st_size
        if total > MAX_PACKAGE_BYTES:
            raise InputError(src, f"package is larger than {MAX_PACKAGE_BYTES:,} bytes; refused")
        shutil.copyfile(item, dest / name)


__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MAX_PACKAGE_BYTES",
    "OPTIONAL_PACKAGE_FILES",
    "PACKAGE_FILES",
    "check_package_members",
    "MAX_ZIP_ENTRIES",
    "copy_folder",
    "extract_zip",
    "open_zip",
    "replace_dir",
    "safe_member_name",
    "staging_dir",
    "write_zip_atomically",
]
