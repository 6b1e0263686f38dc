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
from JointSRSegLib.losses.swinsr_unetr import SwinSRUNETRLoss, laplace_nll
from training.data import MakeLRHRPaird
from training.data.realistic import RealisticPatchd, RealisticValidationd, is_realistic_root
from training.tasks.base import TaskAdapter, as_parts, labels_from_logits
from training.tasks.transforms import SelectKeysd, ThickVoxelsd, ToLabelTensord


def lr_patch_size(patch_size, protocol: str, factor: int, scale=None) -> list[int]:
    """The LR window matching an HR patch (through-plane axis last; ``scale``: per-axis magnification)."""
    x, y, z = patch_size
    sx, sy, _ = scale or (1, 1, factor)
    return [x // sx, y // sy, (z - 1) // factor + 1 if protocol == "interp" else z // factor]


def model_scale(cfg: dict) -> tuple[int, int, int]:
    """The per-axis magnification the network is built with: ``data.scale`` or ``(1, 1, data.factor)``."""
    scale = cfg["data"].get("scale")
    return tuple(int(v) for v in scale) if scale else (1, 1, int(cfg["data"]["factor"]))


class Joint3DAdapter(TaskAdapter):
    """``swinsr_unetr``: LR patch -> HR image + HR labels."""

    architectures = ("swinsr_unetr",)

    def setup(self) -> None:
        if self.protocol != "sr":
            raise ValueError(f"{self.cfg['model']['architecture']} is trained with data.protocol=sr "
                             f"(thick slices), not {self.protocol!r}")
        aleatoric = bool(self.loss_options.get("aleatoric", False))
        self.scale = model_scale(self.cfg)
        self.modules["net"] = self.build_network(
            in_channels=self.info.in_channels, seg_channels=self.info.num_classes,
            scale=self.scale, aleatoric=aleatoric)
        self.modules["criterion"] = SwinSRUNETRLoss(self.info.num_classes, aleatoric=aleatoric,
                                                    nll_beta=float(self.loss_options.get("nll_beta", 0.0)))

    @property
    def realistic(self) -> bool:
        """``data.root: synthseg:...``: label-map synthesis + real T1 patches, RAS voxel order."""
        return is_realistic_root(self.cfg["data"]["root"])

    def thick_voxels(self) -> list:
        """Isotropic ``data.scale``: the in-plane axes made thick too (:class:`ThickVoxelsd`)."""
        axes = [a for a in (0, 1) if self.scale[a] > 1]
        return [ThickVoxelsd(self.factor, axes)] if axes else []

    def train_transforms(self, stage: str) -> list:
        if not self.realistic:
            *pair, select = super().train_transforms(stage)
            return [*pair, *self.thick_voxels(), select]
        aug = self.cfg["augment"]
        patch = RealisticPatchd(self.cfg["data"]["patch_size"], affine_prob=aug["affine_prob"],
                                min_contrast=aug["synthesis_min_contrast"], bias_coeff=aug["synthesis_bias_coeff"])
        pair = MakeLRHRPaird(self.protocol, self.factor, axis=2, label_key="label")
        return [patch, pair, *self.thick_voxels(), SelectKeysd(["lr_image", "hr_image", "hr_label", "seg_weight"])]

    def validation_transforms(self) -> list:
        if not self.realistic:
            return [*super().validation_transforms(), *self.thick_voxels()]
        pair = MakeLRHRPaird(self.protocol, self.factor, axis=2, label_key="label")
        return [RealisticValidationd(self.cfg["data"]["val_crop"], seed=self.cfg["run"]["seed"]),
                ToLabelTensord(["label"]), pair, *self.thick_voxels()]

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.forward_module("net")(batch["lr_image"])
        weight = batch.get("seg_weight")
        if weight is None or bool((weight > 0).all()):
            total, parts = self.forward_module("criterion")(outputs, batch["hr_image"], batch["hr_label"])
            return total, as_parts(parts)
        return self._masked_loss(outputs, batch, weight > 0)

    def _masked_loss(self, outputs: dict, batch: dict, labelled: torch.Tensor):
        """The joint loss with the segmentation term only over the samples that have labels (real T1
        patches train the SR head alone).  Same terms as ``SwinSRUNETRLoss``; a label-less batch adds
        a zero-weighted segmentation term so every parameter stays in the graph."""
        criterion = self.modules["criterion"]
        sr, target = outputs["sr"], batch["hr_image"]
        l1 = (sr - target).abs().mean()
        logits = outputs["seg"]
        if bool(labelled.any()):
            seg = criterion.dice(logits[labelled], batch["hr_label"][labelled].unsqueeze(1)
                                 if batch["hr_label"].ndim == 4 else batch["hr_label"][labelled])
        else:
            seg = None
        parts = {"sr_l1": l1.detach()}
        if criterion.aleatoric:
            sr_loss = laplace_nll(sr, outputs["sr_log_var"], target, criterion.nll_beta)
            total = sr_loss + (criterion.weighting([seg]) if seg is not None else 0.0 * logits.sum())
            parts["sr_nll"] = sr_loss.detach()
        else:
            s = criterion.weighting.log_vars if hasattr(criterion.weighting, "log_vars") else None
            if seg is not None or s is None:
                total = criterion.weighting([seg if seg is not None else 0.0 * logits.sum(), l1])
            else:
                total = 0.5 * torch.exp(-s[1]) * l1 + 0.5 * s[1] + 0.0 * (logits.sum() + s[0])
        if seg is not None:
            parts["seg_dice"] = seg.detach()
        parts["total"] = total.detach()
        return total, as_parts(parts)

    def _sliding(self, lr: torch.Tensor, keys) -> dict[str, torch.Tensor]:
        roi = lr_patch_size(self.cfg["data"]["patch_size"], self.protocol, self.factor, self.scale)
        net = self.network.eval()
        out = sliding_window_predict(net, lr[None].float(), roi, keys, self.device, overlap=0.25)
        return {k: v[0] for k, v in out.items()}

    def predict_case(self, case: dict) -> dict[str, Any]:
        out = self._sliding(case["lr_image"], ("sr", "seg"))
        return {"image": out["sr"].numpy(), "labels": labels_from_logits(out["seg"])}

    def export_metadata(self) -> dict[str, Any]:
        uncertainty = ["seg_entropy"] + (["sr_aleatoric"] if self.loss_options.get("aleatoric") else [])
        meta = {"tasks": ["sr", "seg"], "scale": list(self.scale), "protocol": "sr", "uncertainty": uncertainty}
        if self.realistic:  # trained in RAS voxel order: the engine reorients every input to it
            meta["inference"] = {"orientation": "RAS"}
        return meta


class SegmenterAdapter(Joint3DAdapter):
    """``rehrseg_seg`` trained alone on real HR labels (no self-SR teacher): LR CE + HR Dice-CE."""

    architectures = ("rehrseg_seg",)

    def setup(self) -> None:
        self.scale = (1, 1, self.factor)
        self.modules["net"] = self.build_network(
            in_channels=self.info.in_channels, num_classes=self.info.num_classes, scale=self.scale)
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

