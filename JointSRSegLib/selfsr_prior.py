"""The shipped priors of ``--model adapt``: self-SR networks pre-trained on many heads.

A prior is a folder ``Resources/Priors/selfsr-<protocol>-x<R>/`` holding ``model.safetensors`` (the
state of :class:`~JointSRSegLib.selfsr_net.CompactSRNet`) and ``prior.json`` (network configuration,
training data and recipe, validation figures, the weights' sha256).  It is written by
``python -m training.selfsr_prior`` and read here before the weights are trusted: the digest must
match and every tensor must have the name and shape of the network the configuration builds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # torch is imported only when a prior is loaded: listing priors must stay light (Slicer panel)
    import torch.nn as nn

PRIORS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Priors"
PRIOR_FILE = "prior.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "jointsrseg-selfsr-prior/1"
MAX_RECORD_BYTES = 1 << 20


def prior_name(protocol: str, factor: int) -> str:
    """Folder name of the prior for ``protocol`` and ``factor`` (one network per pair: the factor is
    built into the sub-pixel stage and the protocol into the cubic base)."""
    return f"selfsr-{protocol}-x{int(factor)}"


def available_priors(directory: Path | None = None) -> list[tuple[str, int]]:
    """``(protocol, factor)`` of every prior shipped in ``directory`` (default :data:`PRIORS_DIR`)."""
    directory = PRIORS_DIR if directory is None else directory
    found = []
    for record in sorted(directory.glob(f"*/{PRIOR_FILE}")):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            found.append((str(data["protocol"]), int(data["factor"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def _describe_available(directory: Path) -> str:
    pairs = available_priors(directory)
    return ", ".join(f"{p} x{f}" for p, f in pairs) if pairs else "none"


def load_prior(protocol: str, factor: int, channels: int, directory: Path | None = None,
               source: str | None = None) -> tuple[nn.Module, dict, dict]:
    """The prior network for ``protocol`` x``factor`` with its record and network configuration.

    Refused with :class:`InputError` (one line, naming the reason) when no prior fits, when the scan has
    another channel count than the prior was trained with, or when the files are not what the record says.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .selfsr_net import build_network

    directory = PRIORS_DIR if directory is None else directory
    folder = directory / prior_name(protocol, factor)
    record_path, weights_path = folder / PRIOR_FILE, folder / WEIGHTS_FILE
    if not record_path.is_file() or not weights_path.is_file():
        raise InputError(source, f"no shipped adaptation prior for the {protocol} protocol x{factor} "
                                 f"(shipped: {_describe_available(directory)}); use model 'self' instead")
    if record_path.stat().st_size > MAX_RECORD_BYTES:
        raise InputError(str(record_path), "prior record is too large")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        network = dict(record["network"])
        if record.get("format") != FORMAT:
            raise ValueError(f"unknown format {record.get('format')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(str(record_path), f"not a valid prior record ({exc})") from None
    if int(network.get("channels", 1)) != channels:
        raise InputError(source, f"the x{factor} {protocol} prior was trained on {network.get('channels')}-channel "
                                 f"images, this scan has {channels}; use model 'self' instead")
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    if digest != record.get("weights_sha256"):
        raise InputError(str(weights_path), "weights do not match the sha256 in prior.json")
    options = {k: network[k] for k in ("features", "blocks") if k in network}
    net, cfg = build_network(str(network.get("name", "cnn")), channels, factor, protocol, **options)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise InputError(str(weights_path), f"cannot read the prior's weights ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        wrong = sorted(set(expected) ^ set(found)) or sorted(k for k in expected if expected[k] != found[k])
        raise InputError(str(weights_path), f"tensors do not fit the prior's network ({', '.join(wrong[:3])})")
    net.load_state_dict(state)
    return net, record, cfg


__all__ = ["PRIORS_DIR", "PRIOR_FILE", "WEIGHTS_FILE", "available_priors", "load_prior", "prior_name"]
