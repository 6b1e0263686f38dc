"""The training loop: stages, AMP, clipping, validation, early stopping, checkpoints, resume.

One step = one optimizer update on ``data.batch_size`` samples per process (a stage may set its
own ``batch_size`` and ``optim`` name/betas); an "epoch" is
``train.steps_per_epoch`` steps (patch sampling has no natural epoch).  Stages (two-stage
schedules: RDST's L1 then fine-tuning, REHRSeg's self-SR then segmentation) each get a fresh
optimizer and schedule; the global step decides the stage, so a resumed run re-enters the stage
it left and restores that stage's optimizer, scheduler and scaler state.

Multi-process: the networks a stage trains are wrapped in ``DistributedDataParallel`` for that
stage (:func:`training.engine.distributed.wrap_trained_modules`), batches come from a
``DistributedSampler`` (:mod:`training.engine.data`), and the logged loss and its parts are the
means over the ranks; rank 0 validates, logs and checkpoints the unwrapped modules.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose
from tqdm import tqdm

from training.config import save_config
from training.engine import distributed as dist_utils
from training.engine.checkpoint import (
    BEST,
    LAST,
    load_checkpoint,
    load_initial_weights,
    rng_state,
    save_atomically,
    set_rng_state,
)
from training.engine.data import cached_cases, prepare_cases, training_batches
from training.engine.logging import RunLogger
from training.engine.schedules import build_optimizer, build_scheduler
from training.engine.validation import monitored, validate, validation_items
from training.tasks import adapter_class


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of every tensor of ``module`` (ranks of a data-parallel run must agree)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TrainingError(RuntimeError):
    """A run that cannot continue (non-finite loss, missing checkpoint); one line for the user."""


def select_device(name: str, ctx: dist_utils.DistributedContext) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("run.device is cuda but no CUDA device is available")
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def stage_list(cfg: dict) -> list[dict]:
    """The configured stages with their global step ranges ``[start, stop)``."""
    stages = cfg["stages"] or [{"name": "train", "steps": cfg["train"]["max_steps"]}]
    out, start = [], 0
    for stage in stages:
        out.append({**stage, "start": start, "stop": start + stage["steps"]})
        start += stage["steps"]
    return out


def stage_optim(cfg: dict, stage: dict) -> dict:
    """The optimiser of a stage: the ``optim`` section with the stage's ``optim`` ({name?, betas?}) on top
    (the CNN+ViT paper trains its ViT with AdamW and its SR network with Adam, Sec. 4.1)."""
    return {**cfg["optim"], **dict(stage.get("optim") or {})}


def stage_batch_size(cfg: dict, stage: dict) -> int:
    """Samples per step and process in a stage (``stages[*].batch_size``, else ``data.batch_size``)."""
    return int(stage.get("batch_size", cfg["data"]["batch_size"]))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Trainer:
    """Holds the state of one run; :meth:`fit` trains from the current step to ``train.max_steps``."""

    def __init__(self, cfg: dict, run_dir: Path, resume: bool = False):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.ctx = dist_utils.init_distributed("cuda" if cfg["run"]["device"] != "cpu" and torch.cuda.is_available()
                                               else "cpu")
        self.device = select_device(cfg["run"]["device"], self.ctx)
        if cfg["run"]["threads"]:
            torch.set_num_threads(cfg["run"]["threads"])
        self.amp = bool(cfg["run"]["amp"]) and self.device.type == "cuda"
        seed_everything(cfg["run"]["seed"], cfg["run"]["deterministic"])
        last = self.run_dir / LAST
        if not resume and last.exists():
            raise TrainingError(f"{self.run_dir}: run already exists; resume it with --resume or choose another "
                                "run.name")
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        dist_utils.barrier(self.ctx)
        self.cases, self.info = prepare_cases(cfg, self.run_dir)
        self.adapter = adapter_class(cfg["model"]["architecture"])(cfg, self.info, self.device)
        self.train_cases = cached_cases(cfg, self.cases, self.info, self.run_dir, "train")
        self.val_items: list[dict] = []
        if self.ctx.is_main and cfg["train"]["val_every"]:
            val_cached = cached_cases(cfg, self.cases, self.info, self.run_dir, "validation")
            self.val_items = validation_items(cfg, val_cached, self.adapter)
        self.logger = RunLogger(self.run_dir, enabled=self.ctx.is_main)
        self.step, self.best, self.best_step, self.bad_validations = 0, None, None, 0
        self.history: list[dict] = []
        self.checkpoint = load_checkpoint(last) if resume else None
        if self.checkpoint is None and cfg["model"]["init_weights"]:
            fresh = load_initial_weights(self.adapter.export_network(), cfg["model"]["init_weights"],
                                         strict=cfg["model"]["init_strict"])
            if fresh and self.ctx.is_main:
                print(f"init_weights: {len(fresh)} tensors keep their initialisation ({', '.join(fresh[:6])}"
                      + (", ..." if len(fresh) > 6 else "") + ")", flush=True)
        if self.checkpoint is not None:
            self.adapter.modules.load_state_dict(self.checkpoint["modules"])
            self.step = int(self.checkpoint["step"])
            self.best, self.best_step = self.checkpoint["best"], self.checkpoint["best_step"]
            self.bad_validations = int(self.checkpoint["bad_validations"])
            self.history = list(self.checkpoint.get("history", []))

    # ------------------------------------------------------------------ stage
    def _stage_objects(self, index: int, stage: dict):
        cfg = self.cfg
        self.adapter.start_stage(stage["name"], stage)
        params = self.adapter.stage_parameters(stage["name"])
        lr = float(stage.get("lr", cfg["optim"]["lr"]))
        weight_decay = float(stage.get("weight_decay", cfg["optim"]["weight_decay"]))
        schedule = {**cfg["schedule"], **dict(stage.get("schedule") or {})}
        optimizer = build_optimizer(params, stage_optim(cfg, stage), lr, weight_decay)
        scheduler = build_scheduler(optimizer, schedule, stage["steps"], lr)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        ckpt = self.checkpoint
        if ckpt is not None and ckpt["stage_index"] == index and ckpt["step"] < stage["stop"]:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
        return params, optimizer, scheduler, scaler, schedule

    def fit(self, stop_at_step: int | None = None) -> dict:
        """Train to ``train.max_steps`` (or, to simulate a killed run in tests, stop after ``stop_at_step``)."""
        cfg, started = self.cfg, time.time()
        if self.checkpoint is not None:
            set_rng_state(self.checkpoint["rng"])  # after every constructor that draws random numbers
        bar = tqdm(total=cfg["train"]["max_steps"], initial=self.step, disable=not (
            self.ctx.is_main and cfg["train"]["progress"]), desc=cfg["run"]["name"], dynamic_ncols=True)
        stopped = "completed"
        for index, stage in enumerate(stage_list(cfg)):
            if self.step >= stage["stop"]:
                continue
            result = self._run_stage(index, stage, bar, stop_at_step)
            if result != "completed":
                stopped = result
                break
        bar.close()
        for module in self.adapter.modules.values():  # what DDP's next forward would do: rank 0's buffers
            dist_utils.broadcast_module(module, self.ctx, buffers_only=True)
        digests = dist_utils.gather_objects(weights_digest(self.adapter.modules), self.ctx)
        summary = {"step": self.step, "stopped": stopped, "best": self.best, "best_step": self.best_step,
                   "seconds": round(time.time() - started, 2), "world_size": self.ctx.world_size,
                   "device": str(self.device), "history": self.history,
                   "rank_weight_digests": digests}
        if self.ctx.is_main and stopped != "interrupted":
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        self.logger.close()
        return summary

    def _run_stage(self, index: int, stage: dict, bar, stop_at_step: int | None) -> str:
        cfg, adapter = self.cfg, self.adapter
        params, optimizer, scheduler, scaler, schedule = self._stage_objects(index, stage)
        batches = training_batches(self.train_cases, Compose(adapter.train_transforms(stage["name"])),
                                   cfg["run"]["seed"], self.step, stage["stop"], cfg["train"]["steps_per_epoch"],
                                   stage_batch_size(cfg, stage), self.ctx.rank, self.ctx.world_size,
                                   cfg["data"]["num_workers"], adapter.collate)
        names = list(adapter.modules.keys())
        adapter.ddp_wrappers = dist_utils.wrap_trained_modules(
            {name: adapter.ddp_module(name) for name in names}, params,
            [name for name in names if adapter.find_unused_parameters(name)], self.ctx, self.device)
        unwrapped = [adapter.modules[name] for name in names if name not in adapter.ddp_wrappers]
        for module in unwrapped:  # DDP synchronised the wrapped ones when it was built
            dist_utils.broadcast_module(module, self.ctx)
        try:
            return self._train_steps(index, stage, batches, params, optimizer, scheduler, scaler, schedule,
                                     unwrapped, bar, stop_at_step)
        finally:
            adapter.ddp_wrappers = {}

    def _train_steps(self, index: int, stage: dict, batches: Iterable[dict], params: list[torch.nn.Parameter],
                     optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler, schedule: dict,
                     unwrapped: list[torch.nn.Module], bar: tqdm, stop_at_step: int | None) -> str:
        """The steps of one stage; returns ``completed``, ``early_stopped`` or ``interrupted``."""
        cfg, adapter = self.cfg, self.adapter
        for batch in batches:
            adapter.modules.train()
            batch = _to_device(batch, self.device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                loss, parts = adapter.training_loss(batch, stage["name"], self.step - stage["start"])
            # One all-reduce: the mean loss and parts over the ranks (logged) and whether any rank's
            # loss is not finite (then every rank stops before its backward).
            local_bad = not bool(torch.isfinite(loss.detach()))
            reduced = dist_utils.mean_over_ranks(torch.tensor(
                [float(loss.detach()), float(local_bad), *parts.values()], dtype=torch.float64,
                device=self.device), self.ctx).tolist()
            if reduced[1] > 0:
                self._non_finite(loss, batch, stage, local_bad)
            mean_loss, parts = reduced[0], dict(zip(parts, reduced[2:]))
            scaler.scale(adapter.before_backward(loss)).backward()  # DDP averages the gradients here
            if cfg["optim"]["grad_clip"] > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg["optim"]["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            adapter.after_step()
            for module in unwrapped:  # e.g. DWA statistics; DDP broadcasts the wrapped modules' buffers
                dist_utils.broadcast_module(module, self.ctx, buffers_only=True)
            if schedule["name"] != "plateau":
                scheduler.step()
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4g}", stage=stage["name"])
            if self.step % cfg["train"]["log_every"] == 0 or self.step == stage["stop"]:
                self.logger.scalars(self.step, stage["name"], "train",
                                    {"loss": mean_loss, **parts, "lr": optimizer.param_groups[0]["lr"]})
            epoch_end = self.step % cfg["train"]["steps_per_epoch"] == 0 or self.step == stage["stop"]
            if epoch_end:
                if self._end_epoch(index, stage, optimizer, scheduler, scaler, schedule):
                    return "early_stopped"
            elif cfg["train"]["checkpoint_every"] and self.step % cfg["train"]["checkpoint_every"] == 0:
                self._save(index, optimizer, scheduler, scaler, best=False)
            if stop_at_step is not None and self.step >= stop_at_step:
                return "interrupted"
        return "completed"

    def _end_epoch(self, index, stage, optimizer, scheduler, scaler, schedule) -> bool:
        """Validate, update best / early stopping, checkpoint; True when the run should stop."""
        cfg = self.cfg
        self.adapter.end_epoch()
        epoch = -(-self.step // cfg["train"]["steps_per_epoch"])
        improved, stop = False, False
        if cfg["train"]["val_every"] and epoch % cfg["train"]["val_every"] == 0 and self.ctx.is_main:
            metrics = validate(self.adapter, self.val_items, self.logger, self.step, cfg["train"]["previews"])
            self.logger.scalars(self.step, stage["name"], "validation", metrics)
            self.history.append({"step": self.step, "stage": stage["name"], **metrics})
            name, value, maximise = monitored(metrics, cfg["train"]["monitor"])
            if value is not None:
                if schedule["name"] == "plateau":
                    scheduler.step(value if maximise else -value)
                improved = self.best is None or (value > self.best["value"] if maximise else value < self.best["value"])
                if improved:
                    self.best, self.best_step, self.bad_validations = {"metric": name, "value": value,
                                                                       "metrics": metrics}, self.step, 0
                else:
                    self.bad_validations += 1
            patience = cfg["train"]["early_stopping_patience"]
            stop = bool(patience) and self.bad_validations >= patience
        stop = dist_utils.all_reduce_flag(stop, self.ctx, self.device)
        self._save(index, optimizer, scheduler, scaler, best=improved)
        return stop

    def _save(self, index, optimizer, scheduler, scaler, best: bool) -> None:
        if not self.ctx.is_main:
            return
        payload = {
            "step": self.step, "stage_index": index, "modules": self.adapter.modules.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "rng": rng_state(), "best": self.best, "best_step": self.best_step,
            "bad_validations": self.bad_validations, "history": self.history, "config": self.cfg,
            "data_info": dataclasses.asdict(self.info), "world_size": self.ctx.world_size,
        }
        save_config(self.cfg, self.run_dir / "config.yaml")
        save_atomically(payload, self.run_dir / LAST)
        if best:
            save_atomically(payload, self.run_dir / BEST)

    def _non_finite(self, loss: torch.Tensor, batch: dict, stage: dict, local: bool) -> None:
        last = self.run_dir / LAST
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
        if not local:
            raise TrainingError(f"non-finite loss on another rank at step {self.step + 1} (stage "
                                f"{stage['name']!r}); {kept}")
        keys = batch.get("sample_key")
        where = "" if keys is None else ", samples (epoch, index) " + ", ".join(
            f"({int(a)}, {int(b)})" for a, b in keys.cpu().tolist())
        raise TrainingError(f"non-finite loss {float(loss.detach())} at step {self.step + 1} (stage "
                            f"{stage['name']!r}, batch of rank {self.ctx.rank}{where}); {kept}")


def run_training(cfg: dict, resume_dir: Path | None = None, stop_at_step: int | None = None) -> dict:
    """Train (or resume) the run ``<run.out_dir>/<run.name>``; returns the summary."""
    run_dir = Path(resume_dir) if resume_dir is not None else Path(cfg["run"]["out_dir"]) / cfg["run"]["name"]
    trainer = Trainer(cfg, run_dir, resume=resume_dir is not None)
    try:
        summary = trainer.fit(stop_at_step)
        # Every rank reaches the end before any tears its process group down: a gloo rank destroyed while
        # its peer still writes the summary aborted at exit ("terminate called without an active exception").
        dist_utils.barrier(trainer.ctx)
    finally:
        dist_utils.shutdown(trainer.ctx)
    summary["run_dir"] = str(run_dir)
    return summary
