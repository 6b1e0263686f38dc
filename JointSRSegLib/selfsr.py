"""Self-supervised through-plane SR / slice interpolation of one scan (``--model self``).

No weights, no training data: following SMORE (Zhao et al.), a small 2D network is trained on the
scan's own high-resolution in-plane slices, degraded along one in-plane axis exactly as the
through-plane axis was acquired (see :mod:`JointSRSegLib.selfsr_data`), and then applied along
the through-plane axis on the two planes that contain it; the two estimates are averaged.

Budget: everything (preparation, training, inference) fits ``time_budget`` seconds; the inference
time is measured on real planes before training starts and reserved.  ``max_steps`` caps the
number of optimiser steps; when it is given the learning-rate schedule follows the step count,
so results are bit-reproducible for a fixed seed (as long as the time budget is not hit first).
See docs/selfsr.md for the method, the deviations from SMORE and the measured figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from .errors import CancelledError, InputError
from .geometry import output_grid
from .selfsr_data import InplanePatchSampler
from .selfsr_net import build_network, cosine_lr
from .vocabulary import THROUGH_PLANE_PROTOCOLS, check_axis, check_choice, check_factor
from .volume import Volume

ProgressCallback = Callable[[float, str], None]
PERCENTILES = (0.5, 99.5)
TRAIN_FRACTION = (0.05, 0.85)  # progress range spent in training; inference takes the rest
INFERENCE_SAFETY = 1.5  # reserve this multiple of the measured inference time
MEMORY_BUDGET_BYTES = 256 * 2**20  # activations of one inference batch
CURVE_POINTS = 200
PLANE_SPREAD_SCALE = 0.05  # spread (normalised units) that maps to uncertainty 0.5, as in uncertainty.py
DEFAULTS = {"batch_size": 16, "patch_hr": 48, "learning_rate": 1e-3, "network": "cnn"}


class _Progress:
    """Monotonic wrapper of the user's ``progress(fraction, stage)`` callback."""

    def __init__(self, callback: ProgressCallback | None):
        self.callback = callback
        self.last = 0.0

    def __call__(self, fraction: float, stage: str) -> None:
        self.last = max(self.last, min(max(float(fraction), 0.0), 1.0))
        if self.callback is not None:
            self.callback(self.last, stage)


