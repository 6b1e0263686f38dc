"""Writing a run's outputs as one transaction: all files appear, or none do.

Everything is first written into a hidden temporary folder inside the output folder, then
renamed into place.  A failure (or a cancel) removes the temporary folder, and a folder this run
created is removed again, so the user never finds half a result next to their data.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError
from .io import write_volume
from .volume import Volume

OUTPUT_FORMATS = ("nii.gz", "nrrd")


def output_paths(out_dir: Path, names: list[str], fmt: str) -> dict[str, Path]:
    if fmt not in OUTPUT_FORMATS:
        raise InputError(None, f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    return {name: out_dir / f"{name}.{fmt}" for name in names}


def refuse_overwriting_inputs(inputs: list[Path], planned: list[Path]) -> None:
    """An output that would replace an input file is refused before anything runs."""
    resolved_inputs = {Path(p).resolve() for p in inputs}
    for path in planned:
        if path.resolve() in resolved_inputs:
            raise InputError(path, "output would overwrite the input file; choose another --out-dir")


def write_outputs(
    out_dir: Path, volumes: dict[str, Volume], fmt: str, report: dict | None, extras: dict[str, bytes] | None = None
) -> dict[str, Path]:
    """Write volumes (``name.fmt``), ``report.json`` and extra files (e.g. ``preview.png``) into
    ``out_dir`` atomically as a set."""
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".jointsrseg-", dir=out_dir))
    final: dict[str, Path] = {}
    try:
        for name, volume in volumes.items():
            write_volume(volume, staging / f"{name}.{fmt}")
            final[name] = out_dir / f"{name}.{fmt}"
        if report is not None:
            (staging / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
            final["report"] = out_dir / "report.json"
        for file_name, payload in (extras or {}).items():
            (staging / file_name).write_bytes(payload)
            final[file_name] = out_dir / file_name
        for path in final.values():
            os.replace(staging / path.name, path)
    except BaseException:
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
