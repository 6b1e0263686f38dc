"""Atomic checkpoints that restore a run exactly: modules, optimizer, scaler, scheduler, RNGs, step.

The data order needs no saved state: the epoch's ``DistributedSampler`` permutation is seeded by
``seed + epoch`` and every sample by ``(seed, epoch, index)`` (:mod:`training.engine.data`), so
restoring the step restores it.  Files are written to a hidden
temporary sibling and renamed, so a run killed while saving keeps its previous checkpoint.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomically(payload: dict, path: Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (atomic on POSIX/NTFS)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            torch.save(payload, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp creates 0600; checkpoints are shared like any output
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint of this training code (pickled RNG states need ``weights_only=False``:
    only load checkpoints you wrote)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # truncated or foreign file
        raise ValueError(f"{path}: cannot read checkpoint ({type(error).__name__}: {error})") from None


def load_initial_weights(network: torch.nn.Module, source: str | Path, strict: bool = True) -> list[str]:
    """Fine-tuning start: load a package's (sha256-verified) or a ``.safetensors`` file's weights.

    ``strict``: every tensor must fit.  Otherwise (transfer, e.g. a x4 model to x2, where only the
    up-sampling layers differ) tensors whose name and shape match are loaded and the names of the
    network's tensors left at their initialisation are returned; a source that fits nothing is refused.
    Raises ``ConfigError`` naming the file when it is missing, unreadable or does not fit the network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    from JointSRSegLib.errors import InputError
    from JointSRSegLib.packaging import load_package
    from training.config import ConfigError

    path = Path(source).expanduser()
    try:
        if path.suffix == ".safetensors":
            if not path.is_file():
                raise ConfigError(f"{path}: model.init_weights: file not found")
            data = path.read_bytes()
        else:
            data = load_package(path).read_weights()
        state = load_safetensors(data)
        if not strict:
            own = network.state_dict()
            fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
            if not fitting:
                raise ConfigError(f"{path}: model.init_weights: no tensor fits the configured network")
            network.load_state_dict(fitting, strict=False)
            return sorted(set(own) - set(fitting))
        network.load_state_dict(state, strict=True)
        return []
    except InputError as error:
        raise ConfigError(f"model.init_weights: {error}") from None
    except SafetensorError as error:
        raise ConfigError(f"{path}: model.init_weights: not a valid safetensors file ({error})") from None
    except RuntimeError as error:
        first = (str(error).strip().splitlines()[1:2] or [str(error)])[0].strip()
        raise ConfigError(f"{path}: model.init_weights: weights do not fit the configured network ({first})") from None
