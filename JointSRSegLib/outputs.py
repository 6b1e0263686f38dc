"""Writing a run's outputs as one transaction: all files appear, or none do.

Everything is first written into a hidden temporary folder inside the output folder, then
renamed into place.  A failure (or a cancel) removes the temporary folder, and a folder this run
created is removed again, so the user never finds half a result next to their data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError
from .io import write_volume
from .vocabulary import check_output_format
from .volume import Volume


def output_paths(out_dir: Path, names: list[str], fmt: str) -> dict[str, Path]:
    check_output_format(fmt)
    return {name: out_dir / f"{name}.{fmt}" for name in names}


def refuse_overwriting_inputs(inputs: list[Path], planned: list[Path]) -> None:
    """An output that would replace an input file is refused before anything runs."""
    resolved_inputs = {Path(p).resolve() for p in inputs}
    for path in planned:
        if path.resolve() in resolved_inputs:
            raise InputError(path, "output would overwrite the input file; choose another --out-dir")


STAGING_PREFIX = ".jointsrseg-"
_STAGING_PATTERN = re.compile(r"^\.jointsrseg-(\d+)-")


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an output folder that cannot receive the outputs: an existing file,
    a dangling symbolic link, a path under a file, or a place this user cannot write."""
    out_dir = Path(out_dir)
    if out_dir.is_symlink() and not out_dir.exists():
        raise InputError(out_dir, "--out-dir is a dangling symbolic link; give a folder")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise InputError(out_dir, "--out-dir is an existing file, not a folder")
        probe_in = out_dir
    else:
        probe_in = out_dir.parent
        while not probe_in.exists() and probe_in != probe_in.parent:
            if probe_in.is_symlink():
                raise InputError(out_dir, f"{probe_in} is a dangling symbolic link; --out-dir cannot be created")
            probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise InputError(out_dir, f"--out-dir lies under {probe_in}, which is a file, not a folder")
    try:  # os.access says yes to root everywhere, even under /proc: try it
        Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}probe-", dir=probe_in)).rmdir()
    except OSError as error:
        raise InputError(out_dir, f"--out-dir cannot be written ({error.strerror or error} in {probe_in})") from None


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove staging folders (``.jointsrseg-<pid>-*``) left by runs whose process is gone (killed)."""
    removed = []
    try:
        children = list(Path(out_dir).iterdir())
    except OSError:
        return removed
    for child in children:
        match = _STAGING_PATTERN.match(child.name)
        if match is None or not child.is_dir() or child.is_symlink():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _process_alive(pid):
            continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or not ours to judge): leave its folder alone
    return True


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGTERM/SIGINT wait while the outputs are renamed into place (microseconds), so a terminate
    never lands between two renames."""
    signals = {signal.SIGTERM, signal.SIGINT}
    can_block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if can_block:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        if can_block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def write_outputs(
    out_dir: Path, volumes: dict[str, Volume], fmt: str, report: dict | None, extras: dict[str, bytes] | None = None
) -> dict[str, Path]:
    """Write volumes (``name.fmt``), ``report.json`` and extra files (e.g. ``preview.png``) into
    ``out_dir`` atomically as a set.

    Staging happens in ``out_dir/.jointsrseg-<pid>-*``; a later run removes such folders of processes
    that no longer exist (a SIGKILL cannot be caught).  Files replaced by the new outputs are kept
    until every new file is in place, and put back if anything fails."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=out_dir))
    final: dict[str, Path] = {}
    moved: list[tuple[Path, Path | None]] = []
    try:
        for name, volume in volumes.items():
            write_volume(volume, staging / f"{name}.{fmt}")
            final[name] = out_dir / f"{name}.{fmt}"
        if report is not None:
            text = json.dumps(report, indent=2, default=_json_default) + "\n"
            (staging / "report.json").write_text(text, encoding="utf-8")
            final["report"] = out_dir / "report.json"
        for file_name, payload in (extras or {}).items():
            (staging / file_name).write_bytes(payload)
            final[file_name] = out_dir / file_name
        with _signals_deferred():
            for path in final.values():
                backup = None
                if path.exists() or path.is_symlink():
                    backup = staging / f".old-{path.name}"
                    os.replace(path, backup)
                moved.append((path, backup))
                os.replace(staging / path.name, path)
    except BaseException:
        for path, backup in reversed(moved):  # put back what was there: all or nothing
            try:
                if backup is not None and backup.exists():
                    os.replace(backup, path)
                elif backup is None:
                    path.unlink(missing_ok=True)
            except OSError:
                pass
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return final


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