def robust_normalization(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel ``(x - p0.5) / (p99.5 - p0.5)``: outliers must not set the network's scale."""
    flat = array.reshape(array.shape[0], -1).astype(np.float64)
    lo, hi = np.percentile(flat, PERCENTILES, axis=1)
    degenerate = hi - lo <= 1e-12
    hi = np.where(degenerate, flat.max(axis=1), hi)
    lo = np.where(degenerate, flat.min(axis=1), lo)
    scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    norm = (array - lo[:, None, None, None]) / scale[:, None, None, None]
    return norm.astype(np.float32), lo, scale


def _resolve_device(device: str) -> torch.device:
    if device in ("auto", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_cancel(cancel) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


def _plane_stacks(norm: np.ndarray, axis: int) -> list[tuple[int, np.ndarray]]:
    """For each in-plane axis ``b``: the planes containing ``b`` and the through axis, as a stack
    ``(N, C, size_b, size_axis)`` over the remaining axis (axes numbered spatially 0..2)."""
    stacks = []
    for b in (a for a in range(3) if a != axis):
        c = 3 - axis - b
        stacks.append((b, np.moveaxis(norm, (c + 1, 0, b + 1, axis + 1), (0, 1, 2, 3))))
    return stacks


def _batch_planes(net: nn.Module, stack: np.ndarray, device: torch.device) -> int:
    """Planes per inference batch such that the activations stay within the memory budget."""
    features = max((m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)), default=32)
    per_plane = stack.shape[2] * stack.shape[3] * features * 4 * 6  # ~6 live feature maps, fp32
    return int(max(1, min(stack.shape[0], MEMORY_BUDGET_BYTES // max(per_plane, 1))))


@torch.inference_mode()
def _apply(
    net: nn.Module,
    norm: np.ndarray,
    axis: int,
    n_out: int,
    device: torch.device,
    cancel=None,
    progress: Callable[[float], None] | None = None,
    keep_first: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``net`` along ``axis`` on both planes containing it and average (C, I, J, K_out).

    With ``keep_first`` the first plane family's prediction is returned too, so the caller can
    measure where the two families disagree (the uncertainty of the fusion).
    """
    shape = list(norm.shape)
    shape[axis + 1] = n_out
    fused = np.zeros(shape, dtype=np.float32)
    first = None
    stacks = _plane_stacks(norm, axis)
    total = sum(s.shape[0] for _, s in stacks)
    done = 0
    for b, stack in stacks:
        c = 3 - axis - b
        out_view = np.moveaxis(fused, (c + 1, 0, b + 1, axis + 1), (0, 1, 2, 3))
        chunk = _batch_planes(net, stack, device)
        for start in range(0, stack.shape[0], chunk):
            _check_cancel(cancel)
            x = torch.from_numpy(np.ascontiguousarray(stack[start : start + chunk])).to(device)
            y = net(x)[..., :n_out].float().cpu().numpy()
            out_view[start : start + chunk] += 0.5 * y
            done += y.shape[0]
            if progress is not None:
                progress(done / total)
        if keep_first and first is None:
            first = 2.0 * fused  # the first family alone (it was added with weight 0.5)
    return fused, first


def _estimate_inference_seconds(net: nn.Module, norm: np.ndarray, axis: int, device: torch.device) -> float:
    """Time one real inference batch (same shape as in :func:`_apply`, after a warm-up of that
    shape so one-off kernel set-up is excluded) and extrapolate to both plane stacks."""
    stacks = _plane_stacks(norm, axis)
    _, stack = stacks[0]
    chunk = _batch_planes(net, stack, device)
    x = torch.from_numpy(np.ascontiguousarray(stack[:chunk])).to(device)
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        net(x)
        start = time.perf_counter()
        net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    net.train(was_training)
    pixels_timed = x.shape[0] * x.shape[2] * x.shape[3]
    pixels_total = sum(s.shape[0] * s.shape[2] * s.shape[3] for _, s in stacks)
    return seconds * pixels_total / max(pixels_timed, 1)


def self_supervised_sr(
    volume: Volume,
    protocol: str,
    factor: int,
    axis: int,
    time_budget: float = 300.0,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel=None,
    device: str = "cpu",
    max_steps: int | None = None,
    uncertainty_out: dict | None = None,
    **options,
) -> tuple[Volume, dict]:
    """Super-resolve (``protocol="sr"``) or interpolate (``"interp"``) ``volume`` along voxel
    ``axis`` by ``factor``, training on the scan itself for at most ``time_budget`` seconds.

    Returns the output on ``subdivide_grid`` / ``insert_grid`` (interp: acquired slices copied
    exactly) and a report with the network configuration, steps, timings and training curve.
    ``options``: ``network`` ("cnn" or "rdst"), ``batch_size``, ``patch_hr``, ``learning_rate``,
    ``network_options`` (dict passed to the network builder).  Pass a dict as ``uncertainty_out``
    to receive ``"uncertainty_sr"``: where the two plane families disagree, mapped to [0, 1].
    """
    started = time.perf_counter()
    notify = _Progress(progress)
    unknown = set(options) - set(DEFAULTS) - {"network_options"}
    if unknown:
        raise TypeError(f"unknown self-SR option(s): {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS}}
    check_choice(protocol, THROUGH_PLANE_PROTOCOLS, "self-supervised protocol", volume.source)
    factor, axis = check_factor(factor, volume.source), check_axis(axis, volume.source)
    grid = output_grid(volume.grid, protocol, factor, axis)
    n_lr = volume.shape[axis]
    if protocol == "interp" and n_lr < 2:
        raise InputError(volume.source, "slice interpolation needs at least two slices")
    inplane = [volume.shape[a] for a in range(3) if a != axis]
    if min(inplane) < 2 * factor:
        raise InputError(volume.source, f"in-plane size {inplane} is too small to learn a x{factor} model from")
    if not np.all(np.isfinite(volume.array)):
        raise InputError(volume.source, "the image contains NaN or infinite values")
    if time_budget <= 0:
        raise InputError(None, "time_budget must be positive")
    torch_device = _resolve_device(device)
    notify(0.0, "self-SR: preparing training data")
    _check_cancel(cancel)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm, lo, scale = robust_normalization(volume.array)
    planes = np.moveaxis(norm, axis + 1, 0)  # (S, C, P, Q): the acquired high-resolution slices
    sampler = InplanePatchSampler(planes, protocol, factor, patch_hr=int(cfg["patch_hr"]), rng=rng)
    net_options = options.get("network_options", {})
    net, net_cfg = build_network(cfg["network"], volume.channels, factor, protocol, **net_options)
    net = net.to(torch_device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["learning_rate"])
    loss_fn = nn.L1Loss()

    estimate = _estimate_inference_seconds(net, norm, axis, torch_device)
    prep_seconds = time.perf_counter() - started
    train_budget = max(0.0, time_budget - prep_seconds - INFERENCE_SAFETY * estimate)
    notify(TRAIN_FRACTION[0], "self-SR: training")
    _check_cancel(cancel)

    net.train()
    curve: list[dict] = []
    window: list[float] = []
    log_every = 10
    step = 0
    train_start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - train_start
        done_time = elapsed / train_budget if train_budget > 0 else 1.0
        done_steps = step / max_steps if max_steps is not None else 0.0
        if done_time >= 1.0 or done_steps >= 1.0:
            break
        _check_cancel(cancel)
        lr_value = cosine_lr(cfg["learning_rate"], done_steps if max_steps is not None else done_time)
        for group in optimizer.param_groups:
            group["lr"] = lr_value
        lr_patch, hr_patch = sampler.sample(int(cfg["batch_size"]))
        lr_patch, hr_patch = lr_patch.to(torch_device), hr_patch.to(torch_device)
        prediction = net(lr_patch)[..., : hr_patch.shape[-1]]
        loss = loss_fn(prediction, hr_patch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window.append(float(loss.detach()))
        if step % log_every == 0:
            curve.append({"step": step, "seconds": round(time.perf_counter() - train_start, 3),
                          "l1": round(float(np.mean(window)), 6), "lr": round(lr_value, 8)})
            window = []
        fraction = max(done_time, done_steps)
        notify(TRAIN_FRACTION[0] + (TRAIN_FRACTION[1] - TRAIN_FRACTION[0]) * fraction, "self-SR: training")
    if window:
        curve.append({"step": step, "seconds": round(time.perf_counter() - train_start, 3),
                      "l1": round(float(np.mean(window)), 6), "lr": round(lr_value, 8)})
    train_seconds = time.perf_counter() - train_start
    if len(curve) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(curve) - 1, CURVE_POINTS).round().astype(int))
        curve = [curve[i] for i in keep]

    notify(TRAIN_FRACTION[1], "self-SR: applying the network")
    net.eval()
    infer_start = time.perf_counter()
    n_out = grid.size[axis]
    span = 1.0 - TRAIN_FRACTION[1]
    fused, first = _apply(net, norm, axis, n_out, torch_device, cancel,
                          lambda f: notify(TRAIN_FRACTION[1] + 0.95 * span * f, "self-SR: applying the network"),
                          keep_first=uncertainty_out is not None)
    out = fused * scale[:, None, None, None].astype(np.float32) + lo[:, None, None, None].astype(np.float32)
    out = out.astype(np.float32)
    if protocol == "interp":  # the acquired slices are data, not predictions
        index = [slice(None)] * 4
        index[axis + 1] = slice(0, None, factor)
        out[tuple(index)] = volume.array.astype(np.float32)
    if uncertainty_out is not None:
        # The two plane families are independent estimates: their spread (|a - b| / 2 in normalised
        # units, 1 = the robust intensity range) is mapped to [0, 1] like any sample spread.
        spread = np.abs(first - fused).max(axis=0)
        unit = (spread / (spread + PLANE_SPREAD_SCALE)).astype(np.float32)
        if protocol == "interp":
            index = [slice(None)] * 3
            index[axis] = slice(0, None, factor)
            unit[tuple(index)] = 0.0  # acquired slices are data
        uncertainty_out["uncertainty_sr"] = Volume.from_grid(unit[None], grid, source=volume.source)
    infer_seconds = time.perf_counter() - infer_start
    _check_cancel(cancel)
    notify(1.0, "self-SR: done")

    report = {
        "method": "self-supervised SR (SMORE principle): in-plane patches degraded with the through-plane protocol",
        "protocol": protocol,
        "factor": factor,
        "axis": axis,
        "seed": seed,
        "device": str(torch_device),
        "network": net_cfg,
        "training": {
            "steps": step,
            "max_steps": max_steps,
            "batch_size": int(cfg["batch_size"]),
            "patch_lr": [sampler.height, sampler.m],
            "patch_hr": [sampler.height, sampler.hr_width],
            "loss": "L1",
            "optimizer": "Adam",
            "schedule": "linear warm-up 2 %, cosine decay to 2 % of the initial rate",
            "learning_rate": cfg["learning_rate"],
            "augmentation": "both in-plane axes degraded, all R block phases, random flips of both axes",
            "final_l1": curve[-1]["l1"] if curve else None,
            "curve": curve,
        },
        "normalization": {"percentiles": list(PERCENTILES), "low": lo.tolist(), "scale": scale.tolist()},
        "fusion": "mean of the two planes containing the through-plane axis",
        "time_budget_s": float(time_budget),
        "timings_s": {
            "preparation": round(prep_seconds, 3),
            "inference_estimate": round(estimate, 3),
            "training": round(train_seconds, 3),
            "inference": round(infer_seconds, 3),
            "total": round(time.perf_counter() - started, 3),
        },
    }
    return volume.with_grid(out, grid), report


__all__ = ["CancelledError", "robust_normalization", "self_supervised_sr"]
