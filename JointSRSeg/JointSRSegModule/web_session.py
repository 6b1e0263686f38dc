"""One browser session of ``jointsrseg serve``: a scene, one input volume, one run at a time.

No web framework here -- ``serve.py`` binds this to the page.  Everything a run needs comes from the
module's own code, so the web panel and the Slicer panel cannot drift apart: volumes are read and
checked by ``JointSRSegLib.io.read_volume`` (uploads and ``--data-dir`` files alike), the request is
checked by ``JointSRSegLogic.prepare``, the run is the Slicer panel's worker process
(``JointSRSegLogic.runInWorker``), the outputs land in the scene through ``importResults``, and the
downloads are written by ``JointSRSegLib.outputs.write_outputs`` (the CLI's atomic writer).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from JointSRSegLib.errors import InputError
from JointSRSegLib.io import READ_SUFFIXES, read_volume, strip_volume_suffix, volume_suffix
from JointSRSegLib.outputs import write_outputs
from JointSRSegLib.vocabulary import AUTO, OUTPUT_FORMATS, check_choice, uncertainty_unit_text
from JointSRSegLib.volume import Volume

from . import checks, nodes, sample_data
from .logic import JointSRSegLogic

DEFAULT_MAX_UPLOAD_MB = 512
MAX_LISTED_FILES = 500
UNCERTAINTY_KEYS = ("uncertainty_sr", "uncertainty_interp", "uncertainty_seg")  # the overlay's order (logic._display)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def first_line(error: BaseException) -> str:
    """The page shows one line per error: the message's first line, with its type when it is not ours."""
    text = (str(error).strip().splitlines() or [""])[0]
    return text if isinstance(error, InputError) else f"{type(error).__name__}: {text}".rstrip(": ")


class DataFolder:
    """The volumes under ``--data-dir``; a name from the page resolves only to a file listed here."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root).resolve() if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise InputError(root, "is not a folder (--data-dir)")

    def files(self) -> list[str]:
        """Relative POSIX paths of the readable volumes (no symbolic link leads outside the folder)."""
        if self.root is None:
            return []
        found = []
        for path in sorted(self.root.rglob("*")):
            if volume_suffix(path) in READ_SUFFIXES and self._inside(path) and path.is_file():
                found.append(path.relative_to(self.root).as_posix())
                if len(found) >= MAX_LISTED_FILES:
                    break
        return found

    def _inside(self, path: Path) -> bool:
        try:
            path.resolve().relative_to(self.root)
        except ValueError:
            return False
        return not any(part.startswith(".") for part in path.relative_to(self.root).parts)

    def resolve(self, name: str) -> Path:
        if self.root is None:
            raise InputError(name, "no data folder was given (start the server with --data-dir DIR)")
        if not isinstance(name, str) or name not in self.files():
            raise InputError(name, "is not a volume in the data folder")
        return (self.root / name).resolve()


def safe_file_name(name: str) -> str:
    """The upload's base name with anything but letters, digits, ``.``, ``_`` and ``-`` replaced."""
    base = _UNSAFE.sub("_", Path(str(name).replace("\\", "/")).name).lstrip(".")
    return base[-120:] or "upload"


@dataclass
class Download:
    key: str  # sr, seg, uncertainty_sr ... or "report"
    file: str  # the name the browser saves it as


class WebLogic(JointSRSegLogic):
    """The module logic, keeping the last imported run (its volumes and report) for the downloads."""

    lastPrediction = None
    lastRequest = None

    def importResults(self, request, prediction, progress=None, cancel=None) -> dict[str, Any]:
        result = super().importResults(request, prediction, progress, cancel)
        self.lastPrediction, self.lastRequest = prediction, request
        return result


