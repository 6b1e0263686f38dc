"""Model packages over whole volumes: the path every non-baseline ``predict`` call takes.

Steps: resolve and verify the package, check it fits the request, normalise intensities as the
package says, permute/flip the voxel axes to the orientation the package was trained in
(``inference.orientation``; exact, :mod:`JointSRSegLib.orientation`), move the through-plane axis
last (the model frame), crop to the head mask (:mod:`JointSRSegLib.foreground`) and run the network
there (3D sliding window skipping empty windows, or 2D slice-wise), map intensities back, undo the
reorientation, build label maps and uncertainty maps, put every output on the exact protocol grid of
the input, and give the classical answer outside the head: B-spline for images, background for
labels, zero uncertainty.  A CUDA out-of-memory error is retried with
smaller windows and batches, then on the CPU; the report records what happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from ..atropos import check_brain_mr
from ..baselines import resample_to_grid
from ..calibration import calibrated_summary
from ..errors import InputError
from ..foreground import bounding_box, head_mask, mask_on_grid
from ..geometry import orientation_code, output_grid, subdivide_grid, through_plane_axis
from ..normalization import denormalize, normalize
from ..orientation import Reorientation
from ..package_schema import segments_brain_tissue, uncertainty_methods
from ..packaging import ModelPackage, check_compatibility, resolve_model
from ..report import StageTimer
from ..uncertainty import (
    active_dropout_layers,
    aleatoric_to_unit,
    enable_mc_dropout,
    flip_tta_transforms,
    mutual_information,
    predictive_entropy,
    sample_variance_map,
    summarize,
)
from ..vocabulary import (
    ADAPTATION,
    AUTO,
    IMAGE_TASKS,
    RAW_UNCERTAINTY_UNIT,
    SELF_SUPERVISED,
    UASR,
    check_method_applies,
    check_uncertainty_method,
)
from ..volume import Grid, Volume
from .devices import describe_device, is_out_of_memory, select_device
from .slicewise import _probabilities, inplane_sr, pairwise_interpolation, smore_sr
from .sliding import sliding_window_predict

log = logging.getLogger(__name__)
DEFAULT_ROI = (64, 64, 64)
DEFAULT_OVERLAP = 0.25
FOREGROUND_OPTION = "foreground_only"  # options[...] = False runs the network on the whole field of view
# model names trained on the scan itself -> how self_supervised_sr starts (docs/selfsr.md)
SELF_SUPERVISED_MODES = {SELF_SUPERVISED: "scratch", ADAPTATION: "prior"}


def _sampled_forward(
    package, net, frame, mask, factor, device, roi, batch, notify, token, method: str, samples: int, wanted: frozenset
) -> dict:
    """One forward (``auto``), or several -- flips of the in-plane axes (``tta``) or dropout masks
    (``mc_dropout``) -- whose mean is the prediction and whose spread is the uncertainty."""
    if method in (AUTO, UASR):
        return _forward_in_mask(package, net, frame, mask, factor, device, roi, batch, notify, token, wanted)
    runs = []
    if method == "tta":
        for flip, unflip in flip_tta_transforms(3, axes=(0, 1)):
            flipped_mask = flip(mask[None])[0]
            heads = _forward_in_mask(
                package, net, flip(frame), flipped_mask, factor, device, roi, batch, notify, token, wanted
            )
            runs.append({k: unflip(v) for k, v in heads.items()})
    else:
        with enable_mc_dropout(net):
            runs = [
                _forward_in_mask(package, net, frame, mask, factor, device, roi, batch, notify, token, wanted)
                for _ in range(samples)
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
    """Run a model package (id or path), ``"self"`` or ``"adapt"``; returns outputs by name and a model report."""
    method = check_uncertainty_method(options.get("uncertainty_method", AUTO))
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    if str(model) in SELF_SUPERVISED_MODES:
        if uncertainty:
            why = "self-supervised SR maps the disagreement of its two plane families"
            check_method_applies(method, str(model), (AUTO,), why)
        return _run_self_supervised(volume, str(model), tasks, factor, axis, device, uncertainty, notify, token, timer,
                                    **options)
    with timer.stage("preparing"):
        notify(0.02, "preparing")
        package = resolve_model(model)
        if isinstance(package, str):  # a baseline reached here only through a programming error
            raise InputError(model, "is a baseline; call predict() with it directly")
        protocol_tasks = [t for t in tasks if t in IMAGE_TASKS]
        protocol = protocol_tasks[0] if protocol_tasks else None
        if len(protocol_tasks) > 1:
            raise InputError(package.path, "a model serves one protocol; ask for sr or interp, not both")
        check_compatibility(
            package, volume.channels, tasks, factor, protocol if package.protocol != "inplane" else None
        )
        if "seg" in tasks and segments_brain_tissue(package.metadata):
            check_brain_mr(volume)  # a CT or an abdomen is refused before the network is built
        if uncertainty and method == UASR:  # model.json decides: before the network is built
            why = "the UASR map is REHRSeg's self-SR teacher's (packages listing seg_uasr)"
            check_method_applies(method, package.id, uncertainty_methods(package.metadata), why)
            if "seg" not in tasks:
                raise InputError(package.path, "the UASR map is a segmentation uncertainty; ask for the seg task")
        torch_device = select_device(device)
        net = package.build_model(torch_device)
        net.eval()
        if uncertainty and method == "mc_dropout" and not active_dropout_layers(net):
            others = tuple(m for m in uncertainty_methods(package.metadata) if m != method)
            why = "its network has no active dropout layer, so every sample would be the same"
            check_method_applies(method, package.id, others, why)
    token.raise_if_cancelled()
    normalized, params = normalize(volume.array.astype(np.float32), package.intensity_normalization)
    trained_orientation = package.metadata.get("inference", {}).get("orientation")
    # Packages without a recorded orientation run in the input's own voxel order (the identity).
    reorientation = Reorientation.to_code(volume.grid, trained_orientation or orientation_code(volume.direction))
    if axis is None:  # an isotropic [R, R, R] model on a scan without a slice axis: the model frame's last axis
        if package.scale.factor_axis != "all":
            axis = through_plane_axis(volume)  # refuses, naming the file and the spacing
        axis = int(reorientation.perm[2])
    frame_axis = reorientation.frame_axis(axis)
    model_frame = torch.from_numpy(
        np.ascontiguousarray(np.moveaxis(reorientation.apply(normalized), frame_axis + 1, -1))
    )
    foreground_only = options.get(FOREGROUND_OPTION, True) is not False
    mask = head_mask(volume) if foreground_only else np.ones(volume.shape, dtype=bool)
    if not mask.any():  # nothing stands out of the background: run everywhere rather than nowhere
        mask = np.ones(volume.shape, dtype=bool)
    mask_frame = torch.from_numpy(np.ascontiguousarray(np.moveaxis(reorientation.apply(mask), frame_axis, -1)))
    attempts, heads = [], None
    samples = int(options.get("samples", 4))
    roi = tuple(options.get("roi_size") or package.metadata.get("inference", {}).get("roi_size", DEFAULT_ROI))
    batch = int(options.get("batch_size") or 4)
    # REHRSeg's teacher (the UASR map) runs only when that map is asked for by name (method uasr).
    wanted = frozenset(
        (["sr"] if protocol else [])
        + (["seg"] if "seg" in tasks else [])
        + (["sr_log_var"] if uncertainty else [])
        + (["sr_uncertainty"] if uncertainty and method == UASR and "seg" in tasks else [])
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
                    mask_frame,
                    factor,
                    torch_device,
                    roi,
                    batch,
                    notify,
                    token,
                    method if uncertainty else AUTO,
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

        def to_input_order(array: np.ndarray) -> np.ndarray:
            """(C, X, Y, Z') in the model frame -> (C, I, J, K') in the input's voxel order."""
            return reorientation.invert(np.moveaxis(array, -1, frame_axis + 1))

        outputs, summaries = _to_volumes(
            package, volume, heads, params, tasks, protocol, factor, axis, uncertainty, to_input_order, mask
        )
    report = {
        "id": package.id,
        "version": package.version,
        "source": str(package.path),
        "architecture": package.metadata["architecture"],
        "weights_sha256": package.metadata["weights_sha256"],
        "device": describe_device(torch_device),
        "amp": torch_device.type == "cuda",
        "roi_size": list(roi),
        "voxel_orientation": {"input": orientation_code(volume.direction), "model": trained_orientation},
        "foreground": {
            "restricted": foreground_only,
            "fraction_of_input": round(float(mask.mean()), 4),
        },
        "retries": attempts,
        "normalization": params,
        "uncertainty": summaries,
        "uncertainty_method": method if uncertainty else None,
        "uncertainty_kinds": _uncertainty_kinds(heads, outputs),
    }
    return outputs, report


