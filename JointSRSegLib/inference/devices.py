"""Device choice, mixed precision and out-of-memory detection for inference.

``auto`` prefers CUDA, then Apple MPS, then the CPU.  On CUDA the forward pass runs under
autocast (bfloat16 where the GPU supports it, else float16); stitched outputs always live on the
CPU so GPU memory does not grow with the output size.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import InputError
from ..vocabulary import AUTO, check_device


def select_device(requested: str | torch.device | None = AUTO) -> torch.device:
    """The torch device for one of the vocabulary's devices (None: ``auto``; a ``torch.device`` as it is);
    refuses one this machine does not have."""
    if isinstance(requested, torch.device):
        return requested
    requested = check_device(requested or AUTO)
    if requested == AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError(None, "--device mps was requested but Apple MPS is not available; use --device cpu or auto")
    return torch.device(requested)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type
