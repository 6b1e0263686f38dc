"""``jointsrseg batch``: every volume of a folder through one model, resumable and shardable.

Each input gets its own output folder ``OUT/<name>/`` written atomically by the same code as
``run``; a folder that already holds ``report.json`` is complete and skipped, so an interrupted
batch resumes where it stopped.  ``--shard i/n`` (or ``RANK``/``WORLD_SIZE`` under ``torchrun``)
splits the sorted file list round-robin so several processes or GPUs share the work without
talking to each other.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import InputError
from .io import READ_SUFFIXES, strip_volume_suffix, volume_suffix


def list_inputs(folder: Path) -> list[Path]:
    """Volumes (files with a known suffix, or DICOM folders) in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise InputError(folder, "input folder not found")
    items = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and volume_suffix(path) in READ_SUFFIXES:
            items.append(path)
        elif path.is_dir() and any(p.suffix.lower() == ".dcm" for p in path.iterdir()):
            items.append(path)
    return items


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        return rank, world
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(None, f"--shard {text!r} must look like i/n, e.g. 0/4") from None
    if not (count >= 1 and 0 <= index < count):
        raise InputError(None, f"--shard {text!r}: need 0 <= i < n")
    return index, count


def run_batch(args: argparse.Namespace) -> int:
    from .api import predict
    from .cli import predict_options
    from .outputs import write_outputs

    options = predict_options(args)  # checked once, before any volume is read
    index, count = parse_shard(args.shard)
    inputs = list_inputs(args.input_dir)[index::count]
    failures = 0
    for path in inputs:
        target = args.out_dir / strip_volume_suffix(path)
        if (target / "report.json").exists():
            print(f"skip (done): {path.name}")
            continue
        try:
            result = predict([path], **options)
            write_outputs(target, result.outputs, args.format, result.report)
            print(f"done: {path.name} -> {target}")
        except InputError as error:  # one bad case must not stop the batch
            failures += 1
            print(f"jointsrseg: error: {error}", file=sys.stderr)
    print(f"{len(inputs) - failures} of {len(inputs)} volumes processed in shard {index}/{count}")
    return 2 if failures else 0
