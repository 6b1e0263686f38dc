"""REHRSeg two-stage training (Song et al., Sec. 3.2-3.6, 4.2): self-SR, then segmentation.

Stage ``self_sr`` -- the SR network learns from the LR scan alone: an in-plane axis of the
(annotated) LR patch is degraded by the protocol (``SelfSupervisedPaird``) and moved last, the
network restores it; ``REHRSegSRLoss`` switches the uncertainty-aware L1 (Eq. 6) on for the final
``loss.uncertainty_steps`` of the stage (paper: 20k of 150k).
``loss.isotropic: true`` (paper recipe) first interpolates the LR patch and its labels to
isotropic spacing along the slice axis (Sec. 3.2, B-spline / nearest), then degrades the in-plane axis.
Stage ``segmentation`` -- the frozen SR network super-resolves the LR patch with its labels; its
HR annotation is the pseudo HR label, its uncertainty (decimated to the LR grid) weights the LR
cross-entropy (Eq. 7) and its features are distilled into the segmenter (Eqs. 8-10).  With
``loss.pseudo_lr: true`` (paper recipe, Sec. 3.3 / Eq. 1) each step's segmenter input is one of
``R + 1`` variants drawn uniformly (seeded by run seed and step, so resumes and ranks agree): the
real LR patch with its LR labels, or pseudo LR scan ``k = 0 .. R-1`` re-degraded from the teacher's
SR image with the LR labels of the pseudo HR labels (``training/data/pseudo_lr.py``); U and the
teacher features follow the chosen grid.  Without it the segmenter reads only the real LR patch.
In sample mode the "LR scans" are thick-slice versions of the HR patches; HR images never
enter the losses.  The exported package holds the segmenter *and* the self-SR teacher
(``rehrseg_seg_uasr``), so inference gives the HR segmentation and the UASR uncertainty map
(Eq. 5); ``loss.export: segmenter`` exports the segmenter alone (``rehrseg_seg``, entropy only).

Multi-process (DDP): ``sr`` is wrapped in the self-SR stage, ``seg`` and ``seg_criterion`` in the
segmentation stage (the frozen teacher is not).  Before the Eq. 6 steps the uncertainty head gets
no gradient, so the self-SR stage uses ``find_unused_parameters`` and DDP sees only the outputs
the loss uses (:class:`~training.tasks.base.SelectedOutputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from JointSRSegLib.inference.sliding import sliding_window_predict
from JointSRSegLib.losses.rehrseg import REHRSegSegmentationLoss, REHRSegSRLoss
from JointSRSegLib.models import build
from training.data import SelfSupervisedPaird
from training.data.pseudo_lr import IsotropicInterpolated, pseudo_lr_batch, pseudo_lr_uncertainty, shift_lr_grid
from training.tasks.base import SelectedOutputs, TaskAdapter, as_parts, labels_from_logits
from training.tasks.joint3d import lr_patch_size
from training.tasks.transforms import SelectKeysd

OBJECTIVES = ("self_sr", "segmentation")
EXPORTS = ("with_uasr", "segmenter")
SR_KEYS = ("sr", "seg")  # the self-SR outputs the loss uses before the uncertainty steps


class LRScanAsImaged(Transform):
    """The simulated LR scan (``lr_image``/``lr_label``) becomes the case image for self-supervision."""

    def __call__(self, data):
        d = dict(data)
        d["image"], d["label"] = d.pop("lr_image"), d.pop("lr_label")
        return d


class DegradedAxisLastd(Transform):
    """Move the self-supervision's degraded in-plane axis last, where ``REHRSegSR`` upsamples."""

    def __call__(self, data):
        d = dict(data)
        axis = int(d["axis"])
        for key in ("lr_image", "target_image", "target_label", "lr_label"):
            d[key] = torch.movedim(torch.as_tensor(d[key]), axis + 1, -1).contiguous()
        return d


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range of REHRSeg's tanh image branch."""
    return x * 2.0 - 1.0