def _forward_in_mask(
    package: ModelPackage,
    net,
    frame: torch.Tensor,
    mask: torch.Tensor,
    factor,
    device,
    roi,
    batch,
    notify,
    token,
    wanted,
) -> dict:
    """:func:`_forward` on the head mask's bounding box only, pasted into full-size head buffers.

    The box is at least one window (or the whole axis) wide, so 3D networks see the window size they
    were made for.  Outside the box, images are 0 and class probabilities say background; the
    caller replaces everything outside the mask anyway.
    """
    from ..models import ARCHITECTURES

    spec = ARCHITECTURES[package.metadata["architecture"]]
    size = tuple(int(s) for s in frame.shape[1:])
    minimum = tuple(int(r) for r in roi) if spec.dims == 3 else (1, 1, 2)
    box = bounding_box(mask.numpy(), minimum=tuple(max(m, 2) if a == 2 else m for a, m in enumerate(minimum)))
    if all(b.start == 0 and b.stop == n for b, n in zip(box, size)):
        return _forward(package, net, frame, factor, device, roi, batch, notify, token, wanted, mask)
    crop = frame[(slice(None),) + box].contiguous()
    heads = _forward(package, net, crop, factor, device, roi, batch, notify, token, wanted, mask[box].contiguous())
    pasted = {}
    for key, value in heads.items():
        placement = [_placement(value.shape[1 + a], box[a], size[a], factor) for a in range(3)]
        full = torch.zeros((value.shape[0],) + tuple(p[1] for p in placement), dtype=value.dtype)
        if key == "seg_probs":
            full[0] = 1.0  # class 0: background
        full[(slice(None),) + tuple(slice(p[0], p[0] + value.shape[1 + a]) for a, p in enumerate(placement))] = value
        pasted[key] = full
    return pasted


