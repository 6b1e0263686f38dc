"""3D joint SR + segmentation on patches: SwinSR-UNETR (and the REHRSeg segmenter trained alone).

SwinSR-UNETR (Vianto et al., Sec. 3.2 "Loss Function"): Dice + L1 with Kendall uncertainty
weighting (``SwinSRUNETRLoss``; ``loss.aleatoric: true`` switches L1 to the Laplace NLL,
``loss.nll_beta`` makes it a beta-NLL).
Validation runs the inference engine's sliding window on the whole LR case.
"""

from __future__ import annotations

from typing import Any

import torch

from JointSRSegLib.inference.sliding import sliding_window_predict
from JointSRSegLib.losses.rehrseg import REHRSegSegmentationLoss
from JointSRSegLib.losses.swinsr_unetr import SwinSRUNETRLoss
from training.tasks.base import TaskAdapter, as_parts, labels_from_logits
from training.tasks.transforms import SelectKeysd


def lr_patch_size(patch_size, protocol: str, factor: int) -> list[int]:
    """The LR window matching an HR patch (through-plane axis last)."""
    x, y, z = patch_size
    return [x, y, (z - 1) // factor + 1 if protocol == "interp" else z // factor]


class Joint3DAdapter(TaskAdapter):
    """``swinsr_unetr``: LR patch -> HR image + HR labels."""

    architectures = ("swinsr_unetr",)

    def setup(self) -> None:
        if self.protocol != "sr":
            raise ValueError(f"{self.cfg['model']['architecture']} is trained with data.protocol=sr "
                             f"(thick slices), not {self.protocol!r}")
        aleatoric = bool(self.loss_options.get("aleatoric", False))
        self.modules["net"] = self.build_network(
            in_channels=self.info.in_channels, seg_channels=self.info.num_classes,
            scale=(1, 1, self.factor), aleatoric=aleatoric)
        self.modules["criterion"] = SwinSRUNETRLoss(self.info.num_classes, aleatoric=aleatoric,
                                                    nll_beta=float(self.loss_options.get("nll_beta", 0.0)))

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.forward_module("net")(batch["lr_image"])
        total, parts = self.forward_module("criterion")(outputs, batch["hr_image"], batch["hr_label"])
        return total, as_parts(parts)

    def _sliding(self, lr: torch.Tensor, keys) -> dict[str, torch.Tensor]:
        roi = lr_patch_size(self.cfg["data"]["patch_size"], self.protocol, self.factor)
        net = self.network.eval()
        out = sliding_window_predict(net, lr[None].float(), roi, keys, self.device, overlap=0.25)
        return {k: v[0] for k, v in out.items()}

    def predict_case(self, case: dict) -> dict[str, Any]:
        out = self._sliding(case["lr_image"], ("sr", "seg"))
        return {"image": out["sr"].numpy(), "labels": labels_from_logits(out["seg"])}

    def export_metadata(self) -> dict[str, Any]:
        uncertainty = ["seg_entropy"] + (["sr_aleatoric"] if self.loss_options.get("aleatoric") else [])
        return {"tasks": ["sr", "seg"], "scale": [1, 1, self.factor], "protocol": "sr", "uncertainty": uncertainty}


class SegmenterAdapter(Joint3DAdapter):
    """``rehrseg_seg`` trained alone on real HR labels (no self-SR teacher): LR CE + HR Dice-CE."""

    architectures = ("rehrseg_seg",)

    def setup(self) -> None:
        self.modules["net"] = self.build_network(
            in_channels=self.info.in_channels, num_classes=self.info.num_classes, scale=(1, 1, self.factor))
        features = self.network.jointsrseg_config["config"]["features"][0]
        self.modules["criterion"] = REHRSegSegmentationLoss(features, features)
        # Without a self-SR teacher nothing is distilled: the loss's feature adaptor never gets a
        # gradient, so it is not trained (and DDP need not wait for it).
        self.modules["criterion"].requires_grad_(False)

    def train_transforms(self, stage: str) -> list:
        base = self.patch_transforms(self.cfg["data"]["patch_size"])
        return [*base, SelectKeysd(["lr_image", "hr_image", "hr_label", "lr_label"])]

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.forward_module("net")(batch["lr_image"])
        parts = self.forward_module("criterion")(outputs, batch["lr_label"], batch["hr_label"])
        return parts["loss"], as_parts(parts)

    def predict_case(self, case: dict) -> dict[str, Any]:
        out = self._sliding(case["lr_image"], ("seg",))
        return {"image": None, "labels": labels_from_logits(out["seg"])}

    def export_metadata(self) -> dict[str, Any]:
        return {"tasks": ["seg"], "scale": [1, 1, self.factor], "protocol": "sr", "uncertainty": ["seg_entropy"]}