class REHRSegAdapter(TaskAdapter):
    """``rehrseg_sr`` + ``rehrseg_seg`` trained in two stages (``stages[*].loss.objective``)."""

    architectures = ("rehrseg_sr",)

    def setup(self) -> None:
        if self.protocol != "sr":
            raise ValueError(f"REHRSeg is trained for thick slices: data.protocol must be sr, not {self.protocol!r}")
        preset = self.cfg["model"]["preset"]
        k = self.info.num_classes
        self.modules["sr"] = self.build_network(in_channels=self.info.in_channels, num_classes=k, scale=self.factor,
                                                slice_axis=2)
        self.modules["seg"] = build("rehrseg_seg", preset, **dict(self.loss_options.get("segmenter_overrides", {})),
                                    in_channels=self.info.in_channels, num_classes=k, scale=(1, 1, self.factor))
        seg_features = self.modules["seg"].jointsrseg_config["config"]["features"][0]
        sr_features = self.modules["sr"].jointsrseg_config["config"]["features"][0]
        self.modules["seg_criterion"] = REHRSegSegmentationLoss(
            seg_features, sr_features, correlation_normalize_by=self.loss_options.get("correlation_normalize_by",
                                                                                      "pairs"))
        self.sr_criterion = REHRSegSRLoss()
        self.sr_outputs = SelectedOutputs(self.modules["sr"], SR_KEYS + ("sr_uncertainty",))
        self.objective = "self_sr"
        self.pseudo_lr = bool(self.loss_options.get("pseudo_lr", False))
        self.isotropic = bool(self.loss_options.get("isotropic", False))
        self.seed = int(self.cfg["run"]["seed"])
        self.export = str(self.loss_options.get("export", "with_uasr"))
        if self.export not in EXPORTS:
            raise ValueError(f"loss.export must be one of {', '.join(EXPORTS)}, not {self.export!r}")

    @property
    def network(self) -> torch.nn.Module:
        return self.modules["seg"]

    def start_stage(self, stage: str, stage_options) -> None:
        options = {**self.loss_options, **dict(stage_options.get("loss") or {})}
        self.objective = options.get("objective", stage)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"stage {stage!r}: loss.objective must be one of {', '.join(OBJECTIVES)}")
        steps = int(stage_options["steps"])
        self.sr_criterion = REHRSegSRLoss(steps, min(steps, int(options.get("uncertainty_steps", steps // 7))))
        self.modules["sr"].requires_grad_(self.objective == "self_sr")

    def ddp_module(self, name: str) -> torch.nn.Module:
        return self.sr_outputs if name == "sr" else self.modules[name]

    def find_unused_parameters(self, name: str) -> bool:
        """The self-SR uncertainty head gets gradients only in the stage's final Eq. 6 steps."""
        return name == "sr" and self.objective == "self_sr" and self.sr_criterion.uncertainty_start > 0

    def stage_parameters(self, stage: str) -> list:
        if self.objective == "self_sr":
            return list(self.modules["sr"].parameters())
        return list(self.modules["seg"].parameters()) + list(self.modules["seg_criterion"].parameters())

    def train_transforms(self, stage: str) -> list:
        base = self.patch_transforms(self.cfg["data"]["patch_size"])
        if self.objective == "segmentation":
            return [*base, SelectKeysd(["lr_image", "lr_label"])]
        isotropic = [IsotropicInterpolated(self.factor, slice_axis=2)] if self.isotropic else []
        return [*base, LRScanAsImaged(), *isotropic, SelfSupervisedPaird("sr", self.factor, slice_axis=2),
                DegradedAxisLastd(), SelectKeysd(["lr_image", "target_image", "target_label", "lr_label"])]

    def segmenter_variant(self, step: int) -> int:
        """``-1``: the real LR patch; ``k = 0 .. R-1``: pseudo LR scan ``k`` (Eq. 1), uniform over the ``R + 1``."""
        if not self.pseudo_lr:
            return -1
        return int(np.random.default_rng([self.seed, int(step)]).integers(-1, self.factor))

    def segmenter_batch(self, batch: dict, teacher: dict, step: int) -> dict:
        """The segmenter's input and targets for this step: real or pseudo LR (Sec. 3.3), U and F^sr on its grid."""
        pseudo_hr = teacher["seg"].argmax(1, keepdim=True)
        k = self.segmenter_variant(step)
        if k < 0:
            # The SR grid's HR slice iR + floor(R/2) is the one nearest LR slice i's centre.
            return {"lr_image": batch["lr_image"], "lr_label": batch["lr_label"], "hr_label": pseudo_hr,
                    "uncertainty": pseudo_lr_uncertainty(teacher["sr_uncertainty"], self.factor, 2, 0),
                    "features": teacher["features"], "variant": k}
        pseudo = pseudo_lr_batch((teacher["sr"] + 1.0) / 2.0, pseudo_hr, self.factor, 2, k)
        return {**pseudo, "uncertainty": pseudo_lr_uncertainty(teacher["sr_uncertainty"], self.factor, 2, k),
                "features": shift_lr_grid(teacher["features"], self.factor, 2, k), "variant": k}

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.objective == "self_sr":
            enabled = self.sr_criterion.set_iteration(step)
            self.sr_outputs.keys = SR_KEYS + (("sr_uncertainty",) if enabled else ())
            outputs = self.forward_module("sr")(to_signed(batch["lr_image"]), batch["lr_label"])
            parts = self.sr_criterion(outputs, to_signed(batch["target_image"]), batch["target_label"])
            return parts["loss"], {**as_parts(parts), "uncertainty_on": float(enabled)}
        with torch.no_grad():
            teacher = self.modules["sr"].eval()(to_signed(batch["lr_image"]), batch["lr_label"])
        data = self.segmenter_batch(batch, teacher, step)
        outputs = self.forward_module("seg")(data["lr_image"])
        parts = self.forward_module("seg_criterion")(outputs, data["lr_label"], data["hr_label"],
                                                     data["uncertainty"], data["features"])
        return parts["loss"], {**as_parts(parts), "pseudo_offset": float(data["variant"])}

    def predict_case(self, case: dict) -> dict[str, Any]:
        lr = case["lr_image"].float()
        if self.objective == "self_sr":
            net = self.modules["sr"].eval()
            out = net(to_signed(lr[None]).to(self.device), case["lr_label"][None].to(self.device))
            image = ((out["sr"][0].cpu() + 1.0) / 2.0).numpy()
            return {"image": image, "labels": labels_from_logits(out["seg"][0].cpu())}
        roi = lr_patch_size(self.cfg["data"]["patch_size"], "sr", self.factor)
        out = sliding_window_predict(self.modules["seg"].eval(), lr[None], roi, ("seg",), self.device)
        return {"image": None, "labels": labels_from_logits(out["seg"][0])}

    def export_network(self) -> torch.nn.Module:
        """The segmenter, with the self-SR teacher that gives the UASR map (``loss.export: with_uasr``)."""
        if self.export == "segmenter":
            return self.modules["seg"]
        preset = self.cfg["model"]["preset"]
        net = build("rehrseg_seg_uasr", preset, segmenter=self.modules["seg"].jointsrseg_config["config"],
                    teacher=self.modules["sr"].jointsrseg_config["config"])
        net.segmenter.load_state_dict(self.modules["seg"].state_dict())
        net.teacher.load_state_dict(self.modules["sr"].state_dict())
        return net

    def export_metadata(self) -> dict[str, Any]:
        # The teacher's UASR map on request (method uasr); the default map is the softmax entropy.
        uncertainty = ["seg_entropy"] if self.export == "segmenter" else ["seg_entropy", "seg_uasr"]
        return {"tasks": ["seg"], "scale": [1, 1, self.factor], "protocol": "sr", "uncertainty": uncertainty}
