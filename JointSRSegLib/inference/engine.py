"""Model packages over whole volumes: the path every non-baseline ``predict`` call takes.

Steps: resolve and verify the package, check it fits the request, normalise intensities as the
package says, move the through-plane axis last (the model frame), run the network (3D sliding
window or 2D slice-wise), map intensities back, build label maps and uncertainty maps, and put
every output on the exact protocol grid of the input.  A CUDA out-of-memory error is retried with
smaller windows and batches, then on the CPU; the report records what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..errors import InputError
from ..geometry import output_grid, subdivide_grid
from ..normalization import denormalize, normalize
from ..packaging import ModelPackage, check_compatibility, resolve_model
from ..report import StageTimer
from ..uncertainty import (
    aleatoric_to_unit,
    enable_mc_dropout,
    flip_tta_transforms,
    mutual_information,
    predictive_entropy,
    sample_variance_map,
    summarize,
)
from ..volume import Grid, Volume
from .devices import describe_device, is_out_of_memory, select_device
from .slicewise import _probabilities, inplane_sr, pairwise_interpolation, smore_sr
from .sliding import sliding_window_predict

log = logging.getLogger(__name__)
DEFAULT_ROI = (64, 64, 64)
DEFAULT_OVERLAP = 0.25
UNCERTAINTY_METHODS = ("auto", "tta", "mc_dropout")


def _sampled_forward(
    package, net, frame, factor, device, roi, batch, notify, token, method: str, samples: int, wanted: frozenset
) -> dict:
    """One forward (``auto``), or several -- flips of the in-plane axes (``tta``) or dropout masks
    (``mc_dropout``) -- whose mean is the prediction and whose spread is the uncertainty."""
    if method == "auto":
        return _forward(package, net, frame, factor, device, roi, batch, notify, token, wanted)
    runs = []
    if method == "tta":
        for flip, unflip in flip_tta_transforms(3, axes=(0, 1)):
            heads = _forward(package, net, flip(frame), factor, device, roi, batch, notify, token, wanted)
            runs.append({k: unflip(v) for k, v in heads.items()})
    else:
        with enable_mc_dropout(net):
            runs = [
                _forward(package, net, frame, factor, device, roi, batch, notify, token, wanted) for _ in range(samples)
            ]
    merged = {k: torch.stack([r[k] for r in runs]).mean(0) for k in runs[0]}
    image_key = "interp" if "interp" in runs[0] else "sr"
    if image_key in runs[0]:
        stacked = torch.stack([r[image_key] for r in runs])
        merged["image_spread"] = torch.as_tensor(sample_variance_map(stacked.numpy(), axis=0))
    if "seg_probs" in runs[0]:
        merged["seg_mutual_information"] = torch.as_tensor(
            mutual_information(torch.stack([r["seg_probs"] for r in runs]).numpy(), sample_axis=0, class_axis=1)
        )
    return merged


def run_model_package(
    volume: Volume,
    model,
    tasks: tuple[str, ...],
    factor: int,
    axis: int,
    device: str,
    uncertainty: bool,
    notify: Callable[[float, str], None],
    token,
    timer: StageTimer,
    **options,
) -> tuple[dict[str, Volume], dict]:
    """Run a model package (id or path) or ``"self"``; returns outputs by name and a model report."""
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    if str(model) == "self":
        return _run_self_supervised(volume, tasks, factor, axis, device, uncertainty, notify, token, timer, **options)
    with timer.stage("preparing"):
        notify(0.02, "preparing")
        package = resolve_model(model)
        if isinstance(package, str):  # a baseline reached here only through a programming error
            raise InputError(model, "is a baseline; call predict() with it directly")
        protocol_tasks = [t for t in tasks if t in ("sr", "interp")]
        protocol = protocol_tasks[0] if protocol_tasks else None
        if len(protocol_tasks) > 1:
            raise InputError(package.path, "a model serves one protocol; ask for sr or interp, not both")
        check_compatibility(
            package, volume.channels, tasks, factor, protocol if package.protocol != "inplane" else None
        )
        torch_device = select_device(device)
        net = package.build_model(torch_device)
        net.eval()
    token.raise_if_cancelled()
    normalized, params = normalize(volume.array.astype(np.float32), package.intensity_normalization)
    model_frame = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalized, axis + 1, -1)))
    attempts, heads = [], None
    method = str(options.get("uncertainty_method", "auto"))
    samples = int(options.get("samples", 4))
    if method not in UNCERTAINTY_METHODS:
        raise InputError(None, f"unknown uncertainty method {method!r}; choose from {', '.join(UNCERTAINTY_METHODS)}")
    roi = tuple(options.get("roi_size") or package.metadata.get("inference", {}).get("roi_size", DEFAULT_ROI))
    batch = int(options.get("batch_size") or 4)
    # The model's own uncertainty heads are needed only when no sampling method replaces them.
    own = uncertainty and method == "auto"
    wanted = frozenset(
        (["sr"] if protocol else [])
        + (["seg"] if "seg" in tasks else [])
        + (["sr_log_var"] if uncertainty else [])
        + (["sr_uncertainty"] if own and "seg" in tasks and "seg_uasr" in package.metadata["uncertainty"] else [])
    )
    if hasattr(net, "select_heads"):  # e.g. REHRSeg runs its self-SR teacher only for the UASR map
        net.select_heads(wanted)
    with timer.stage("running"):
        while heads is None:
            try:
                heads = _sampled_forward(
                    package,
                    net,
                    model_frame,
                    factor,
                    torch_device,
                    roi,
                    batch,
                    notify,
                    token,
                    method if uncertainty else "auto",
                    samples,
                    wanted,
                )
            except Exception as error:  # only out-of-memory is retried
                if not is_out_of_memory(error):
                    raise
                attempts.append(
                    {"device": str(torch_device), "roi_size": list(roi), "batch": batch, "error": "out of memory"}
                )
                torch.cuda.empty_cache()
                if torch_device.type == "cuda" and min(roi) > 16:
                    roi, batch = tuple(max(16, r // 2) for r in roi), max(1, batch // 2)
                else:
                    torch_device = torch.device("cpu")
                    net = net.to(torch_device)
                log.warning("out of memory; retrying with roi %s, batch %s on %s", roi, batch, torch_device)
    token.raise_if_cancelled()
    with timer.stage("importing results"):
        notify(0.95, "importing results")
        outputs, summaries = _to_volumes(package, volume, heads, params, tasks, protocol, factor, axis, uncertainty)
    report = {
        "id": package.id,
        "version": package.version,
        "source": str(package.path),
        "architecture": package.metadata["architecture"],
        "weights_sha256": package.metadata["weights_sha256"],
        "device": describe_device(torch_device),
        "amp": torch_device.type == "cuda",
        "roi_size": list(roi),
        "retries": attempts,
        "normalization": params,
        "uncertainty": summaries,
        "uncertainty_method": method if uncertainty else None,
        "uncertainty_kinds": _uncertainty_kinds(heads, outputs),
    }
    return outputs, report


def _forward(
    package: ModelPackage, net, frame: torch.Tensor, factor: int, device, roi, batch, notify, token, wanted: frozenset
) -> dict:
    """Network heads in the model frame: tensors (C, X, Y, Z') without the batch axis."""
    from ..models import ARCHITECTURES

    spec = ARCHITECTURES[package.metadata["architecture"]]

    def on_step(done: int, total: int) -> None:
        token.raise_if_cancelled()
        notify(0.05 + 0.9 * done / max(total, 1), f"running ({done}/{total})")

    if spec.dims == 3:
        with torch.inference_mode():  # a tiny forward tells which heads this configuration has
            sample = net(
                frame[None, :, : min(8, frame.shape[1]), : min(8, frame.shape[2]), : min(8, frame.shape[3])].to(device)
            )
        # Stitch only the heads the request needs: each is a full-resolution buffer on the CPU.
        keys = [k for k in ("sr", "seg", "sr_log_var", "sr_uncertainty") if k in sample and k in wanted]
        out = {
            k: v[0]
            for k, v in sliding_window_predict(net, frame[None], roi, keys, device, DEFAULT_OVERLAP, 1, on_step).items()
        }
        if "seg" in out:
            out["seg_probs"] = _probabilities(out.pop("seg")[None, None])[0, 0]
        return out
    if "interp" in spec.tasks:
        image, probs = pairwise_interpolation(net, frame, factor, device, batch, on_step)
        return {"interp": image, **({"seg_probs": probs} if probs is not None else {})}
    if package.protocol == "inplane":
        return {"sr": inplane_sr(net, frame, device, batch, on_step)}
    return {"sr": smore_sr(net, frame, device, batch, on_step)}


def _from_model_frame(array: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(array, -1, axis + 1))


def _to_volumes(package, volume: Volume, heads: dict, params, tasks, protocol, factor, axis, want_uncertainty):
    outputs: dict[str, Volume] = {}
    summaries: dict[str, dict] = {}
    image_key = "interp" if "interp" in heads else "sr"
    image_protocol = "interp" if image_key == "interp" else "sr"
    grid = _output_grid(volume, package, image_protocol, factor, axis)
    if image_key in heads and (protocol is not None):
        array = denormalize(_from_model_frame(heads[image_key].numpy(), axis), params)
        outputs[protocol] = Volume.from_grid(_match_dtype(array, volume.array.dtype), grid, source=volume.source)
        unit = None
        if want_uncertainty and "image_spread" in heads:  # TTA / MC-dropout samples
            unit = _from_model_frame(heads["image_spread"].numpy(), axis).max(axis=0)  # worst channel
        elif want_uncertainty and "sr_log_var" in heads:  # the model's own heteroscedastic head
            unit = aleatoric_to_unit(_from_model_frame(heads["sr_log_var"].numpy(), axis)[0])
        if unit is not None:
            outputs["uncertainty_sr"] = Volume.from_grid(  # image uncertainty of sr and interp alike
                unit[None].astype(np.float32), grid, source=volume.source
            )
            summaries["uncertainty_sr"] = summarize(unit)
    probs = heads.get("seg_probs")  # (K, X, Y, Z) class probabilities
    if "seg" in tasks and probs is not None:
        probs_np = _from_model_frame(probs.numpy(), axis)
        seg_grid = grid if probs_np.shape[1:] == tuple(grid.size) else subdivide_grid(volume.grid, factor, axis)
        labels = _labels_from_probabilities(probs_np, package.labels)
        outputs["seg"] = Volume.from_grid(labels[None], seg_grid, source=volume.source)
        if want_uncertainty:
            if "seg_mutual_information" in heads:
                unit = _from_model_frame(heads["seg_mutual_information"].numpy()[None], axis)[0]
            elif "sr_uncertainty" in heads and heads["sr_uncertainty"].shape[1:] == probs.shape[1:]:
                # REHRSeg's UASR map U (Eq. 5): a sigmoid, blended by convex window weights -> [0, 1]
                unit = np.clip(_from_model_frame(heads["sr_uncertainty"].numpy(), axis)[0], 0.0, 1.0)
            else:
                unit = predictive_entropy(probs_np, axis=0)
            unit = np.asarray(unit, dtype=np.float32)
            outputs["uncertainty_seg"] = Volume.from_grid(unit[None], seg_grid, source=volume.source)
            summaries["uncertainty_seg"] = summarize(unit)
    return outputs, summaries


def _uncertainty_kinds(heads: dict, outputs: dict) -> dict[str, str]:
    """Which kind each uncertainty output is (the kinds of docs/model-packages.md, ``uncertainty``)."""
    kinds = {}
    if "uncertainty_sr" in outputs:
        kinds["uncertainty_sr"] = "sample_variance" if "image_spread" in heads else "aleatoric"
    if "uncertainty_seg" in outputs:
        kinds["uncertainty_seg"] = (
            "mutual_information"
            if "seg_mutual_information" in heads
            else "uasr"
            if "sr_uncertainty" in heads
            else "entropy"
        )
    return kinds


def _output_grid(volume: Volume, package: ModelPackage, protocol: str, factor: int, axis: int) -> Grid:
    if package.protocol == "inplane":
        grid = volume.grid
        for a in range(3):
            if a != axis:
                grid = subdivide_grid(grid, factor, a)
        return grid
    return output_grid(volume.grid, protocol, factor, axis)


def _labels_from_probabilities(probs: np.ndarray, labels: list[dict]) -> np.ndarray:
    """Arg-max class index -> the package's label value (class i is the i-th listed label)."""
    index = np.argmax(probs, axis=0)
    lut = np.zeros(probs.shape[0], dtype=np.int64)
    for i, entry in enumerate(labels[: probs.shape[0] - 1], start=1):
        lut[i] = int(entry["value"])
    dtype = np.uint8 if lut.max(initial=0) < 256 else np.uint16
    return lut[index].astype(dtype)


def _match_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer inputs get integer outputs of the same type (rounded, clipped to its range)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return array.astype(np.float32)


def _run_self_supervised(volume, tasks, factor, axis, device, uncertainty, notify, token, timer, **options):
    from ..selfsr import self_supervised_sr

    if "seg" in tasks:
        raise InputError("self", "self-supervised mode does sr and interp only; choose a model with 'seg' to segment")
    outputs, reports, summaries = {}, {}, {}
    with timer.stage("running"):
        for task in tasks:
            extra: dict | None = {} if uncertainty else None
            out, report = self_supervised_sr(
                volume,
                task,
                factor,
                axis,
                time_budget=float(options.get("time_budget", 300.0)),
                seed=int(options.get("seed", 0)),
                progress=notify,
                cancel=token,
                device=str(select_device(device)),
                max_steps=options.get("max_steps"),
                uncertainty_out=extra,
            )
            outputs[task] = out
            reports[task] = report
            if extra:
                outputs["uncertainty_sr"] = extra["uncertainty_sr"]
                summaries["uncertainty_sr"] = summarize(extra["uncertainty_sr"].array[0])
    return outputs, {
        "id": "self",
        "source": "self-supervised",
        "weights_sha256": None,
        "device": str(select_device(device)),
        "uncertainty": summaries,
        "uncertainty_method": "disagreement of the two plane families" if uncertainty else None,
        "training": reports,
    }