def _placement(length: int, box: slice, size: int, factor: int) -> tuple[int, int]:
    """Start in the full head buffer and the buffer's length along one axis, from a cropped head's
    length: the same grid (zoom 1), subdivided slices (``n R``) or inserted slices (``(n-1) R + 1``)."""
    n = box.stop - box.start
    if length == n:
        return box.start, size
    if length == n * factor:
        return box.start * factor, size * factor
    if length == (n - 1) * factor + 1:
        return box.start * factor, (size - 1) * factor + 1
    raise RuntimeError(f"a head of length {length} does not fit a crop of {n} voxels at factor {factor}")


def _forward(
    package: ModelPackage,
    net,
    frame: torch.Tensor,
    factor: int,
    device,
    roi,
    batch,
    notify,
    token,
    wanted: frozenset,
    mask: torch.Tensor | None = None,
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
            for k, v in sliding_window_predict(
                net, frame[None], roi, keys, device, DEFAULT_OVERLAP, 1, on_step, mask=mask
            ).items()
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


def _to_volumes(
    package, volume: Volume, heads: dict, params, tasks, protocol, factor, axis, want_uncertainty, to_input_order, mask
):
    """Heads in the model frame -> output volumes on the input's protocol grids, with the classical
    answer outside the head mask ``mask`` (input voxel order)."""
    outputs: dict[str, Volume] = {}
    summaries: dict[str, dict] = {}
    image_key = "interp" if "interp" in heads else "sr"
    image_protocol = "interp" if image_key == "interp" else "sr"
    grid = _output_grid(volume, package, image_protocol, factor, axis)
    inside = mask_on_grid(mask, volume.grid, grid)
    if image_key in heads and (protocol is not None):
        array = denormalize(to_input_order(heads[image_key].numpy()), params)
        if not inside.all():
            classical = resample_to_grid(volume, grid, "bspline").array
            array = np.where(inside[None], array, classical)
        outputs[protocol] = Volume.from_grid(_match_dtype(array, volume.array.dtype), grid, source=volume.source)
        unit = None
        if want_uncertainty and "image_spread" in heads:  # TTA / MC-dropout samples
            unit = to_input_order(heads["image_spread"].numpy()).max(axis=0)  # worst channel
        elif want_uncertainty and "sr_log_var" in heads:  # the model's own heteroscedastic head
            unit = aleatoric_to_unit(to_input_order(heads["sr_log_var"].numpy())[0])
        if unit is not None:
            unit = np.where(inside, unit, 0.0).astype(np.float32)  # B-spline outside: nothing to doubt
            outputs["uncertainty_sr"] = Volume.from_grid(  # image uncertainty of sr and interp alike
                unit[None], grid, source=volume.source
            )
            summaries["uncertainty_sr"] = {**summarize(unit), "unit": RAW_UNCERTAINTY_UNIT}
    probs = heads.get("seg_probs")  # (K, X, Y, Z) class probabilities
    if "seg" in tasks and probs is not None:
        probs_np = to_input_order(probs.numpy())
        seg_grid = grid if probs_np.shape[1:] == tuple(grid.size) else subdivide_grid(volume.grid, factor, axis)
        seg_inside = inside if seg_grid is grid else mask_on_grid(mask, volume.grid, seg_grid)
        labels = _labels_from_probabilities(probs_np, package.labels)
        labels = np.where(seg_inside, labels, 0).astype(labels.dtype)  # outside the head: background
        outputs["seg"] = Volume.from_grid(labels[None], seg_grid, source=volume.source)
        if want_uncertainty:
            if "seg_mutual_information" in heads:
                unit = to_input_order(heads["seg_mutual_information"].numpy()[None])[0]
            elif "sr_uncertainty" in heads and heads["sr_uncertainty"].shape[1:] == probs.shape[1:]:
                # REHRSeg's UASR map U (Eq. 5): a sigmoid, blended by convex window weights -> [0, 1]
                unit = np.clip(to_input_order(heads["sr_uncertainty"].numpy())[0], 0.0, 1.0)
            else:
                unit = predictive_entropy(probs_np, axis=0)
            unit = np.where(seg_inside, np.asarray(unit, dtype=np.float32), 0.0).astype(np.float32)
            outputs["uncertainty_seg"] = Volume.from_grid(unit[None], seg_grid, source=volume.source)
            summaries["uncertainty_seg"] = {**summarize(unit), "unit": RAW_UNCERTAINTY_UNIT}
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
    """The protocol grid of the output: every magnified axis subdivided (in-plane models: the two in-plane
    axes; isotropic ``[R, R, R]`` models such as SwinSR-UNETR's x2: all three), else the through-plane one."""
    isotropic = package.scale.factor_axis == "all"
    if package.protocol == "inplane" or isotropic:
        grid = volume.grid
        for a in range(3):
            if isotropic or a != axis:
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


def _run_self_supervised(volume, mode, tasks, factor, axis, device, uncertainty, notify, token, timer, **options):
    """``self`` (trained from scratch on the scan) or ``adapt`` (the shipped prior fine-tuned on it)."""
    from ..selfsr import self_supervised_sr

    if "seg" in tasks:
        raise InputError(mode, f"model {mode!r} does sr and interp only; choose a model with 'seg' to segment "
                               "(or seg_model='atropos')")
    outputs, reports, summaries = {}, {}, {}
    with timer.stage("running"):
        for task in tasks:
            extra: dict | None = {} if uncertainty else None
            out, report = self_supervised_sr(
                volume,
                task,
                factor,
                axis,
                time_budget=options.get("time_budget"),  # None: the start's default (selfsr.DEFAULT_TIME_BUDGET)
                seed=int(options.get("seed", 0)),
                progress=notify,
                cancel=token,
                device=str(select_device(device)),
                max_steps=options.get("max_steps"),
                uncertainty_out=extra,
                start=SELF_SUPERVISED_MODES[mode],
            )
            outputs[task] = out
            reports[task] = report
            if extra:
                outputs["uncertainty_sr"] = extra["uncertainty_sr"]
                summaries["uncertainty_sr"] = calibrated_summary(
                    extra["uncertainty_sr"].array[0], "uncertainty_sr", head_mask(out), "head", mode
                )
    prior = next((r["prior"] for r in reports.values() if "prior" in r), None)
    return outputs, {
        "id": mode,
        "source": "self-supervised" if prior is None else "adapted prior",
        "weights_sha256": None if prior is None else prior["weights_sha256"],
        "device": str(select_device(device)),
        "uncertainty": summaries,
        "uncertainty_method": (
            "calibrated expected |error|: disagreement of the two plane families, output gradients, slab position"
            if uncertainty
            else None
        ),
        "training": reports,
    }
