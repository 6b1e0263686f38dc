"""Training configuration: a documented schema, YAML files, dotted ``key=value`` overrides.

Configuration lives apart from code (nnU-Net's plans): a run is fully described by the resolved
config that :func:`save_config` writes next to every checkpoint, and re-running from that file
reproduces it.  Every option is declared once in :data:`SCHEMA` with its default, type and help;
``--help`` is generated from it, unknown keys are refused with the file and key named, and
values are type-checked.

>>> cfg = resolve(overrides=["model.architecture=rdst", "train.max_steps=5"])  # doctest: +SKIP
>>> cfg["optim"]["lr"]  # doctest: +SKIP
0.0001
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from JointSRSegLib.vocabulary import PROTOCOLS, TRAINING_DEVICES


class ConfigError(ValueError):
    """A config problem, one line: ``<file>: <key>: <problem>``."""


@dataclass(frozen=True)
class Option:
    default: Any
    kind: type | tuple[type, ...]
    help: str
    choices: tuple[Any, ...] | None = None
    nullable: bool = False


_NUM = (int, float)

# Dotted key -> option.  Sections: run, model, data, augment, optim, schedule, train, loss, stages, export.
SCHEMA: dict[str, Option] = {
    "run.name": Option("run", str, "run name; the run folder is <run.out_dir>/<run.name>"),
    "run.out_dir": Option("runs", str, "parent folder of run folders"),
    "run.seed": Option(0, int, "seed of everything: weights, data order, augmentation, splits"),
    "run.device": Option("auto", str, "auto (CUDA when present), cpu or cuda", TRAINING_DEVICES),
    "run.amp": Option(True, bool, "mixed precision (FP16 + GradScaler) on CUDA; ignored on CPU"),
    "run.deterministic": Option(True, bool, "deterministic algorithms (cuDNN) for reproducible runs"),
    "run.threads": Option(0, int, "torch CPU threads (0: leave torch's default / OMP_NUM_THREADS)"),
    "model.architecture": Option("swinsr_unetr", str, "registry name (JointSRSegLib.models.ARCHITECTURES)"),
    "model.preset": Option("tiny", str, "size preset", ("tiny", "small", "base")),
    "model.init_weights": Option(None, str, "start from these weights (a model package folder/.zip or a "
                                 ".safetensors file of the same network): fine-tuning", nullable=True),
    "model.init_strict": Option(True, bool, "init_weights must fit every tensor; false loads the tensors whose name "
                                "and shape match (transfer, e.g. x4 -> x2) and logs the rest"),
    "model.overrides": Option({}, dict, "builder keyword arguments on top of the preset (scale, channels are set "
                              "from the data section)"),
    "data.root": Option("sample", str, "dataset folder (MSD, BraTS, images/+labels/) or 'sample' for the bundled "
                        "MNI152 T1 + tissue labels"),
    "data.layout": Option("auto", str, "dataset layout", ("auto", "msd", "brats", "folder", "lr_only")),
    "data.ratios": Option([7.0, 1.0, 2.0], list, "train/validation/test ratios of patients"),
    "data.split_seed": Option(0, int, "seed of the patient-level split"),
    "data.splits_file": Option(None, str, "existing splits JSON to reuse (else made and saved with the run)",
                               nullable=True),
    "data.sample_split_axis": Option(0, int, "sample mode: axis cut into train / validation / test slabs "
                                     "(0 = left-right: one hemisphere trains, the other validates and tests)"),
    "data.sample_synthetic_validation": Option(False, bool, "sample mode: validate on fixed synthetic contrasts "
                                               "drawn from the labels (seeded) instead of the T1 intensities"),
    "data.protocol": Option("sr", str, "LR simulation protocol", PROTOCOLS),
    "data.factor": Option(4, int, "magnification R"),
    "data.scale": Option(None, list, "per-axis magnification (X, Y, Z) in the model frame, each 1 or data.factor "
                         "with Z = data.factor (null: (1, 1, factor), thick slices); [2, 2, 2] is SwinSR-UNETR's "
                         "isotropic 48^3 -> 96^3 (sr protocol, swinsr_unetr only)", nullable=True),
    "data.axis": Option(None, int, "through-plane voxel axis (null: largest spacing; isotropic data needs it)",
                        nullable=True),
    "data.inplane_noise_std": Option(0.01, _NUM, "inplane protocol: std of the Gaussian noise added after the "
                                     "bicubic downsampling (0-1 intensity scale; RDST's Eq. 13 n, its std unstated)"),
    "data.patch_size": Option([48, 48, 24], list, "HR training patch (X, Y, Z) in the model frame "
                              "(through-plane last)"),
    "data.batch_size": Option(2, int, "patches per step per process"),
    "data.num_workers": Option(0, int, "DataLoader workers"),
    "data.cache": Option("memory", str, "case cache", ("memory", "disk", "none")),
    "data.cache_dir": Option(None, str, "disk cache folder (data.cache=disk); default <run>/cache", nullable=True),
    "data.normalization": Option({"method": "percentile", "lower": 0.5, "upper": 99.5}, dict,
                                 "intensity normalisation (JointSRSegLib.normalization spec), stored in the package"),
    "data.val_crop": Option(None, list, "HR size of the centred crop validated per case (null: whole case)",
                            nullable=True),
    "data.max_val_cases": Option(0, int, "validate at most this many cases (0: all)"),
    "data.modality": Option("MR", str, "DICOM modality code of the inputs (package metadata)"),
    "data.label_names": Option({}, dict, "label value -> name (default: from the dataset or 'label <v>')"),
    "data.label_colors": Option({}, dict, "label value -> [r, g, b]"),
    "augment.enabled": Option(True, bool, "MONAI flips, rotation, scaling, noise, bias field, gamma on HR patches"),
    "augment.flip_prob": Option(0.5, _NUM, "probability of each axis flip"),
    "augment.affine_prob": Option(0.2, _NUM, "probability of a random rotation/scaling"),
    "augment.intensity_prob": Option(0.2, _NUM, "probability of noise, bias field and gamma (each)"),
    "augment.synthesis_partial_volume": Option(False, bool, "draw synthetic images from tissue probability maps "
                                               "(partial volume at tissue borders) instead of hard labels; needs "
                                               "probability maps (the bundled sample has them)"),
    "augment.synthesis_bias_coeff": Option(0.1, _NUM, "largest coefficient of the synthetic images' bias field "
                                           "(MONAI RandBiasField, degree 3): 0.1 lets the field vary ~2.6x across "
                                           "a patch; 0.3 (the shipped recipes before 2026-11-21) ~18x, which "
                                           "left a third of the tissue contrast after normalisation"),
    "augment.synthesis_prob": Option(0.0, _NUM, "probability of replacing the image by a SynthSeg-style image "
                                     "drawn from the labels"),
    "augment.synthesis_min_contrast": Option(0.1, _NUM, "least intensity difference between any two labels of a "
                                             "synthesised image (0-1 scale; degenerate contrasts are redrawn)"),
    "optim.name": Option("adam", str, "optimizer", ("adam", "adamw", "sgd")),
    "optim.lr": Option(1e-4, _NUM, "learning rate"),
    "optim.weight_decay": Option(0.0, _NUM, "weight decay"),
    "optim.betas": Option([0.9, 0.999], list, "Adam betas"),
    "optim.momentum": Option(0.9, _NUM, "SGD momentum (nnU-Net: 0.99)"),
    "optim.nesterov": Option(False, bool, "SGD with Nesterov momentum (nnU-Net: true)"),
    "optim.grad_clip": Option(0.0, _NUM, "max gradient norm (0: no clipping)"),
    "schedule.name": Option("constant", str, "learning-rate schedule",
                            ("constant", "cosine", "multistep", "plateau", "poly")),
    "schedule.milestones": Option([], list, "multistep: steps (within the stage) where lr is multiplied by gamma"),
    "schedule.gamma": Option(0.5, _NUM, "multistep / plateau factor"),
    "schedule.min_lr": Option(0.0, _NUM, "cosine: final learning rate"),
    "schedule.power": Option(0.9, _NUM, "poly: lr = base * (1 - step / steps) ** power (nnU-Net: 0.9)"),
    "schedule.warmup_steps": Option(0, int, "linear warm-up steps"),
    "train.max_steps": Option(1000, int, "optimizer steps in total (all stages; the stages' steps must sum to it)"),
    "train.steps_per_epoch": Option(100, int, "steps between validations (an 'epoch' of random patches)"),
    "train.val_every": Option(1, int, "validate every N epochs (0: never)"),
    "train.early_stopping_patience": Option(0, int, "stop after N validations without improvement (0: off)"),
    "train.monitor": Option("auto", str, "validation metric for the best checkpoint and early stopping "
                            "(auto: psnr for image tasks, dice otherwise; prefix '-' to minimise)"),
    "train.checkpoint_every": Option(0, int, "also checkpoint every N steps (0: at epoch ends only)"),
    "train.log_every": Option(10, int, "write training losses every N steps"),
    "train.previews": Option(True, bool, "write PNG previews of validation cases"),
    "train.progress": Option(True, bool, "tqdm progress bar"),
    "loss": Option({}, dict, "loss options of the task adapter (balancing, weights ...; see docs/training.md)"),
    "stages": Option([], list, "training stages [{name, steps, lr?, weight_decay?, optim?, batch_size?, schedule?, "
                     "loss?}] (empty: one stage of train.max_steps); optim: {name?, betas?, momentum?, nesterov?} over "
                     "the optim section (per-stage optimisers, e.g. AdamW for a pretext stage, Adam for the next, "
                     "nnU-Net's Nesterov SGD for a segmenter)"),
    "export.id": Option(None, str, "package id (default: <architecture>-<run.name>)", nullable=True),
    "export.version": Option("0.1.0", str, "package version"),
    "export.name": Option(None, str, "human-readable name", nullable=True),
    "export.description": Option(None, str, "one or two sentences", nullable=True),
    "export.license": Option("CC-BY-4.0", str, "licence of the weights"),
    "export.intended_use": Option("Research only; not for diagnosis.", str, "intended use"),
}

STAGE_KEYS = {"name", "steps", "lr", "weight_decay", "optim", "batch_size", "schedule", "loss"}
# A stage's optimiser: what it may change of the optim section.
STAGE_OPTIM_KEYS = {"name", "betas", "momentum", "nesterov"}


def defaults() -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for key, option in SCHEMA.items():
        _set(cfg, key, copy.deepcopy(option.default))
    return cfg


def _set(cfg: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Leaves by dotted key; a dict-typed schema option is a leaf, not a section."""
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in SCHEMA:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def merge(cfg: dict, update: Mapping, source: str) -> dict:
    """Apply a (nested) mapping of options onto ``cfg``; unknown keys name ``source``."""
    for dotted, value in _flatten(update).items():
        if dotted not in SCHEMA:
            raise ConfigError(f"{source}: unknown key {dotted!r}{_suggest(dotted)}")
        _set(cfg, dotted, value)
    return cfg


