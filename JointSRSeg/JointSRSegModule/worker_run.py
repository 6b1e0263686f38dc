"""The panel's runs: ``python -m JointSRSegLib.worker`` in a child process, results read back into the scene.

Why a process and not a thread (as SlicerMONAIAuto3DSeg and SlicerTotalSegmentator do): a Python
thread inside Slicer holds the GIL against the GUI, cannot be stopped in the middle of a network
window, and a PyTorch/CUDA crash would take Slicer down.  The child gets the voxels and the
request as files (``JointSRSegLib.worker``), reports progress as JSON lines on its stdout pipe,
and writes its outputs next to them; :meth:`WorkerRun.finish` imports them on the main thread
through the logic's all-or-nothing transaction.  Cancel kills the child's whole process group
at once; the scene is untouched until ``finish`` succeeds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import JointSRSegLib
from JointSRSegLib.api import CancelToken, Prediction
from JointSRSegLib.errors import CancelledError, InputError
from JointSRSegLib.vocabulary import AUTO
from JointSRSegLib.worker import INPUT_FILE, REPORT_FILE, REQUEST_FILE, read_volume_npz, write_volume_npz

ProgressCallback = Callable[[float, str], None]
STDERR_FILE = "worker.log"
# The worker's share of the progress bar (prepare has used 5 %, the import takes the last 10 %).
RUN_START, RUN_SPAN = 0.05, 0.85


class WorkerCrashed(RuntimeError):
    """The child process died without reporting (segfault, CUDA abort, out-of-memory kill)."""


def library_root() -> Path:
    """The folder that holds ``JointSRSegLib``: the child's PYTHONPATH (source tree or installed extension)."""
    return Path(JointSRSegLib.__file__).resolve().parent.parent


def python_executable() -> str:
    """Inside Slicer ``PythonSlicer`` (Slicer's Python with its environment), else this interpreter."""
    if "slicer" in sys.modules and hasattr(sys.modules["slicer"], "app"):
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def kill_process_tree(process: subprocess.Popen) -> None:
    """The child and everything it started (it leads its own process group / job)."""
    if process.poll() is not None:
        return
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()


class WorkerRun:
    """Same interface as the in-process ``BackgroundRun``: ``fraction``, ``stage``, ``device``, ``done``,
    ``cancel()``, ``wait()``, ``finish()``."""

    def __init__(self, logic: Any, request: Any, python: str | None = None, env: dict[str, str] | None = None):
        self.logic, self.request = logic, request
        self.python = python or python_executable()
        self.extraEnv = dict(env or {})
        self.fraction, self.stage = 0.0, "starting"
        self.device: str | None = None
        self.cancelToken = CancelToken()
        self.process: subprocess.Popen | None = None
        self.jobDir: Path | None = None
        self._events: list[dict] = []
        self._result: dict | None = None
        self._reader: threading.Thread | None = None
        self._log = None

    # ------------------------------------------------------------------ start

    def requestJson(self) -> dict[str, Any]:
        r = self.request
        options: dict[str, Any] = {}
        if r.uncertainty and r.uncertaintyMethod != AUTO:
            options["uncertainty_method"] = r.uncertaintyMethod
        segModel = getattr(r, "segModel", None)
        if segModel:
            options["seg_model"] = segModel
        return {
            "model": str(r.modelRef),
            "tasks": list(r.tasks),
            "scale": int(r.scale),
            "axis": int(r.axis),
            "device": r.device,
            "uncertainty": bool(r.uncertainty),
            "options": options,
            "input": INPUT_FILE,
        }

    def start(self) -> WorkerRun:
        self.jobDir = Path(tempfile.mkdtemp(prefix="JointSRSeg-"))
        write_volume_npz(self.request.volume, self.jobDir / INPUT_FILE)
        (self.jobDir / REQUEST_FILE).write_text(json.dumps(self.requestJson()))
        env = dict(os.environ, **self.extraEnv)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(library_root()), env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.jobDir / STDERR_FILE, "wb")  # noqa: SIM115 (closed in _cleanup)
        kwargs: dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: killpg reaches its children too
        self.process = subprocess.Popen(
            [self.python, "-m", "JointSRSegLib.worker", str(self.jobDir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=str(self.jobDir),
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name="JointSRSeg worker pipe", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue
            self._events.append(event)
            kind = event.get("event")
            if kind == "progress":
                self.fraction = RUN_START + RUN_SPAN * float(event.get("fraction", 0.0))
                stage = str(event.get("stage", "running"))
                self.stage = "running" if stage in ("done", "checking input") else stage
            elif kind == "device":
                self.device = str(event.get("device"))
            elif kind in ("done", "error"):
                self._result = event
        self.process.stdout.close()

    # ------------------------------------------------------------------ state

    @property
    def done(self) -> bool:
        if self.process is None:
            return False
        return self.process.poll() is not None and not (self._reader and self._reader.is_alive())

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def cancel(self) -> None:
        """Kill the worker now (the scene has not been touched yet)."""
        self.cancelToken.cancel()
        if self.process is not None:
            kill_process_tree(self.process)

    def stderrTail(self, lines: int = 15) -> str:
        if self.jobDir is None or not (self.jobDir / STDERR_FILE).is_file():
            return ""
        if self._log is not None:
            self._log.flush()
        text = (self.jobDir / STDERR_FILE).read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    # ------------------------------------------------------------------ finish

    def finish(self, progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Main thread: raise what the worker reported (or its crash), else import its outputs."""
        if not self.done:
            raise RuntimeError("the run has not finished yet")
        try:
            if self.cancelToken.cancelled:
                raise CancelledError("cancelled by the user")
            result, code = self._result, self.process.returncode
            if result is None or result.get("event") != "done" or code != 0:
                self._raiseFailure(result, code)
            prediction = Prediction(
                outputs={key: read_volume_npz(self.jobDir / name) for key, name in result["outputs"].items()},
                report=json.loads((self.jobDir / result.get("report", REPORT_FILE)).read_text()),
            )
            return self.logic.importResults(self.request, prediction, progress, self.cancelToken)
        finally:
            self._cleanup()

    def _raiseFailure(self, result: dict | None, code: int) -> None:
        if result is not None and result.get("event") == "error":
            kind, message = result.get("kind"), str(result.get("message", ""))
            if kind == "InputError":
                raise InputError(None, message)
            if kind == "CancelledError":
                raise CancelledError(message)
            raise RuntimeError(f"{kind}: {message}")
        how = f"exit code {code}"
        if code is not None and code < 0 and os.name != "nt":
            try:
                how = f"signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"signal {-code}"
        tail = self.stderrTail()
        raise WorkerCrashed(
            f"the worker process stopped ({how}) before finishing; the scene is unchanged"
            + (f". Its last output:\n{tail}" if tail else "")
        )

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.jobDir is not None and "JOINTSRSEG_KEEP_JOBS" not in os.environ:
            shutil.rmtree(self.jobDir, ignore_errors=True)


__all__ = ["WorkerCrashed", "WorkerRun", "kill_process_tree", "library_root", "python_executable"]
