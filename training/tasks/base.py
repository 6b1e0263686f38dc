"""What the training loop asks of an architecture family (one adapter per family).

An adapter owns every stateful module of a run (networks and loss modules with parameters,
e.g. Kendall log-variances) in ``self.modules`` so one checkpoint holds them all, and answers:
which random transforms make a training sample, which parameters a stage optimises, how a batch
becomes a loss, and how a whole validation case is predicted -- by the inference engine's own
functions, so validation measures what ``jointsrseg run`` will do.

``training_loss`` calls trained modules through :meth:`TaskAdapter.forward_module`: in a
multi-process stage that is the module's ``DistributedDataParallel`` wrapper (set by the loop),
whose forward prepares the gradient averaging of the following ``backward``.  Validation, export
and checkpoints use ``self.modules`` itself (no ``module.`` prefixes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from JointSRSegLib.models import build
from training.data import (
    MakeLRHRPaird,
    RandAlignedCropd,
    SynthesizeImageFromLabels,
    hr_augmentations,
    uses_partial_volume,
)
from training.tasks.transforms import CentreCropd, RandSynthesisd, SelectKeysd, ToLabelTensord


class TaskAdapter(ABC):
    """Base adapter: one network ``modules["net"]`` and a criterion ``modules["criterion"]``."""

    architectures: tuple[str, ...] = ()
    uses_labels = True

    def __init__(self, cfg: dict, info, device: torch.device):
        self.cfg, self.info, self.device = cfg, info, device
        self.protocol = cfg["data"]["protocol"]
        self.factor = cfg["data"]["factor"]
        self.loss_options: dict[str, Any] = dict(cfg["loss"])
        self.modules = nn.ModuleDict()
        self.ddp_wrappers: dict[str, nn.Module] = {}  # set per stage by the loop in multi-process runs
        self.setup()
        self.modules.to(device)

    # ------------------------------------------------------------------ construction
    @abstractmethod
    def setup(self) -> None:
        """Build ``self.modules`` (networks and loss modules)."""

    def build_network(self, **data_overrides: Any) -> nn.Module:
        """The registry network: preset, then the config's overrides, then what the data dictates."""
        model = self.cfg["model"]
        return build(model["architecture"], model["preset"], **{**model["overrides"], **data_overrides})

    @property
    def network(self) -> nn.Module:
        return self.modules["net"]

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        return [p for p in self.modules.parameters() if p.requires_grad]

    def ddp_module(self, name: str) -> nn.Module:
        """What DDP wraps for ``modules[name]`` (default: the module); may restrict a network's outputs."""
        return self.modules[name]

    def find_unused_parameters(self, name: str) -> bool:
        """Whether ``modules[name]`` leaves trainable parameters without gradient in some steps of the
        current stage; DDP then searches the graph from the forward's outputs every step (a cost)."""
        return False

    def forward_module(self, name: str) -> nn.Module:
        """The callable for ``modules[name]`` in ``training_loss``: its DDP wrapper when one is set."""
        return self.ddp_wrappers[name] if name in self.ddp_wrappers else self.ddp_module(name)

    def start_stage(self, stage: str, stage_options: Mapping) -> None:
        """Apply a stage's loss options (two-stage schedules switch losses here); default: none to apply."""
        return None

    # ------------------------------------------------------------------ data
    def patch_transforms(self, patch_size, protocol: str | None = None, labels: bool = True) -> list:
        """Aligned random HR patch -> augmentation -> optional synthesis -> LR/HR pair by the protocol."""
        protocol = protocol or self.protocol
        aug = self.cfg["augment"]
        partial_volume = labels and uses_partial_volume(aug)
        keys = (["image", "label"] if labels else ["image"]) + (["probs"] if partial_volume else [])
        transforms: list = [RandAlignedCropd(keys, patch_size, self.factor, protocol, axis=2,
                                             allow_missing_keys=True)]
        if aug["enabled"]:
            transforms.append(hr_augmentations(
                "image", "label" if labels else [], flip_prob=aug["flip_prob"], affine_prob=aug["affine_prob"],
                noise_prob=aug["intensity_prob"], bias_prob=aug["intensity_prob"], gamma_prob=aug["intensity_prob"],
                field_keys=["probs"] if partial_volume else []))
        if labels and aug["synthesis_prob"] > 0:
            # Partial volume: probability channel i is class i (background first), as the label indices.
            synth = SynthesizeImageFromLabels(background_zero=True, min_contrast=aug["synthesis_min_contrast"],
                                              bias_coeff_range=(0.0, float(aug["synthesis_bias_coeff"])),
                                              prob_key="probs" if partial_volume else None,
                                              labels=list(range(self.info.num_classes)) if partial_volume else None)
            transforms.append(RandSynthesisd(aug["synthesis_prob"], synth))
        transforms.append(ToLabelTensord(["label"]))
        transforms.append(MakeLRHRPaird(protocol, self.factor, axis=2, label_key="label" if labels else None,
                                        inplane_noise_std=self.inplane_noise_std(protocol)))
        return transforms

    def inplane_noise_std(self, protocol: str) -> float:
        """Noise std of the in-plane protocol's LR images (``data.inplane_noise_std``); none otherwise."""
        return float(self.cfg["data"].get("inplane_noise_std", 0.01)) if protocol == "inplane" else 0.0

    def train_transforms(self, stage: str) -> list:
        keys = ["lr_image", "hr_image"] + (["hr_label"] if self.uses_labels else [])
        return [*self.patch_transforms(self.cfg["data"]["patch_size"], labels=self.uses_labels), SelectKeysd(keys)]

    def validation_transforms(self) -> list:
        """Deterministic: centred crop, then the protocol's LR version (seed 0 for in-plane noise)."""
        pair = MakeLRHRPaird(self.protocol, self.factor, axis=2, label_key="label",
                             inplane_noise_std=self.inplane_noise_std(self.protocol))
        pair.set_random_state(seed=0)
        return [CentreCropd(self.cfg["data"]["val_crop"]), ToLabelTensord(["label"]), pair]

    def collate(self, items: list[dict]) -> dict:
        return torch.utils.data.default_collate(items)

    # ------------------------------------------------------------------ training
    @abstractmethod
    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss of one batch and its parts (floats, for logging)."""

    def before_backward(self, loss: torch.Tensor) -> torch.Tensor:
        """The tensor to backpropagate: ``loss`` plus terms that only train auxiliary weights
        (GradNorm's ``L_grad``), so every gradient comes from the one ``backward`` DDP averages."""
        return loss

    def after_step(self) -> None:
        """GradNorm renormalises its weights here."""
        return None

    def end_epoch(self) -> None:
        """DWA updates its weights from the epoch's losses here."""
        return None

    # ------------------------------------------------------------------ validation and export
    @abstractmethod
    def predict_case(self, case: dict) -> dict[str, np.ndarray]:
        """``{"image": (C, X, Y, Z) or None, "labels": (X, Y, Z) class indices or None}`` on the HR grid."""

    def export_network(self) -> nn.Module:
        return self.network

    @abstractmethod
    def export_metadata(self) -> dict[str, Any]:
        """``tasks``, ``scale``, ``protocol`` and ``uncertainty`` of the exported package."""


class SelectedOutputs(nn.Module):
    """``net`` returning only the ``keys`` of its output dict that the current loss uses.

    Why: DDP's ``find_unused_parameters`` searches the autograd graph from the forward's outputs, so
    a head whose output the loss ignores (REHRSeg's uncertainty before the Eq. 6 steps) must not be
    returned, or DDP waits for their gradients.  Kept outside ``adapter.modules``: checkpoints and
    exports hold the network itself.
    """

    def __init__(self, net: nn.Module, keys: tuple[str, ...]):
        super().__init__()
        self.net, self.keys = net, tuple(keys)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        out = self.net(*args, **kwargs)
        return {key: out[key] for key in self.keys}


def labels_from_logits(logits: torch.Tensor) -> np.ndarray:
    """Class indices from ``(K, ...)`` logits (K = 1: sigmoid foreground)."""
    if logits.shape[0] == 1:
        return (logits[0] > 0).numpy().astype(np.uint8)
    return logits.argmax(0).numpy().astype(np.uint8)


def as_parts(parts: Mapping[str, Any]) -> dict[str, float]:
    """Detached loss parts as floats for logging (tensors with one value only)."""
    out = {}
    for key, value in parts.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.detach().float().item()
        out[key] = float(value)
    return out
