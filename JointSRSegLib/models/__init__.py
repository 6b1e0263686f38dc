"""The model zoo: the five papers' networks, reachable by name.

>>> from JointSRSegLib.models import ARCHITECTURES, build
>>> net = build("swinsr_unetr", preset="tiny")          # doctest: +SKIP

Each architecture lives in its own module and declares ``SPECS``; see ``registry.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch.nn as nn

from .registry import PRESET_NAMES, ArchitectureSpec, build_from_spec

# One module per paper; each declares SPECS.
_ARCHITECTURE_MODULES = ("swinsr_unetr", "tasc_swinmt", "rdst", "rehrseg", "disentangled_sr")


def _collect() -> dict[str, ArchitectureSpec]:
    specs: dict[str, ArchitectureSpec] = {}
    for module_name in _ARCHITECTURE_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as error:  # only tolerate a module that is absent, never a broken one
            if error.name != f"{__name__}.{module_name}":
                raise
            continue
        for spec in module.SPECS:
            specs[spec.name] = spec
    return specs


ARCHITECTURES: dict[str, ArchitectureSpec] = _collect()


def build(name: str, preset: str = "small", **overrides: Any) -> nn.Module:
    """Instantiate architecture ``name`` with a size preset (``tiny``/``small``/``base``)."""
    if name not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {name!r}; available: {', '.join(sorted(ARCHITECTURES))}")
    return build_from_spec(ARCHITECTURES[name], preset, **overrides)


__all__ = ["ARCHITECTURES", "PRESET_NAMES", "ArchitectureSpec", "build"]
