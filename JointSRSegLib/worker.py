"""Out-of-process runs: ``python -m JointSRSegLib.worker JOB_DIR`` runs one :func:`predict` request.

The 3D Slicer module starts this in a child process (its own process group) so a run never
holds Slicer's GIL, Cancel can kill it at once, and a crash of PyTorch/CUDA takes down only the
child.  Everything crosses the process boundary as files in ``JOB_DIR`` plus one line-oriented
JSON channel:

* ``JOB_DIR/request.json`` -- ``predict`` keywords: ``model``, ``tasks``, ``scale``, ``axis``,
  ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), ``uncertainty``, ``options``.
* ``JOB_DIR/input.npz`` -- the input :class:`Volume` (``write_volume_npz``: voxels and the exact
  float64 LPS geometry, no file-format rounding).
* stdout -- one JSON object per line: ``{"event": "progress", "fraction": f, "stage": s}``,
  ``{"event": "device", "device": "..."}``, then ``{"event": "done", "outputs": {key: file}}`` or
  ``{"event": "error", "kind": "InputError" | "CancelledError" | "<type>", "message": "..."}``.
  Anything else the libraries print goes to stderr (stdout is re-pointed there), so the channel
  stays parseable.
* ``JOB_DIR/out_<key>.npz`` and ``JOB_DIR/report.json`` -- written before the ``done`` line.

Exit code 0 done, 2 a problem the user can fix (InputError), 1 any other failure.
``device="cuda:N"`` selects GPU N through ``CUDA_VISIBLE_DEVICES`` before PyTorch starts.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .errors import CancelledError, InputError
from .vocabulary import AUTO, BASELINE_NAMES, check_device
from .volume import Volume

REQUEST_FILE = "request.json"
INPUT_FILE = "input.npz"
REPORT_FILE = "report.json"


def write_volume_npz(volume: Volume, path: str | Path) -> Path:
    """Voxels and geometry, exactly (float64 spacing/origin/direction), uncompressed for speed."""
    path = Path(path)
    np.savez(
        path,
        array=np.ascontiguousarray(volume.array),
        spacing=np.asarray(volume.spacing, dtype=np.float64),
        origin=np.asarray(volume.origin, dtype=np.float64),
        direction=np.asarray(volume.direction, dtype=np.float64),
        source=np.asarray(volume.source or ""),
        channel_names=np.asarray(list(volume.channel_names or ()), dtype=str),
    )
    return path


def read_volume_npz(path: str | Path) -> Volume:
    with np.load(Path(path), allow_pickle=False) as data:
        names = tuple(str(n) for n in data["channel_names"]) or None
        return Volume(
            data["array"],
            tuple(data["spacing"]),
            tuple(data["origin"]),
            data["direction"],
            source=str(data["source"]) or None,
            channel_names=names,
        )


def select_gpu(device: str, environ: dict[str, str] | None = None) -> str:
    """``cuda:N`` -> ``cuda`` with ``CUDA_VISIBLE_DEVICES`` narrowed to GPU N (of those already visible)."""
    env = os.environ if environ is None else environ
    device = check_device(device or AUTO, gpu_index=True)
    if not device.startswith("cuda:"):
        return device
    index = device.split(":", 1)[1]
    visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        if int(index) >= len(visible):
            raise InputError(None, f"{device} was requested but only {len(visible)} GPU(s) are visible")
        index = visible[int(index)].strip()
    env["CUDA_VISIBLE_DEVICES"] = index
    return "cuda"


class Channel:
    """The JSON-lines pipe to the parent."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def send(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()


def _claim_stdout() -> TextIO:
    """A private copy of stdout for the channel; fd 1 (and sys.stdout) then point at stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return channel


def run_job(job_dir: str | Path, channel: Channel) -> int:
    job = Path(job_dir)
    try:
        request = json.loads((job / REQUEST_FILE).read_text(encoding="utf-8"))
        device = select_gpu(str(request.get("device", "auto")))
        from .api import predict  # after CUDA_VISIBLE_DEVICES is set: PyTorch may start here

        volume = read_volume_npz(job / request.get("input", INPUT_FILE))
        last = [-1.0, ""]

        def progress(fraction: float, stage: str) -> None:
            fraction = float(fraction)
            if fraction - last[0] >= 0.005 or stage != last[1]:
                last[:] = [fraction, stage]
                channel.send("progress", fraction=round(fraction, 4), stage=str(stage))

        if "torch" in sys.modules or str(request["model"]) not in BASELINE_NAMES:
            channel.send("device", device=_describe_device(device))
        prediction = predict(
            volume,
            model=request["model"],
            tasks=tuple(request.get("tasks", ("sr",))),
            scale=int(request.get("scale", 4)),
            axis=request.get("axis", "auto"),
            device=device,
            uncertainty=bool(request.get("uncertainty", False)),
            progress=progress,
            **dict(request.get("options") or {}),
        )
        outputs = {}
        for key, output in prediction.outputs.items():
            outputs[key] = write_volume_npz(output, job / f"out_{key}.npz").name
        (job / REPORT_FILE).write_text(json.dumps(prediction.report, default=str), encoding="utf-8")
        channel.send("done", outputs=outputs, report=REPORT_FILE)
        return 0
    except BaseException as error:  # reported to the parent, which shows it
        kind = "InputError" if isinstance(error, InputError) else type(error).__name__
        if not isinstance(error, (InputError, CancelledError)):
            traceback.print_exc()
        channel.send("error", kind=kind, message=str(error))
        return 2 if isinstance(error, InputError) else 1


def _describe_device(device: str) -> str:
    """e.g. "cuda (NVIDIA H100 80GB HBM3)" or "cpu (8 threads)"; the worker's own PyTorch decides."""
    try:
        from .inference.devices import describe_device, select_device

        return describe_device(select_device(device))
    except Exception as error:  # an unavailable device is reported by predict itself, with the fix
        return f"{device} ({error})"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m JointSRSegLib.worker JOB_DIR", file=sys.stderr)
        return 2
    channel = Channel(_claim_stdout())
    return run_job(args[0], channel)


if __name__ == "__main__":
    sys.exit(main())
