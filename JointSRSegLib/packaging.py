"""Model packages: trained weights plus everything needed to use them safely, in one folder or zip.

A package is ``model.safetensors`` (the state dict) + ``model.json`` (schema in
:mod:`JointSRSegLib.package_schema`, documented in ``docs/model-packages.md``).  Packages come
from other people, so loading never unpickles (safetensors holds raw tensors only), the
weights' sha256 is checked against ``model.json`` every time the bytes are read, zip entries
cannot escape their folder, and every write (saving, importing) goes to a temporary sibling
first and is renamed into place, so a failure never leaves a half-written package.

Where models are found (``available_models`` / ``resolve_model``): a path to a package; a
classical baseline name; the user's folder (``$JOINTSRSEG_MODELS``, default
``~/.jointsrseg/models``); the built-in ``Resources/Models``.  A user package with the id of
a built-in one takes precedence, so an updated model can be installed without a new release.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .baselines import baseline_tasks
from .errors import InputError
from .package_files import (
    check_package_members,
    copy_folder,
    extract_zip,
    open_zip,
    replace_dir,
    safe_member_name,
    staging_dir,
    write_zip_atomically,
)
from .package_schema import SCHEMA_VERSION, ScaleSpec, validate_metadata
from .package_verify import load_json_bounded, verify_package_contents
from .vocabulary import BASELINE_NAMES, MAX_FACTOR, MIN_FACTOR, SCALE_FACTORS, THROUGH_PLANE_PROTOCOLS

if TYPE_CHECKING:  # torch is imported where weights are read: listing packages works without it (Slicer)
    import torch
    import torch.nn as nn

METADATA_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
MODELS_ENV = "JOINTSRSEG_MODELS"
_log = logging.getLogger(__name__)


def user_models_dir() -> Path:
    """The user's model folder: ``$JOINTSRSEG_MODELS`` or ``~/.jointsrseg/models``."""
    configured = os.environ.get(MODELS_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".jointsrseg" / "models"


def _known_architectures() -> Mapping[str, Any] | None:
    """The architecture registry, or None where PyTorch is not installed yet (a fresh 3D Slicer):
    packages are then listed from their schema-checked model.json, and the architecture is
    checked when the model is built, after the module has installed PyTorch."""
    try:
        from .models import ARCHITECTURES  # imported late: building the zoo is only needed for packages
    except ImportError:
        return None
    return ARCHITECTURES


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- the package


@dataclass(frozen=True)
class ModelPackage:
    """A verified package: its ``model.json`` content and where it lives (folder or zip).

    ``member_prefix`` is the folder inside a zip that holds the two files ("" at the root).
    """

    path: Path
    metadata: dict[str, Any] = field(repr=False, compare=False)
    member_prefix: str = ""

    @property
    def id(self) -> str:
        return self.metadata["id"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.metadata["tasks"])

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c["name"] for c in self.metadata["inputs"])

    @property
    def channels(self) -> int:
        return len(self.metadata["inputs"])

    @property
    def scale(self) -> ScaleSpec:
        return ScaleSpec.parse(self.metadata["scale"], str(self.metadata_source))

    @property
    def protocol(self) -> str:
        return self.metadata["protocol"]

    @property
    def labels(self) -> list[dict[str, Any]]:
        return list(self.metadata["labels"])

    @property
    def intensity_normalization(self) -> dict[str, Any]:
        return dict(self.metadata["intensity_normalization"])

    @property
    def is_zip(self) -> bool:
        return self.path.is_file()

    @property
    def metadata_source(self) -> str:
        return _member_source(self.path, self.member_prefix, METADATA_FILE)

    @property
    def weights_source(self) -> str:
        return _member_source(self.path, self.member_prefix, WEIGHTS_FILE)

    def read_weights(self) -> bytes:
        """The weights' bytes, checked against ``weights_sha256`` (every read, not just at load)."""
        data = _read_member(self.path, self.member_prefix, WEIGHTS_FILE)
        digest = sha256_bytes(data)
        if digest != self.metadata["weights_sha256"]:
            raise InputError(
                self.weights_source,
                f"sha256 {digest[:16]}... does not match weights_sha256 {self.metadata['weights_sha256'][:16]}... "
                "in model.json; the weights were modified or the package is corrupt -- get a fresh copy",
            )
        return data

    def build_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """Build the architecture from the registry and load the verified weights strictly."""
        from safetensors import SafetensorError
        from safetensors.torch import load as load_safetensors

        from .models import build

        arch, preset = self.metadata["architecture"], self.metadata["preset"]
        try:
            model = build(arch, preset, **_as_tuples(self.metadata["config"]))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(self.metadata_source, f"config does not fit architecture {arch!r}: {error}") from None
        try:
            state = load_safetensors(self.read_weights())
        except SafetensorError as error:
            raise InputError(self.weights_source, f"not a valid safetensors file ({error})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[1:2] or [str(error)]
            problem = f"weights do not fit {arch!r} preset {preset!r} with this config ({first[0].strip()})"
            raise InputError(self.weights_source, problem) from None
        return model.to(device).eval()


def _as_tuples(value: Any) -> Any:
    """JSON lists back to tuples, the form the builders were called with (scale pairs...)."""
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_tuples(v) for k, v in value.items()}
    return value