def _suggest(key: str) -> str:
    import difflib

    close = difflib.get_close_matches(key, SCHEMA, n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (see train.py --help)"


def parse_override(text: str) -> tuple[str, Any]:
    """``a.b=value`` with the value read as YAML (``3``, ``1e-4``, ``[1, 2]``, ``null``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: cannot read the value ({error})") from None
    return key.strip(), value


def _check(key: str, value: Any, source: str) -> Any:
    option = SCHEMA[key]
    if value is None:
        if option.nullable:
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
    if float in kinds and isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"{source}: {key} must be {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(f"{source}: {key} must be {_kind_name(kinds)}, got {value!r}")
    if option.choices and value not in option.choices:
        raise ConfigError(f"{source}: {key} is {value!r}; use one of {', '.join(map(str, option.choices))}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    return " or ".join({int: "an integer", float: "a number", bool: "true/false", str: "a string",
                        list: "a list", dict: "a mapping"}[k] for k in kinds)


def validate(cfg: dict, source: str = "config") -> dict:
    """Type-check every option and the cross-field rules; returns ``cfg`` (floats normalised)."""
    flat = _flatten(cfg)
    for key in flat:
        if key not in SCHEMA:
            raise ConfigError(f"{source}: unknown key {key!r}{_suggest(key)}")
    for key in SCHEMA:
        _set(cfg, key, _check(key, flat.get(key), source))
    data = cfg["data"]
    if len(data["patch_size"]) != 3 or not all(isinstance(v, int) and v > 0 for v in data["patch_size"]):
        raise ConfigError(f"{source}: data.patch_size must be three positive integers, got {data['patch_size']}")
    if data["val_crop"] is not None and len(data["val_crop"]) != 3:
        raise ConfigError(f"{source}: data.val_crop must be three integers or null")
    if not 2 <= data["factor"] <= 8:
        raise ConfigError(f"{source}: data.factor must be an integer 2-8, got {data['factor']}")
    if data["scale"] is not None:
        _check_scale(data, cfg["model"]["architecture"], source)
    _check_momentum(cfg["optim"], f"{source}: optim")
    for key in ("max_steps", "steps_per_epoch"):
        if cfg["train"][key] < 1:
            raise ConfigError(f"{source}: train.{key} must be at least 1")
    stages = cfg["stages"]
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or not {"name", "steps"} <= set(stage):
            raise ConfigError(f"{source}: stages[{i}] needs name and steps")
        unknown = set(stage) - STAGE_KEYS
        if unknown:
            raise ConfigError(f"{source}: stages[{i}] has unknown key(s) {sorted(unknown)}; use {sorted(STAGE_KEYS)}")
        if not isinstance(stage["steps"], int) or stage["steps"] < 1:
            raise ConfigError(f"{source}: stages[{i}].steps must be a positive integer")
        _check_stage_optim(stage, i, source, cfg["optim"])
    if stages and sum(s["steps"] for s in stages) != cfg["train"]["max_steps"]:
        total = sum(s["steps"] for s in stages)
        raise ConfigError(f"{source}: stages sum to {total} steps but train.max_steps is {cfg['train']['max_steps']}")
    from JointSRSegLib.models import ARCHITECTURES

    if cfg["model"]["architecture"] not in ARCHITECTURES:
        raise ConfigError(f"{source}: model.architecture {cfg['model']['architecture']!r} is unknown; "
                          f"use one of {', '.join(sorted(ARCHITECTURES))}")
    return cfg


def _check_scale(data: Mapping, architecture: str, source: str) -> None:
    """``data.scale``: three entries, each 1 or ``data.factor``, the through-plane (last) one ``data.factor``."""
    scale, factor = data["scale"], data["factor"]
    if (len(scale) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v in (1, factor) for v in scale)
            or scale[2] != factor):
        raise ConfigError(f"{source}: data.scale must be three integers, each 1 or data.factor ({factor}), the last "
                          f"data.factor; got {scale}")
    if tuple(scale) != (1, 1, factor) and (architecture != "swinsr_unetr" or data["protocol"] != "sr"):
        raise ConfigError(f"{source}: data.scale {scale} (more than the through-plane axis) is trained for "
                          f"swinsr_unetr with data.protocol=sr only, not {architecture} / {data['protocol']}")


def _check_stage_optim(stage: Mapping, index: int, source: str, section: Mapping | None = None) -> None:
    """A stage's ``batch_size`` and ``optim`` ({name?, betas?, momentum?, nesterov?}) are checked like their
    sections' options."""
    where = f"{source}: stages[{index}]"
    if "batch_size" in stage and (not isinstance(stage["batch_size"], int) or isinstance(stage["batch_size"], bool)
                                  or stage["batch_size"] < 1):
        raise ConfigError(f"{where}.batch_size must be a positive integer, got {stage['batch_size']!r}")
    optim = stage.get("optim")
    if optim is None:
        return
    if not isinstance(optim, Mapping):
        raise ConfigError(f"{where}.optim must be a mapping {{name?, betas?, momentum?, nesterov?}}, got {optim!r}")
    unknown = set(optim) - STAGE_OPTIM_KEYS
    if unknown:
        raise ConfigError(f"{where}.optim has unknown key(s) {sorted(unknown)}; use {sorted(STAGE_OPTIM_KEYS)} "
                          "(lr and weight_decay are stage keys)")
    names = SCHEMA["optim.name"].choices
    if "name" in optim and optim["name"] not in names:
        raise ConfigError(f"{where}.optim.name is {optim['name']!r}; use one of {', '.join(names)}")
    betas = optim.get("betas", [0.9, 0.999])
    if not (isinstance(betas, list) and len(betas) == 2 and all(isinstance(b, _NUM) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"{where}.optim.betas must be two numbers in [0, 1), got {betas!r}")
    if "nesterov" in optim and not isinstance(optim["nesterov"], bool):
        raise ConfigError(f"{where}.optim.nesterov must be true or false, got {optim['nesterov']!r}")
    base = {key: (section or {}).get(key, default) for key, default in (("momentum", 0.9), ("nesterov", False))}
    _check_momentum({**base, **optim}, f"{where}.optim")  # the stage's values over the optim section's


def _check_momentum(optim: Mapping, where: str) -> None:
    """SGD's momentum lies in [0, 1); Nesterov momentum needs it positive (torch refuses 0)."""
    momentum = optim.get("momentum", 0.9)
    if not isinstance(momentum, _NUM) or isinstance(momentum, bool) or not 0 <= momentum < 1:
        raise ConfigError(f"{where}.momentum must be a number in [0, 1), got {momentum!r}")
    if optim.get("nesterov") and momentum <= 0:
        raise ConfigError(f"{where}.nesterov needs momentum > 0")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of options at the top level")
    return data


def resolve(path: str | Path | None = None, overrides: Sequence[str] = ()) -> dict:
    """Defaults, then the YAML file, then the overrides; validated."""
    cfg = defaults()
    if path is not None:
        merge(cfg, load_yaml(path), str(path))
    for text in overrides:
        key, value = parse_override(text)
        parent = next((p for p in _prefixes(key) if p in SCHEMA and SCHEMA[p].kind is dict), None)
        if key not in SCHEMA and parent is None:
            raise ConfigError(f"override {text!r}: unknown key {key!r}{_suggest(key)}")
        if parent is not None and parent != key:  # e.g. loss.balancing=fixed inside the free-form loss mapping
            node = cfg
            for part in parent.split("."):
                node = node.setdefault(part, {})
            _set(node, key[len(parent) + 1 :], value)
        else:
            _set(cfg, key, value)
    return validate(cfg, str(path) if path is not None else "config")


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def save_config(cfg: Mapping, path: str | Path) -> Path:
    """Write the resolved config atomically (a checkpoint never sits next to half a config)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        yaml.safe_dump(copy.deepcopy(dict(cfg)), out, sort_keys=False)
    os.chmod(temp, 0o644)
    os.replace(temp, path)
    return path


def options_help() -> str:
    """The option table printed by ``train.py --help``."""
    lines = ["configuration options (YAML keys; override with key=value):"]
    for key, option in SCHEMA.items():
        choices = f" [{'|'.join(map(str, option.choices))}]" if option.choices else ""
        lines.append(f"  {key} = {option.default!r}{choices}\n      {option.help}")
    return "\n".join(lines)
