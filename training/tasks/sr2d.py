"""2D SR networks on planes of HR patches: RDST / RDST-E (Zhu et al., Sec. 3.2, 4.3).

Through-plane models (``sr``/``interp`` protocol, scale ``(1, R)``) learn on the planes that
contain the through-plane axis -- the planes the inference engine feeds them (SMORE); in-plane
models (``inplane``, scale ``R``) learn on the slices.  A sample is a 3D patch degraded by the
protocol, cut into ``loss.planes_per_patch`` planes.

Stages (``stages[*].loss.objective``):

* ``unet`` -- pre-train the segmentation U-Net of the perceptual loss with Dice (Eq. 7);
* ``sr`` -- ``L_SR = alpha L_1 + lambda L_U`` (Eq. 12); ``perceptual_terms`` empty gives plain L1
  (the 100k-step first stage), ``[E1]`` the fine-tuning stage.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.transforms import Randomizable, Transform

from JointSRSegLib.inference.slicewise import inplane_sr, smore_sr
from JointSRSegLib.losses.rdst import RDSTLoss, SegmentationPerceptualLoss, unet_pretraining_loss
from JointSRSegLib.models.rdst_unet import SegmentationUNet
from training.tasks.base import TaskAdapter, as_parts
from training.tasks.transforms import SelectKeysd


class RandPlanesd(Randomizable, Transform):
    """Cut ``k`` planes from LR/HR patches: through-plane protocols take (X, Z) or (Y, Z) planes
    (orientation at random; the patch must be square in-plane), ``inplane`` takes (X, Y) slices."""

    def __init__(self, count: int, protocol: str):
        self.count, self.protocol = int(count), protocol
        self._orientation, self._indices = 0, [0]

    def randomize(self, data) -> None:
        shape = data  # (C, X, Y, Z) of the HR patch
        self._orientation = int(self.R.randint(0, 2))
        if self.protocol == "inplane":
            n_planes = shape[3]
        else:
            n_planes = shape[2] if self._orientation == 0 else shape[1]
        self._indices = [int(i) for i in self.R.choice(n_planes, size=min(self.count, n_planes), replace=False)]

    def _planes(self, array: torch.Tensor) -> torch.Tensor:
        if self.protocol == "inplane":  # (C, X, Y, Z): slices along Z are unaffected by the degradation
            return torch.stack([array[..., i] for i in self._indices])
        axis = 2 if self._orientation == 0 else 1  # index Y -> (C, X, Z); index X -> (C, Y, Z)
        return torch.stack([array.select(axis, i) for i in self._indices])

    def __call__(self, data):
        d = dict(data)
        self.randomize(tuple(d["hr_image"].shape))
        d["lr_planes"] = self._planes(d["lr_image"]).float()
        d["hr_planes"] = self._planes(d["hr_image"]).float()
        if "hr_label" in d:
            d["label_planes"] = self._planes(d["hr_label"]).long()
        if "crop_start" in d and "case_shape" in d:  # where each plane lies in its case, in [0, 1)
            axis = 2 if self.protocol == "inplane" else (1 if self._orientation == 0 else 0)
            start, size = int(d["crop_start"][axis]), int(d["case_shape"][axis])
            d["plane_position"] = torch.tensor([(start + i) / size for i in self._indices], dtype=torch.float32)
        return d


class SR2DAdapter(TaskAdapter):
    """``rdst`` / ``rdst_e``: L1 (+ segmentation perceptual loss), SMORE-style application."""

    architectures = ("rdst", "rdst_e")

    def setup(self) -> None:
        if self.protocol not in ("sr", "inplane"):
            raise ValueError(f"{self.cfg['model']['architecture']}: data.protocol must be sr (SMORE through-plane) "
                             f"or inplane, not {self.protocol!r}")
        self.scale = (self.factor, self.factor) if self.protocol == "inplane" else (1, self.factor)
        self.modules["net"] = self.build_network(in_channels=self.info.in_channels, scale=self.scale)
        features = tuple(self.loss_options.get("unet_features", (64, 128, 256, 512, 1024, 64)))
        self.modules["unet"] = SegmentationUNet(self.info.in_channels, self.info.num_classes, features)
        self.unet_loss = unet_pretraining_loss(self.info.num_classes)
        self.criterion = RDSTLoss()
        self.objective = "sr"

    def start_stage(self, stage: str, stage_options) -> None:
        options = {**self.loss_options, **dict(stage_options.get("loss") or {})}
        self.objective = options.get("objective", "sr")
        if self.objective not in ("sr", "unet"):
            raise ValueError(f"stage {stage!r}: loss.objective must be sr or unet, got {self.objective!r}")
        terms = list(options.get("perceptual_terms") or [])
        self.modules["unet"].requires_grad_(self.objective == "unet")
        perceptual = SegmentationPerceptualLoss(self.modules["unet"], terms) if terms else None
        self.criterion = RDSTLoss(perceptual, alpha=float(options.get("alpha", 1.0)),
                                  lam=float(options.get("lam", 10.0)))

    def stage_parameters(self, stage: str) -> list:
        module = self.modules["unet"] if self.objective == "unet" else self.modules["net"]
        return list(module.parameters())

    def train_transforms(self, stage: str) -> list:
        return [*self.patch_transforms(self.cfg["data"]["patch_size"]),
                RandPlanesd(int(self.loss_options.get("planes_per_patch", 4)), self.protocol),
                SelectKeysd(["lr_planes", "hr_planes", "label_planes"])]

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        hr = batch["hr_planes"].flatten(0, 1)
        if self.objective == "unet":
            self.modules["unet"].train()
            loss = self.unet_loss(self.forward_module("unet")(hr)["seg"], batch["label_planes"].flatten(0, 1))
            return loss, {"unet_dice_loss": float(loss.detach())}
        out = self.criterion(self.forward_module("net")(batch["lr_planes"].flatten(0, 1)), hr)
        return out["loss"], as_parts(out)

    def predict_case(self, case: dict) -> dict[str, Any]:
        net = self.network.eval()
        lr = case["lr_image"].float()
        if self.protocol == "inplane":
            image = inplane_sr(net, lr, self.device, batch=8)
        else:
            image = smore_sr(net, lr, self.device, batch=8)
        return {"image": image.numpy(), "labels": None}

    def export_metadata(self) -> dict[str, Any]:
        scale = [self.factor, self.factor, 1] if self.protocol == "inplane" else [1, 1, self.factor]
        return {"tasks": ["sr"], "scale": scale, "protocol": self.protocol, "uncertainty": []}