def _member_source(path: Path, prefix: str, name: str) -> str:
    return f"{path}:{prefix}{name}" if path.is_file() else str(path / name)


def _read_member(path: Path, prefix: str, name: str) -> bytes:
    source = _member_source(path, prefix, name)
    try:
        if path.is_file():
            with zipfile.ZipFile(path) as archive:
                return archive.read(prefix + name)
        return (path / name).read_bytes()
    except (OSError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(source, f"cannot read ({error})") from None


# --------------------------------------------------------------------------- loading


def load_package(path: str | Path, verify_weights: bool = True, check_architecture: bool = True) -> ModelPackage:
    """Open and verify a package folder, ``.zip`` or ``model.json`` path.

    Checks the schema (required fields, types, known tasks/architecture/preset) and, unless
    ``verify_weights`` is False (quick listings), the weights' sha256.  ``check_architecture=False``
    skips the architecture registry (it imports torch): the Slicer panel lists packages without
    starting PyTorch; the architecture is checked when the model is built.  Raises InputError.
    """
    path = Path(path).expanduser()
    if path.name == METADATA_FILE and path.is_file():
        path = path.parent
    if not path.exists():
        raise InputError(path, f"model package not found (a folder or .zip with {METADATA_FILE} + {WEIGHTS_FILE})")
    if path.is_dir():
        prefix = ""
        for name in (METADATA_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise InputError(path, f"not a model package: {name} is missing")
    elif zipfile.is_zipfile(path):
        prefix = _zip_package_prefix(path)
    else:
        raise InputError(path, "not a model package (expected a folder or a .zip with model.json + model.safetensors)")
    source = _member_source(path, prefix, METADATA_FILE)
    raw = _read_member(path, prefix, METADATA_FILE)
    meta = load_json_bounded(raw, source)  # bounded size and nesting depth
    architectures = _known_architectures() if check_architecture else None
    package = ModelPackage(path, validate_metadata(meta, source, architectures), prefix)
    if verify_weights:
        package.read_weights()
    return package


def _zip_package_prefix(path: Path) -> str:
    """Folder inside the zip holding model.json: the root, or one top-level folder."""
    with open_zip(path) as archive:
        names = [safe_member_name(i, path).as_posix() + ("/" if i.is_dir() else "") for i in archive.infolist()]
    candidates = sorted({n[: -len(METADATA_FILE)] for n in names if n.endswith(METADATA_FILE)}, key=len)
    candidates = [c for c in candidates if c == "" or (c.endswith("/") and c.count("/") == 1)]
    if not candidates:
        raise InputError(path, f"not a model package: no {METADATA_FILE} at the top of the zip")
    prefix = candidates[0]
    if prefix + WEIGHTS_FILE not in names:
        raise InputError(path, f"not a model package: {WEIGHTS_FILE} is missing next to {prefix}{METADATA_FILE}")
    check_package_members(names, prefix, path)  # nothing but the package's own files
    return prefix


# --------------------------------------------------------------------------- saving


def save_package(
    model: nn.Module, out_path: str | Path, metadata: Mapping[str, Any], zip: bool = False, overwrite: bool = False
) -> Path:
    """Write ``model`` + ``metadata`` as a package folder (or ``.zip``) atomically; return its path.

    ``architecture``, ``preset`` and ``config`` come from ``model.jointsrseg_config`` (set by
    :func:`JointSRSegLib.models.build`); ``schema_version`` and ``weights_sha256`` are filled in.
    """
    from safetensors.torch import save as save_safetensors

    out = Path(out_path).expanduser()
    if zip and out.suffix.lower() != ".zip":
        out = out.with_name(out.name + ".zip")
    built = getattr(model, "jointsrseg_config", None)
    if not isinstance(built, Mapping):
        raise InputError(out, "the model was not made by JointSRSegLib.models.build (no jointsrseg_config to record)")
    meta = dict(metadata)
    for key in ("architecture", "preset", "config"):
        if key in meta and meta[key] != _json_roundtrip(built[key], out):
            raise InputError(out, f"metadata {key} {meta[key]!r:.60} differs from the model's {built[key]!r:.60}")
        meta[key] = _json_roundtrip(built[key], out)
    meta.setdefault("schema_version", SCHEMA_VERSION)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = save_safetensors(state, metadata={"format": "pt", "jointsrseg_id": str(meta.get("id", ""))})
    meta["weights_sha256"] = sha256_bytes(weights)
    validate_metadata(meta, str(out), _known_architectures())
    text = json.dumps(meta, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
    if out.exists() and not overwrite:
        raise InputError(out, "already exists; choose another name or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    if zip:
        write_zip_atomically(out, {METADATA_FILE: text, WEIGHTS_FILE: weights})
    else:
        with staging_dir(out.parent, out.name) as staging:
            (staging / METADATA_FILE).write_bytes(text)
            (staging / WEIGHTS_FILE).write_bytes(weights)
            replace_dir(staging, out)
    load_package(out)  # what was written must read back
    return out


def _json_roundtrip(value: Any, source: Path) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise InputError(source, f"model configuration cannot be stored as JSON ({error})") from None


# --------------------------------------------------------------------------- importing


def import_model(
    zip_or_folder: str | Path, models_dir: str | Path | None = None, overwrite: bool = False
) -> ModelPackage:
    """Verify a package (zip or folder) and install it as ``<models_dir>/<id>``; return the installed one.

    Zip entries are checked before anything is written (no absolute paths, ``..`` or links)
    and extracted to a hidden temporary folder inside ``models_dir`` that is renamed into
    place only after the package verified.  Re-importing the same id and version with the
    same weights is a no-op; another package with that id needs ``overwrite=True``.
    """
    source = Path(zip_or_folder).expanduser()
    incoming = load_package(source)  # full verification before anything is written
    verify_package_contents(incoming)  # config bounded, every tensor checked against the architecture (meta device)
    target_root = Path(models_dir).expanduser() if models_dir is not None else user_models_dir()
    target_root.mkdir(parents=True, exist_ok=True)
    target = target_root / incoming.id
    if target.exists():
        existing = _try_load(target)
        same = existing is not None and (existing.version, existing.metadata["weights_sha256"]) == (
            incoming.version,
            incoming.metadata["weights_sha256"],
        )
        if same:
            return existing
        if not overwrite:
            raise InputError(target, f"a model with id {incoming.id!r} is installed here; pass overwrite to replace it")
    with staging_dir(target_root, incoming.id) as staging:
        if incoming.is_zip:
            extract_zip(incoming.path, incoming.member_prefix, staging)
        else:
            copy_folder(incoming.path, staging)
        installed = load_package(staging)  # verify what actually landed on disk
        if installed.metadata["weights_sha256"] != incoming.metadata["weights_sha256"]:
            raise InputError(source, "the package changed while it was being imported; try again")
        replace_dir(staging, target)
    return load_package(target)


def _try_load(path: Path) -> ModelPackage | None:
    try:
        return load_package(path)
    except InputError:
        return None


def import_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a PyTorch ``.pt``/``.pth`` checkpoint's state dict without running pickled code.

    Uses ``torch.load(weights_only=True)`` (tensors and plain containers only); accepts a bare
    state dict or one under ``state_dict``/``model_state_dict``/``model``/``network``, and strips
    a ``module.`` prefix left by DataParallel.  Use the result with ``model.load_state_dict``
    and :func:`save_package` to make a package.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError... for refused content
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(
            path, f"cannot be loaded safely ({first[:160]}); save only tensors (model.state_dict()) and retry"
        ) from None
    state = checkpoint
    if isinstance(checkpoint, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "network"):
            if isinstance(checkpoint.get(key), Mapping):
                state = checkpoint[key]
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(path, "holds no state dict of tensors (expected model.state_dict() or {'state_dict': ...})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


# --------------------------------------------------------------------------- compatibility


def check_compatibility(
    package: ModelPackage,
    channels: int,
    tasks: Sequence[str],
    factor: int | None = None,
    protocol: str | None = None,
) -> None:
    """Raise InputError saying what would fit when ``package`` cannot serve this request."""
    label = f"model {package.id!r}"
    if channels != package.channels:
        names = ", ".join(package.channel_names)
        raise InputError(
            package.path,
            f"{label} takes {package.channels} channel{'s' if package.channels != 1 else ''} ({names}); "
            f"the input has {channels} -- give one co-registered volume per channel in that order",
        )
    missing = [t for t in tasks if t not in package.tasks]
    if missing:
        raise InputError(
            package.path,
            f"{label} does {', '.join(package.tasks)}; {', '.join(missing)} was requested -- "
            "choose a model listing it (jointsrseg models) or drop that task",
        )
    if protocol is not None and protocol != package.protocol:
        raise InputError(
            package.path, f"{label} was trained for the {package.protocol!r} protocol; {protocol!r} was requested"
        )
    scale = package.scale
    if factor is not None and factor not in scale.factors:
        raise InputError(
            package.path,
            f"{label} supports {scale.describe()}; factor {factor} was requested -- use a supported factor "
            f"or a classical baseline (e.g. bspline)",
        )


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model list (what the CLI ``models`` command and Slicer's menu show)."""

    id: str
    tasks: tuple[str, ...]
    inputs: tuple[str, ...]
    scale: str
    source: str  # builtin | user | baseline | path
    description: str
    version: str = ""
    path: Path | None = None
    factors: tuple[int, ...] = ()
    protocols: tuple[str, ...] = ()

    def supports_factor(self, factor: int, protocol: str | None = None) -> bool:
        """Whether this entry can magnify by ``factor`` (under ``protocol`` when given)."""
        return factor in self.factors and (protocol is None or protocol in self.protocols)


_BASELINE_DESCRIPTIONS = {
    "nearest": "Nearest-neighbour interpolation (images or label maps)",
    "linear": "Linear interpolation",
    "bspline": "Cubic B-spline interpolation",
    "lanczos": "Lanczos-3 windowed-sinc interpolation",
    "contour": "Morphological contour interpolation of label maps (Albu et al. 2008)",
    "atropos": "B-spline SR + ANTs Atropos GM/WM segmentation (extra 'atropos'); --seg-model atropos for any model",
}


def _baseline_info(name: str) -> ModelInfo:
    inputs = ("label map",) if name == "contour" else ("image or label map",) if name == "nearest" else ("image",)
    return ModelInfo(
        id=name,
        tasks=baseline_tasks(name),
        inputs=inputs,
        scale=f"through-plane factor x{MIN_FACTOR}-x{MAX_FACTOR}",
        source="baseline",
        description=_BASELINE_DESCRIPTIONS.get(name, f"{name} interpolation"),
        factors=SCALE_FACTORS,
        protocols=THROUGH_PLANE_PROTOCOLS,
    )


def _info(package: ModelPackage, source: str) -> ModelInfo:
    return ModelInfo(
        id=package.id,
        tasks=package.tasks,
        inputs=package.channel_names,
        scale=package.scale.describe(),
        source=source,
        description=package.metadata["description"],
        version=package.version,
        path=package.path,
        factors=package.scale.factors,
        protocols=(package.protocol,),
    )


def _scan(folder: Path, check_architecture: bool = True) -> Iterator[ModelPackage]:
    """Packages in ``folder`` (sub-folders with model.json, and .zip files); broken ones are logged."""
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):  # staging folders of an import in progress, hidden files
            continue
        if (child.is_dir() and (child / METADATA_FILE).is_file()) or child.suffix.lower() == ".zip":
            try:
                yield load_package(child, verify_weights=False, check_architecture=check_architecture)
            except InputError as error:
                _log.warning("skipping model package: %s", error)


def _search_dirs() -> list[tuple[Path, str]]:
    return [(user_models_dir(), "user"), (BUILTIN_MODELS_DIR, "builtin")]


def available_models(check_architectures: bool = True) -> list[ModelInfo]:
    """Built-in packages, then the user's, then the classical baselines (``check_architectures``: see
    :func:`load_package`)."""
    found = [_info(p, "builtin") for p in _scan(BUILTIN_MODELS_DIR, check_architectures)]
    found += [_info(p, "user") for p in _scan(user_models_dir(), check_architectures)]
    return found + [_baseline_info(name) for name in BASELINE_NAMES]


def resolve_model(id_or_path: str | Path) -> ModelPackage | str:
    """A baseline name (returned as the string), a package path, or an installed package's id.

    Order: baseline names, an existing path, the user's folder, the built-in folder.  The
    package returned is fully verified (sha256 included).
    """
    text = str(id_or_path)
    if text in BASELINE_NAMES:
        return text
    path = Path(text).expanduser()
    if path.exists():
        return load_package(path)
    for folder, _ in _search_dirs():
        for package in _scan(folder):
            if package.id == text:
                return load_package(package.path)
    known = sorted({info.id for info in available_models()})
    problem = f"no model package, path or baseline of this name; available: {', '.join(known)}"
    raise InputError(text, problem + " (or give a package folder or .zip)")


def model_info(id_or_path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a baseline name, package path or installed package id (see :func:`resolve_model`)."""
    resolved = resolve_model(id_or_path)
    if isinstance(resolved, str):
        return _baseline_info(resolved)
    builtin = resolved.path is not None and Path(resolved.path).resolve().parent == BUILTIN_MODELS_DIR.resolve()
    return _info(resolved, "builtin" if builtin else "path")


__all__ = [
    "BUILTIN_MODELS_DIR",
    "MODELS_ENV",
    "ModelInfo",
    "ModelPackage",
    "available_models",
    "check_compatibility",
    "import_checkpoint",
    "import_model",
    "load_package",
    "model_info",
    "resolve_model",
    "save_package",
    "sha256_bytes",
    "user_models_dir",
]