class WebSession:
    """What one page drives: load a volume, run, cancel, poll, legend, downloads."""

    def __init__(self, scene, data_dir: str | Path | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB):
        self.scene = scene
        self.logic = WebLogic(scene)
        self.data = DataFolder(data_dir)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.models = {m.id: m for m in self.logic.availableModels()}
        self.input_node = None
        self.outputs: dict[str, Any] = {}
        self.run = None
        self._work = Path(tempfile.mkdtemp(prefix="jointsrseg-serve-"))

    def close(self) -> None:
        if self.run is not None:
            self.run.cancel()
        shutil.rmtree(self._work, ignore_errors=True)

    # ------------------------------------------------------------------ loading

    def load_sample(self):
        """The bundled real thick-slice scan (the Sample Data entry of the Slicer module)."""
        sample = sample_data.THICK_SAMPLE
        return self._load(sample_data.sample_dir() / sample.file, sample.node)

    def load_data_file(self, name: str):
        path = self.data.resolve(name)
        return self._load(path, strip_volume_suffix(path))

    def load_upload(self, name: str, content: bytes):
        """An uploaded file: size-limited, its name sanitised, read by the library's reader in a private folder."""
        self._refuse_while_running()
        shown = safe_file_name(name)
        if len(content) > self.max_upload_bytes:
            raise InputError(shown, f"is {len(content) / 2**20:.0f} MB; uploads are limited to "
                             f"{self.max_upload_bytes / 2**20:.0f} MB (--max-upload-mb)")
        if volume_suffix(shown) not in READ_SUFFIXES:
            raise InputError(shown, f"is not a volume file; upload one of {', '.join(READ_SUFFIXES)}")
        folder = Path(tempfile.mkdtemp(dir=self._work))
        try:
            path = folder / shown
            path.write_bytes(content)
            try:
                return self._load(path, strip_volume_suffix(shown))
            except InputError as error:  # name the file as the user knows it, not the private copy
                problem = error.problem.replace(str(path), shown).replace(str(folder), ".")
                raise InputError(shown, problem) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _load(self, path: Path, name: str):
        self._refuse_while_running()
        volume = read_volume(path)
        if volume.channels != 1:
            raise InputError(path.name, f"has {volume.channels} channels; the web panel takes one image")
        self._clear()
        node = nodes.new_scalar_volume_node(volume, name)
        self.scene.AddNode(node)
        node.CreateDefaultDisplayNodes()
        self.input_node = node
        return node

    def _clear(self) -> None:
        """A new input replaces the previous one and its outputs (one volume per session)."""
        for class_name in ("vtkMRMLSegmentationNode", "vtkMRMLScalarVolumeNode"):
            for node in list(nodes._nodes_of_class(self.scene, class_name)):
                self.scene.RemoveNode(node)
        self.input_node, self.outputs = None, {}
        self.logic.lastPrediction = self.logic.lastRequest = None

    def input_summary(self) -> str:
        if self.input_node is None:
            return ""
        volume = nodes.volume_from_nodes([self.input_node])
        size = " × ".join(str(n) for n in volume.shape)
        spacing = " × ".join(f"{s:g}" for s in volume.spacing)
        return f"{self.input_node.GetName()}: {size} voxels, {spacing} mm"

    # ------------------------------------------------------------------ running

    def _refuse_while_running(self) -> None:
        if self.run is not None:
            raise InputError(None, "a run is in progress; wait for it to finish or press Cancel")

    def start(self, model: str, tasks: Sequence[str], scale: int, sr_direction: str, axis: int | str = AUTO,
              device: str = AUTO, uncertainty: bool = False, uncertainty_method: str = AUTO,
              seg_model: str = checks.SEG_MODEL_NONE, opacity: float = 0.5):
        """Check the request exactly as the Slicer panel does (``prepare``) and start its worker process."""
        self._refuse_while_running()
        if self.input_node is None:
            raise InputError(None, "load a volume first (sample, data folder or upload)")
        request = self.logic.prepare(
            self.input_node, model=model, tasks=tasks, scale=int(scale), axis=axis, device=device,
            uncertainty=bool(uncertainty), uncertaintyMethod=uncertainty_method, opacity=float(opacity),
            protocol=self.logic.requestProtocol(tasks, sr_direction), segModel=seg_model,
        )
        self.run = self.logic.runInWorker(request)
        return request

    def cancel(self) -> bool:
        if self.run is None:
            return False
        self.run.cancel()
        return True

    def finish(self) -> dict[str, Any]:
        """After ``run.done``: import the outputs (all-or-nothing) or raise what stopped the run."""
        run, self.run = self.run, None
        if run is None:
            raise InputError(None, "no run to finish")
        self.outputs = run.finish()
        return self.outputs

    # ------------------------------------------------------------------ what the page shows

    def overlay_key(self) -> str | None:
        return next((key for key in UNCERTAINTY_KEYS if key in self.outputs), None)

    def legend(self) -> dict[str, Any]:
        """The colour legend of the uncertainty overlay and the segment colours of the last run."""
        key = self.overlay_key()
        result: dict[str, Any] = {"uncertainty": None, "segments": []}
        prediction, request = self.logic.lastPrediction, self.logic.lastRequest
        if key is not None and prediction is not None:
            kind = prediction.report.get("model", {}).get("uncertainty_kinds", {}).get(key)
            if kind is None and request is not None and request.segModel:
                kind = "posterior"
            result["uncertainty"] = {
                "title": f"{key.replace('_', ' ')} ({kind or 'model map'})",
                "unit": uncertainty_unit_text(kind),
                "gradient": ", ".join(
                    f"rgb({', '.join(str(round(255 * c)) for c in nodes.inferno_rgb(t / 10))}) {10 * t}%"
                    for t in range(11)
                ),
            }
        if "seg" in self.outputs and request is not None:
            for label in request.model.labels:
                rgb = nodes.label_color(label)
                result["segments"].append(
                    {"name": label["name"], "color": "#" + "".join(f"{round(255 * c):02x}" for c in rgb)}
                )
        return result

    def downloads(self, fmt: str) -> list[Download]:
        prediction = self.logic.lastPrediction
        if prediction is None:
            return []
        fmt = check_choice(fmt, OUTPUT_FORMATS, "output format")
        stem = safe_file_name(self.input_node.GetName() if self.input_node is not None else "output")
        files = [Download(key, f"{stem}_{key}.{fmt}") for key in prediction.outputs]
        return files + [Download("report", f"{stem}_report.json")]

    def download_bytes(self, key: str, fmt: str) -> bytes:
        """One output file (NIfTI or NRRD, exact geometry) or report.json, written by the CLI's writer."""
        prediction = self.logic.lastPrediction
        if prediction is None:
            raise InputError(None, "nothing to download yet; run first")
        fmt = check_choice(fmt, OUTPUT_FORMATS, "output format")
        if key != "report" and key not in prediction.outputs:
            raise InputError(key, "is not an output of the last run")
        folder = Path(tempfile.mkdtemp(dir=self._work))
        try:
            volumes: Mapping[str, Volume] = {} if key == "report" else {key: prediction.outputs[key]}
            written = write_outputs(folder / "out", dict(volumes), fmt, prediction.report if key == "report" else None)
            return written[key].read_bytes()
        finally:
            shutil.rmtree(folder, ignore_errors=True)


__all__ = ["DataFolder", "Download", "WebLogic", "WebSession", "first_line", "safe_file_name"]
