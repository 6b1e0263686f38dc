"""Self-supervised through-plane SR / slice interpolation of one scan (``--model self``).

No weights, no training data: following SMORE (Zhao et al.), a small 2D network is trained on the
scan's own high-resolution in-plane slices, degraded along one in-plane axis exactly as the
through-plane axis was acquired (see :mod:`JointSRSegLib.selfsr_data`), and then applied along
the through-plane axis on the two planes that contain it; the two estimates are averaged.

``start="prior"`` (``--model adapt``) starts from the shipped prior of :mod:`JointSRSegLib.selfsr_prior`
(the same network pre-trained on many heads) instead of the cubic interpolation, and fine-tunes it at a
lower rate: the scan's own slices then only have to teach what is particular to this scan.

Budget: everything (preparation, training, inference) fits ``time_budget`` seconds (default
:data:`DEFAULT_TIME_BUDGET`: 150 s from scratch, 60 s from the prior); the inference
time is measured on real planes before training starts and reserved (and scaled up when the held-back
scoring shows the machine slowed down since, as a shared CPU does).  The budget is a ceiling: a
fixed set of held-back in-plane patches is scored every ``validate_every`` steps, training stops
when that loss has not improved for ``patience`` checks, and the best-scoring weights are applied
(so training can never make the result worse than its start on the scan's own validation patches).
The held-back patches come from the same few slices as the training patches, so on a small volume
their loss keeps falling while the network memorises them: training also stops after
:data:`MAX_EPOCHS` passes over the acquired in-plane pixels (a 256³ head never reaches it inside the
budget; a 24×48×8 crop does after a few dozen steps instead of training for minutes).
``max_steps`` caps the number of optimiser steps; when it is given the learning-rate schedule
follows the step count, so results are bit-reproducible for a fixed seed (as long as the time budget
is not hit first).  The network runs only on the head's bounding box (:func:`foreground.head_mask`
plus its receptive field); outside it the output is the cubic interpolation of the (empty) background.
See docs/selfsr.md for the method, the deviations from SMORE and the measured figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from .errors import CancelledError, InputError
from .foreground import bounding_box, head_mask
from .geometry import output_grid
from .selfsr_data import InplanePatchSampler
from .selfsr_net import build_network, cosine_lr, cubic_matrix, fast_inference_dtype
from .vocabulary import THROUGH_PLANE_PROTOCOLS, check_axis, check_choice, check_factor
from .volume import Volume

ProgressCallback = Callable[[float, str], None]
PERCENTILES = (0.5, 99.5)
TRAIN_FRACTION = (0.05, 0.85)  # progress range spent in training; inference takes the rest
INFERENCE_SAFETY = 1.5  # reserve this multiple of the measured inference time
MEMORY_BUDGET_BYTES = 256 * 2**20  # activations of one inference batch
CURVE_POINTS = 200
DEFAULTS = {"batch_size": 16, "patch_hr": 48, "learning_rate": 1e-3, "network": "cnn",
            "validate_every": 25, "patience": 4, "precision": "auto"}
PRECISIONS = ("auto", "float32")  # auto: bfloat16 residual trunk at inference where the hardware has it
PRIOR_LEARNING_RATE = 2e-4  # fine-tuning rate of a prior start (measured: docs/selfsr.md)
START_MODES = ("scratch", "prior")
VALIDATION_PATCHES = 64
MIN_IMPROVEMENT = 0.002  # relative: a validation loss this much lower counts as progress
DEFAULT_TIME_BUDGET = {"scratch": 150.0, "prior": 60.0}  # seconds, by start (docs/selfsr.md: measured)
MAX_SLOWDOWN = 4.0  # the inference reserve grows at most this much when the machine slows down mid-run
MAX_EPOCHS = 100  # passes over the acquired in-plane pixels: more only memorises a small volume
FIELD_MARGIN = 16  # LR voxels: the CNN's receptive-field radius (15) rounded up, kept around the head box


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


def snapshot(net: nn.Module, step: int, l1: float) -> dict:
    """The weights at ``step`` with their held-back loss: what is applied if nothing later scores better."""
    return {"step": step, "l1": l1, "state": {k: v.detach().clone() for k, v in net.state_dict().items()}}


def validation_l1(net: nn.Module, patches, device: torch.device) -> float:
    """Mean L1 over the held-back patches (the early-stopping and start-choice criterion)."""
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        total = sum(float((net(lr.to(device))[..., : hr.shape[-1]] - hr.to(device)).abs().mean()) for lr, hr in patches)
    net.train(was_training)
    return total / len(patches)


def network_box(volume: Volume) -> tuple[slice, slice, slice]:
    """Voxel box of ``volume`` the network runs on: the head mask's bounding box grown by the
    network's receptive field (:data:`FIELD_MARGIN`), so the network never reads outside what it
    would read on the whole volume except for empty background."""
    box = bounding_box(head_mask(volume), minimum=(2, 2, 2))
    return tuple(slice(max(0, b.start - FIELD_MARGIN), min(n, b.stop + FIELD_MARGIN))
                 for b, n in zip(box, volume.shape))


def cubic_along(norm: np.ndarray, axis: int, protocol: str, factor: int, n_out: int) -> np.ndarray:
    """The network's fixed cubic base on the whole ``(C, I, J, K)`` volume along ``axis`` (what the
    network adds its residual to; used outside the network box)."""
    m = cubic_matrix(norm.shape[axis + 1], protocol, factor)[:n_out].astype(np.float32)
    moved = np.moveaxis(norm, axis + 1, -1)
    return np.ascontiguousarray(np.moveaxis(moved @ m.T, -1, axis + 1))


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
    time_budget: float | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    cancel=None,
    device: str = "cpu",
    max_steps: int | None = None,
    uncertainty_out: dict | None = None,
    start: str = "scratch",
    **options,
) -> tuple[Volume, dict]:
    """Super-resolve (``protocol="sr"``) or interpolate (``"interp"``) ``volume`` along voxel
    ``axis`` by ``factor``, training on the scan itself for at most ``time_budget`` seconds
    (None: :data:`DEFAULT_TIME_BUDGET` of the start).

    ``start``: ``"scratch"`` (SMORE: the network starts as cubic interpolation) or ``"prior"`` (the
    shipped prior for this protocol and factor, fine-tuned; :class:`InputError` when none is shipped).
    Returns the output on ``subdivide_grid`` / ``insert_grid`` (interp: acquired slices copied
    exactly) and a report with the network configuration, steps, timings and training curve.
    ``options``: ``network`` ("cnn" or "rdst"; scratch only), ``batch_size``, ``patch_hr``,
    ``learning_rate``, ``validate_every`` / ``patience`` (early stopping; ``patience=0`` turns it
    off), ``precision`` ("auto": the residual trunk in bfloat16 at inference where the hardware computes
    it natively; "float32"), ``network_options`` (dict passed to the network builder).  Pass a dict as
    ``uncertainty_out`` to receive ``"uncertainty_sr"``: where the two plane families disagree,
    mapped to [0, 1].
    """
    started = time.perf_counter()
    notify = _Progress(progress)
    unknown = set(options) - set(DEFAULTS) - {"network_options"}
    if unknown:
        raise TypeError(f"unknown self-SR option(s): {', '.join(sorted(unknown))}")
    check_choice(start, START_MODES, "self-SR start")
    defaults = {**DEFAULTS, "learning_rate": PRIOR_LEARNING_RATE} if start == "prior" else DEFAULTS
    cfg = {**defaults, **{k: v for k, v in options.items() if k in DEFAULTS}}
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
    time_budget = DEFAULT_TIME_BUDGET[start] if time_budget is None else float(time_budget)
    if time_budget <= 0:
        raise InputError(None, "time_budget must be positive")
    check_choice(cfg["precision"], PRECISIONS, "self-SR precision")
    if start == "prior" and (cfg["network"] != "cnn" or options.get("network_options")):
        raise InputError(None, "the adaptation prior is the default 'cnn' network; network options apply to 'self'")
    torch_device = _resolve_device(device)
    notify(0.0, "self-SR: preparing training data")
    _check_cancel(cancel)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm, lo, scale = robust_normalization(volume.array)
    box = network_box(volume)
    if protocol == "interp" and box[axis].stop - box[axis].start < 2:
        box = tuple(slice(0, n) if a == axis else b for a, (b, n) in enumerate(zip(box, volume.shape)))
    inner = np.ascontiguousarray(norm[(slice(None), *box)])
    planes = np.moveaxis(inner, axis + 1, 0)  # (S, C, P, Q): the acquired high-resolution slices in the box
    sampler = InplanePatchSampler(planes, protocol, factor, patch_hr=int(cfg["patch_hr"]), rng=rng)
    sampler.rng = np.random.default_rng(seed + 7919)  # the held-back patches come from their own stream
    held_back = [sampler.sample(VALIDATION_PATCHES // 4) for _ in range(4)]
    sampler.rng = rng
    prior_record = None
    if start == "prior":
        from .selfsr_prior import load_prior

        net, prior_record, net_cfg = load_prior(protocol, factor, volume.channels, source=volume.source)
    else:
        net, net_cfg = build_network(cfg["network"], volume.channels, factor, protocol,
                                     **options.get("network_options", {}))
    net = net.to(torch_device)
    start_choice = None
    if start == "prior":  # the prior must beat cubic interpolation on this scan's own patches, or it is not used
        cubic_net, _ = build_network("cnn", volume.channels, factor, protocol)
        prior_l1 = validation_l1(net, held_back, torch_device)
        cubic_l1 = validation_l1(cubic_net.to(torch_device), held_back, torch_device)
        start_choice = {"prior_l1": round(prior_l1, 6), "cubic_l1": round(cubic_l1, 6),
                        "used": "prior" if prior_l1 <= cubic_l1 else "cubic"}
        if prior_l1 > cubic_l1:
            net, cfg["learning_rate"] = cubic_net.to(torch_device), DEFAULTS["learning_rate"]
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["learning_rate"])
    loss_fn = nn.L1Loss()
    # Inference may run the residual trunk in bfloat16 (training and validation stay float32).
    inference_dtype = fast_inference_dtype(torch_device) if cfg["precision"] == "auto" else None
    if not hasattr(net, "trunk_dtype"):
        inference_dtype = None
    net.trunk_dtype = inference_dtype
    estimate = _estimate_inference_seconds(net, inner, axis, torch_device)
    net.trunk_dtype = None
    prep_seconds = time.perf_counter() - started
    train_budget = max(0.0, time_budget - prep_seconds - INFERENCE_SAFETY * estimate)
    pixels_per_step = int(cfg["batch_size"]) * int(np.prod(held_back[0][1].shape[-2:]))
    epoch_cap = max(1, int(np.ceil(MAX_EPOCHS * planes.shape[0] * planes.shape[2] * planes.shape[3] / pixels_per_step)))
    notify(TRAIN_FRACTION[0], "self-SR: training")
    _check_cancel(cancel)

    net.train()
    curve: list[dict] = []
    window: list[float] = []
    log_every = 10
    step = 0
    validate_every, patience = max(1, int(cfg["validate_every"])), int(cfg["patience"])
    scored = time.perf_counter()
    best_l1 = validation_l1(net, held_back, torch_device)
    validation_seconds = time.perf_counter() - scored  # the machine's speed now: the reserve is rescaled by it
    slowdown = 1.0
    best = snapshot(net, 0, best_l1)
    validation = [{"step": 0, "l1": round(best_l1, 6)}]
    since_best, stopped_early = 0, False
    lr_value = cfg["learning_rate"]
    train_start = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - train_start
        done_time = elapsed / train_budget if train_budget > 0 else 1.0
        done_steps = (step / max_steps if max_steps > 0 else 1.0) if max_steps is not None else 0.0
        if done_time >= 1.0 or done_steps >= 1.0 or step >= epoch_cap:
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
        if step % validate_every == 0:
            scored = time.perf_counter()
            l1 = validation_l1(net, held_back, torch_device)
            # A shared machine that slowed down since the inference estimate would overrun the budget:
            # reserve inference time in proportion (never less than measured at the start).
            slowdown = min(MAX_SLOWDOWN, max(1.0, (time.perf_counter() - scored) / max(validation_seconds, 1e-6)))
            train_budget = max(0.0, time_budget - prep_seconds - INFERENCE_SAFETY * estimate * slowdown)
            validation.append({"step": step, "l1": round(l1, 6)})
            if l1 < best["l1"] * (1.0 - MIN_IMPROVEMENT):
                best = snapshot(net, step, l1)
                since_best = 0
            else:
                since_best += 1
                if patience > 0 and since_best >= patience:
                    stopped_early = True
                    break
        fraction = max(done_time, done_steps)
        notify(TRAIN_FRACTION[0] + (TRAIN_FRACTION[1] - TRAIN_FRACTION[0]) * fraction, "self-SR: training")
    if window:
        curve.append({"step": step, "seconds": round(time.perf_counter() - train_start, 3),
                      "l1": round(float(np.mean(window)), 6), "lr": round(lr_value, 8)})
    if step % validate_every:  # score the last weights too: they may be the best
        l1 = validation_l1(net, held_back, torch_device)
        validation.append({"step": step, "l1": round(l1, 6)})
        if l1 < best["l1"]:
            best = snapshot(net, step, l1)
    net.load_state_dict(best["state"])
    train_seconds = time.perf_counter() - train_start
    if len(curve) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(curve) - 1, CURVE_POINTS).round().astype(int))
        curve = [curve[i] for i in keep]

    notify(TRAIN_FRACTION[1], "self-SR: applying the network")
    net.eval()
    net.trunk_dtype = inference_dtype
    infer_start = time.perf_counter()
    n_out = grid.size[axis]
    span = 1.0 - TRAIN_FRACTION[1]
    a0, a1 = box[axis].start, box[axis].stop
    inner_out = (a1 - a0) * factor if protocol == "sr" else (a1 - a0 - 1) * factor + 1
    fused_inner, first_inner = _apply(net, inner, axis, inner_out, torch_device, cancel,
                                      lambda f: notify(TRAIN_FRACTION[1] + 0.95 * span * f,
                                                       "self-SR: applying the network"),
                                      keep_first=uncertainty_out is not None)
    fused = cubic_along(norm, axis, protocol, factor, n_out)
    out_box = [slice(None)] + [slice(a0 * factor, a0 * factor + inner_out) if a == axis else b
                               for a, b in enumerate(box)]
    fused[tuple(out_box)] = fused_inner
    out = fused * scale[:, None, None, None].astype(np.float32) + lo[:, None, None, None].astype(np.float32)
    # No output below the scan's own minimum: that is its background (0 in a magnitude MR, air in a CT),
    # and no tissue is darker than no signal; the network's undershoot next to bright edges (a real 6.5 mm
    # T1: down to -712 on a 0-3057 scan) is an artefact.
    floor = volume.array.reshape(volume.channels, -1).min(axis=1).astype(np.float32)[:, None, None, None]
    clamped = int(np.count_nonzero(out < floor))
    out = np.maximum(out, floor).astype(np.float32)
    if protocol == "interp":  # the acquired slices are data, not predictions
        index = [slice(None)] * 4
        index[axis + 1] = slice(0, None, factor)
        out[tuple(index)] = volume.array.astype(np.float32)
    uncertainty_seconds = 0.0
    if uncertainty_out is not None:
        map_start = time.perf_counter()
        uncertainty_out.update(_calibrated_map(fused, norm, first_inner, fused_inner, out_box, grid, protocol, factor,
                                               axis, start, volume.source, signals="signals" in uncertainty_out))
        uncertainty_seconds = time.perf_counter() - map_start
    infer_seconds = time.perf_counter() - infer_start - uncertainty_seconds
    _check_cancel(cancel)
    notify(1.0, "self-SR: done")

    report = {
        "method": ("adaptation of the shipped self-SR prior to this scan" if start == "prior" else
                   "self-supervised SR (SMORE principle): in-plane patches degraded with the through-plane protocol"),
        "protocol": protocol,
        "factor": factor,
        "axis": axis,
        "seed": seed,
        "device": str(torch_device),
        "start": start,
        "network": net_cfg,
        "network_box": [[b.start, b.stop] for b in box],
        "training": {
            "steps": step,
            "max_steps": max_steps,
            "epoch_cap": epoch_cap,  # MAX_EPOCHS passes over the acquired in-plane pixels
            "slowdown_at_last_check": round(slowdown, 2),  # the inference reserve was scaled by it
            "stopped_by": ("epoch cap" if step >= epoch_cap else "early stop" if stopped_early
                           else "max_steps" if max_steps is not None and step >= max_steps else "time budget"),
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
            "validation": {"patches": VALIDATION_PATCHES, "every": validate_every, "patience": patience,
                           "best_step": best["step"], "best_l1": round(best["l1"], 6),
                           "stopped_early": stopped_early, "curve": validation[-CURVE_POINTS:]},
        },
        "normalization": {"percentiles": list(PERCENTILES), "low": lo.tolist(), "scale": scale.tolist()},
        "fusion": "mean of the two planes containing the through-plane axis",
        "clamped_below_input_minimum": clamped,  # output voxels raised to the input's minimum
        "inference_precision": "float32" if inference_dtype is None else f"{str(inference_dtype)[6:]} residual trunk",
        "time_budget_s": float(time_budget),
        "timings_s": {
            "preparation": round(prep_seconds, 3),
            "inference_estimate": round(estimate, 3),
            "training": round(train_seconds, 3),
            "inference": round(infer_seconds, 3),
            **({"uncertainty": round(uncertainty_seconds, 3)} if uncertainty_out is not None else {}),
            "total": round(time.perf_counter() - started, 3),
        },
    }
    if prior_record is not None:
        report["prior"] = {"name": prior_record.get("name"), "weights_sha256": prior_record.get("weights_sha256"),
                           "trained_steps": prior_record.get("training", {}).get("exported_step"),
                           "start_check": start_choice}
    return volume.with_grid(out, grid), report


def _calibrated_map(fused, norm, first_inner, fused_inner, out_box, grid, protocol, factor, axis, start, source,
                    signals: bool = False) -> dict:
    """``uncertainty_sr``: the expected |error| as a fraction of the robust intensity range
    (:mod:`JointSRSegLib.calibration`), from where the two plane families disagree and the output's own
    gradients; with ``signals`` also the raw signals (``"signals"``) for fitting the calibration.

    The two families are independent estimates: half their difference (normalised units) is the spread;
    outside the network's box both are the same cubic interpolation (spread 0).
    """
    from .calibration import calibration_entry, expected_error, sr_features

    try:
        entry = calibration_entry("adapt" if start == "prior" else "self")
    except InputError:
        if not signals:  # fitting the calibration needs the signals only
            raise
        entry = None
    spread = np.zeros(tuple(grid.size), dtype=np.float32)
    spread[tuple(out_box[1:])] = np.abs(first_inner - fused_inner).max(axis=0)
    raw = sr_features(fused[0], spread, norm[0], axis, factor, protocol)
    out = {}
    if entry is not None:
        unit = expected_error(entry, raw)
        if protocol == "interp":
            index = [slice(None)] * 3
            index[axis] = slice(0, None, factor)
            unit[tuple(index)] = 0.0  # acquired slices are data
        out["uncertainty_sr"] = Volume.from_grid(unit[None], grid, source=source)
    if signals:
        out["signals"] = raw
    return out


__all__ = ["START_MODES", "CancelledError", "cubic_along", "network_box", "robust_normalization",
           "self_supervised_sr"]
