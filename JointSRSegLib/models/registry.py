"""Name -> architecture registry with size presets.

Every architecture module declares ``SPECS`` (a tuple of :class:`ArchitectureSpec`); the
package ``__init__`` collects them into ``ARCHITECTURES``.  ``build(name, preset, **overrides)``
instantiates a network from a preset and records the resolved configuration on the module as
``model.jointsrseg_config`` so model packages can store exactly what was built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

PRESET_NAMES = ("tiny", "small", "base")


@dataclass(frozen=True)
class ArchitectureSpec:
    """What the registry knows about one architecture.

    ``tasks`` lists what the network's forward returns (keys of its output dict among
    ``"sr"``, ``"interp"``, ``"seg"``, ``"sr_uncertainty"``...), ``dims`` whether it works on
    2D slices or 3D patches, ``paper`` the file in ``shared/papers`` it implements.
    """

    name: str
    builder: Callable[..., nn.Module]
    presets: Mapping[str, Mapping[str, Any]]
    tasks: tuple[str, ...]
    dims: int
    paper: str
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def config(self, preset: str = "small", **overrides: Any) -> dict[str, Any]:
        if preset not in self.presets:
            raise KeyError(f"architecture {self.name!r} has no preset {preset!r}; choose from {sorted(self.presets)}")
        return {**self.presets[preset], **overrides}


def build_from_spec(spec: ArchitectureSpec, preset: str = "small", **overrides: Any) -> nn.Module:
    cfg = spec.config(preset, **overrides)
    model = spec.builder(**cfg)
    model.jointsrseg_config = {"architecture": spec.name, "preset": preset, "config": cfg}
    return model
