"""Which shipped model a request gets when nobody names one: the single rule behind ``jointsrseg demo``
and the Slicer module's preselected model (no Slicer imports, no torch needed).

A *request* is the tasks (``sr``, ``interp``, ``seg``), the protocol of the input -- ``sr`` (thick
slices), ``interp`` (gapped slices) or ``inplane`` (coarse pixels in every slice), see README "The
standard degradation protocols" -- and the factor R.  A built-in package (``Resources/Models``) *fits*
when it lists every requested task, was made for that protocol and supports R.  Among the packages
that fit, the one whose model card (``metrics.regression_check`` in model.json) records the largest
PSNR gain over B-spline under that protocol and factor comes first -- for a segmentation-only request,
the largest mean Dice; a package without such a record ranks after those with one, in folder order.
``adapt`` (the shipped self-SR prior fine-tuned on the scan, :mod:`JointSRSegLib.selfsr_prior`) competes
as one more candidate for image-only requests of its protocol and factor, ranked by the real-scan record
in its ``prior.json``.  When nothing fits, the caller's fallback is used: ``bspline`` in the Slicer module;
``model="auto"`` (the command line's default, :func:`choose_for_input`) falls back to ``bspline``, or
``atropos`` when segmentation is asked; the demo asks for a *positive* recorded gain for SR and otherwise uses the
self-supervised mode (``self``).
A request for image output only (no ``seg``) never gets a package whose card records a *loss* against
B-spline: it would make the image worse than the classical default.

Real scans decide (``metrics.realistic`` in model.json, written from ``benchmarks/realistic.py``: subjects,
contrasts, voxel orientations and fields of view never trained on).  A package's realistic record, where
it has one for the request, replaces its template regression check: for images, its mean PSNR gain over
B-spline counts only with a mean SSIM not below B-spline's.  **Segmentation** goes to a package only if
its realistic record shows a mean tissue Dice above ``atropos`` on B-spline and above ``atropos`` on
self-SR, each on the cases both ran (paired means); otherwise the request gets the classical
``atropos`` (B-spline + ANTs Atropos, :mod:`JointSRSegLib.atropos`), which needs no training data and does
not care which orientation, contrast or field of view the scan has -- and Atropos segments the output
of the best SR method for the request's image task when that method's real-scan record shows Atropos on
its output (``with_atropos_dice``) above Atropos on B-spline on the same cases
(:attr:`DefaultChoice.seg_model`; e.g. SR + segmentation x4 -> ``adapt`` SR, segmented by Atropos).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .vocabulary import (
    ADAPTATION,
    DEFAULT_BASELINE,
    IMAGE_TASKS,
    INPUT_GRID_FACTOR,
    PROTOCOL_TEXT,
    SCALE_FACTORS,
    SEGMENTATION_BASELINES,
    SELF_TRAINED,
    TASK_TEXT,
    check_protocol,
    parse_tasks,
)

DEFAULT_FALLBACK = DEFAULT_BASELINE
SEGMENTATION_PEER = SEGMENTATION_BASELINES[0]  # the classical tissue segmentation a package must beat


@dataclass(frozen=True)
class DefaultChoice:
    """The model a request gets and why (shown under Slicer's model selector, kept in the demo report)."""

    model: str | None  # a package id, or the fallback (None when the caller gave none)
    reason: str
    gain_db: float | None = None  # PSNR gain over B-spline the chosen package's card records for this request
    dice: float | None = None  # mean Dice the chosen package's card records for this request
    seg_model: str | None = None  # a classical method segmenting ``model``'s SR output (predict's seg_model)


def request_protocol(tasks: str | Sequence[str], protocol: str | None = None) -> str:
    """The protocol of a request: the one given, else ``interp`` for slice interpolation, else ``sr``."""
    if protocol is not None:
        return check_protocol(protocol)
    return "interp" if "interp" in parse_tasks(tasks, allow_empty=True) else "sr"


def fits(
    model_tasks: Iterable[str],
    model_protocols: Iterable[str],
    model_factors: Iterable[int],
    tasks: str | Sequence[str],
    protocol: str | None,
    factor: int,
) -> bool:
    """Whether a model (its tasks, protocols and factors) can serve the request."""
    wanted = parse_tasks(tasks, allow_empty=True)
    return (
        bool(wanted)
        and set(wanted) <= set(model_tasks)
        and request_protocol(wanted, protocol) in tuple(model_protocols)
        and int(factor) in tuple(model_factors)
    )


def regression_check(
    metadata: Mapping[str, Any] | None, protocol: str | None = None, factor: int | None = None
) -> dict[str, Any] | None:
    """The card's ``metrics.regression_check``, if it was measured under ``protocol`` at ``factor``."""
    metrics = (metadata or {}).get("metrics")
    check = metrics.get("regression_check") if isinstance(metrics, Mapping) else None
    if not isinstance(check, Mapping):
        return None
    if protocol is not None and check.get("protocol") != protocol:
        return None
    if factor is not None and check.get("factor") != factor:
        return None
    return dict(check)


def _number(check: Mapping[str, Any] | None, key: str) -> float | None:
    value = (check or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def realistic_record(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> dict[str, Any] | None:
    """The card's ``metrics.realistic`` (the real-scan report's means) under ``protocol`` at ``factor``."""
    metrics = (metadata or {}).get("metrics")
    record = metrics.get("realistic") if isinstance(metrics, Mapping) else None
    if not isinstance(record, Mapping) or record.get("protocol") != protocol or record.get("factor") != factor:
        return None
    return dict(record)


def recorded_gain(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> float | None:
    """PSNR gain over B-spline (dB) the card records under ``protocol`` at ``factor`` (real-scan report
    first), else None."""
    real = realistic_record(metadata, protocol, factor)
    if real is not None:
        return _number(real, "psnr_gain_over_bspline_db")
    return _number(regression_check(metadata, protocol, factor), "psnr_gain_over_bspline_db")


def ssim_below_bspline(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> bool:
    """Whether the real-scan record shows a mean SSIM below B-spline's: such a PSNR gain is no gain
    (the background offset and block artefacts a user sees are in SSIM, not in the mean error)."""
    real = realistic_record(metadata, protocol, factor) or {}
    ssim, base = _number(real, "ssim"), _number(real, "bspline_ssim")
    return ssim is not None and base is not None and ssim < base


def recorded_dice(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> float | None:
    """Mean Dice the card records under ``protocol`` at ``factor`` (real-scan report first), else None."""
    real = realistic_record(metadata, protocol, factor)
    if real is not None:
        return _number(real, "dice_mean")
    return _number(regression_check(metadata, protocol, factor), "dice_mean")


def beats_segmentation_peer(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> tuple[bool, str]:
    """Whether the card's real-scan record shows a mean Dice above ``atropos`` on B-spline *and* above
    ``atropos`` on self-SR, each on the cases both ran (the record's paired means), and why."""
    real = realistic_record(metadata, protocol, factor)
    if real is None:
        return False, "not measured on the real-scan report"
    dice = _number(real, "dice_mean")
    comparisons = []  # (where, the package's Dice on the peer's cases, the peer's Dice)
    if _number(real, "atropos_on_bspline_dice") is not None and dice is not None:
        comparisons.append(("on B-spline", dice, _number(real, "atropos_on_bspline_dice")))
    if _number(real, "atropos_on_self_dice") is not None:
        mine = _number(real, "dice_mean_on_those_cases")
        comparisons.append(("on self-SR", dice if mine is None else mine, _number(real, "atropos_on_self_dice")))
    if not comparisons:
        return False, "its real-scan record lacks the Dice of it or of atropos"
    lost = [c for c in comparisons if not c[1] > c[2]]
    where, mine, peer = (lost or comparisons)[0]
    return not lost, f"real-scan Dice {mine:.2f} vs atropos {where} {peer:.2f} on the same cases"


def chained_segmentation_gain(metadata: Mapping[str, Any] | None, protocol: str, factor: int) -> float | None:
    """Mean Dice of Atropos on this method's SR output minus Atropos on B-spline, on the real-scan cases
    both ran (``with_atropos_dice`` / ``with_atropos_peer_dice``), else None."""
    real = realistic_record(metadata, protocol, factor)
    mine, peer = _number(real, "with_atropos_dice"), _number(real, "with_atropos_peer_dice")
    return None if mine is None or peer is None else mine - peer


def quality_text(metadata: Mapping[str, Any] | None) -> str:
    """One line on what the card measured, e.g. "Measured (model card, thick slices ×4): PSNR 27.35 dB, -0.34 dB
    vs B-spline; mean Dice 0.72." -- so a preselected package never looks better than it is."""
    check = regression_check(metadata)
    if not check:
        return "Measured quality: not recorded on the model card."
    psnr, dice = _number(check, "psnr_db"), _number(check, "dice_mean")
    gain = _number(check, "psnr_gain_over_bspline_db")
    parts = []
    if psnr is not None:
        parts.append(f"PSNR {psnr:.2f} dB" + (f", {gain:+.2f} dB vs B-spline" if gain is not None else ""))
    elif gain is not None:
        parts.append(f"{gain:+.2f} dB PSNR vs B-spline")
    if dice is not None:
        parts.append(f"mean Dice {dice:.2f}")
    where = PROTOCOL_TEXT.get(str(check.get("protocol")), str(check.get("protocol", "?")))
    factor = check.get("factor")
    scope = f"{where} ×{factor}" if factor is not None else where
    return f"Measured (model card, {scope}): {'; '.join(parts) or 'no figures'}."


def describe_request(tasks: str | Sequence[str], protocol: str | None, factor: int) -> str:
    """e.g. "super-resolution + segmentation ×4 (thick slices)"."""
    wanted = parse_tasks(tasks, allow_empty=True)
    what = " + ".join(TASK_TEXT[t] for t in wanted) or "no task"
    return f"{what} ×{factor} ({PROTOCOL_TEXT[request_protocol(wanted, protocol)]})"


@dataclass(frozen=True)
class _Factors:
    factors: tuple[int, ...]


@dataclass(frozen=True)
class LearnedMethod:
    """A package-like view of a shipped method that is not a package -- ``adapt``, one per prior (id,
    tasks, protocol, scale.factors, metadata with the prior's real-scan record) -- so one ranking rule
    serves both."""

    id: str
    tasks: tuple[str, ...]
    protocol: str
    scale: _Factors
    metadata: Mapping[str, Any]


def shipped_priors() -> list[LearnedMethod]:
    """``adapt`` for every shipped self-SR prior (``Resources/Priors``; prior.json only, no torch)."""
    import json

    from .selfsr_prior import PRIOR_FILE, PRIORS_DIR

    found = []
    for path in sorted(PRIORS_DIR.glob(f"*/{PRIOR_FILE}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            method = LearnedMethod(ADAPTATION, ("sr",) if record["protocol"] == "sr" else ("interp",),
                                   str(record["protocol"]), _Factors((int(record["factor"]),)),
                                   {"metrics": dict(record.get("metrics") or {})})
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(method)
    return found


def shipped_packages() -> list[Any]:
    """The built-in packages (``Resources/Models``), model.json checked, weights not read, architecture
    registry not imported (no torch: the Slicer panel preselects a model before PyTorch starts)."""
    from .packaging import BUILTIN_MODELS_DIR, _scan  # the folder scan that also feeds available_models

    return list(_scan(BUILTIN_MODELS_DIR, check_architecture=False))


def choose_default(
    tasks: str | Sequence[str],
    protocol: str | None = None,
    factor: int = 4,
    *,
    require_gain: bool = False,
    fallback: str | None = DEFAULT_FALLBACK,
    packages: Iterable[Any] | None = None,
    chain_segmentation: bool = True,
) -> DefaultChoice:
    """The best shipped package for the request (module docstring), or ``fallback``.

    ``require_gain`` keeps only packages whose card records a positive PSNR gain over B-spline for
    this request (the demo's SR).  ``packages`` (``ModelPackage``-like: ``id``, ``tasks``,
    ``protocol``, ``scale.factors``, ``metadata``) replaces the built-in folder, e.g. in tests.
    ``chain_segmentation=False`` leaves out "SR method + Atropos on its output" (a caller whose user chose
    that the model segments by itself).
    """
    wanted = parse_tasks(tasks, allow_empty=True)
    factor = int(factor)
    if not wanted:
        return DefaultChoice(fallback, "no task requested" + (f"; using {fallback}" if fallback else ""))
    proto = request_protocol(wanted, protocol)
    image_task = any(t in IMAGE_TASKS for t in wanted)
    no_worse_than_bspline = image_task and "seg" not in wanted
    ranked, fitting, vetoed = [], 0, []
    candidates = [*shipped_packages(), *shipped_priors()] if packages is None else list(packages)
    for order, package in enumerate(candidates):
        if not fits(package.tasks, (package.protocol,), package.scale.factors, wanted, proto, factor):
            continue
        fitting += 1
        gain = recorded_gain(package.metadata, proto, factor)
        dice = recorded_dice(package.metadata, proto, factor)
        if "seg" in wanted:
            better, why = beats_segmentation_peer(package.metadata, proto, factor)
            if not better:
                vetoed.append(f"{package.id}: {why}")
                continue
        if ssim_below_bspline(package.metadata, proto, factor) and image_task and "seg" not in wanted:
            continue
        if require_gain and not (gain is not None and gain > 0):
            continue
        if no_worse_than_bspline and gain is not None and gain < 0:
            continue
        primary = gain if image_task else dice
        secondary = dice if image_task and "seg" in wanted else None
        key = (primary is not None, primary or 0.0, secondary is not None, secondary or 0.0, -order)
        ranked.append((key, package.id, gain, dice))
    request = describe_request(wanted, proto, factor)
    if not ranked and "seg" in wanted and proto != "inplane":
        why = f" ({'; '.join(vetoed)})" if vetoed else ""
        # seg alone: Atropos still reads an image on the protocol's grid, so the best SR for it helps too
        image_tasks = tuple(t for t in wanted if t in IMAGE_TASKS) or ((proto,) if proto in IMAGE_TASKS else ())
        chained = None
        if image_tasks and chain_segmentation:
            chained = _best_sr_for_atropos(candidates, image_tasks, proto, factor)
        if chained is not None:
            sr, gain, dice, seg_gain = chained
            return DefaultChoice(
                sr,
                f"{sr} SR segmented by {SEGMENTATION_PEER}: on real scans Atropos on its output has mean Dice "
                f"{dice:.2f} ({seg_gain:+.2f} vs Atropos on B-spline) and its SR {gain:+.2f} dB over B-spline; "
                f"no shipped package beats {SEGMENTATION_PEER} for {request}{why}",
                gain, dice, seg_model=SEGMENTATION_PEER,
            )
        return DefaultChoice(
            SEGMENTATION_PEER,
            f"no shipped package beats {SEGMENTATION_PEER} (B-spline + ANTs Atropos) for {request}{why}; "
            f"using {SEGMENTATION_PEER}",
        )
    if not ranked:
        if (require_gain or no_worse_than_bspline) and fitting:
            problem = f"no shipped package records a gain over B-spline for {request}"
        else:
            problem = f"no shipped package does {request}"
        return DefaultChoice(fallback, problem + (f"; using {fallback}" if fallback else ""))
    _, model, gain, dice = max(ranked)
    if gain is not None and gain > 0:
        reason = f"{model} records {gain:+.2f} dB PSNR over B-spline for {request}"
    elif len(ranked) == 1:
        kind = "self-SR prior (fine-tuned on the scan)" if model == "adapt" else "package"
        reason = f"{model} is the shipped {kind} for {request}"
    else:
        metric = "PSNR gain" if image_task else "Dice"
        reason = f"{model} has the best recorded {metric} of the {len(ranked)} shipped packages for {request}"
    if not (gain is not None and gain > 0):
        if image_task and gain is not None:
            reason += f"; its card records {gain:+.2f} dB PSNR vs B-spline"
        elif not image_task and dice is not None:
            reason += f"; its card records mean Dice {dice:.2f}"
    return DefaultChoice(model, reason, gain, dice)


def _best_sr_for_atropos(
    candidates: Iterable[Any], image_tasks: tuple[str, ...], protocol: str, factor: int
) -> tuple[str, float, float, float] | None:
    """The SR method (id, PSNR gain, Dice of Atropos on it, Dice gain over Atropos on B-spline) whose
    real-scan record shows both an image gain (SSIM not below B-spline's) and Atropos on its output
    beating Atropos on B-spline; the largest Dice gain wins.  None when no method shows both."""
    best = None
    for order, method in enumerate(candidates):
        if not fits(method.tasks, (method.protocol,), method.scale.factors, image_tasks, protocol, factor):
            continue
        seg_gain = chained_segmentation_gain(method.metadata, protocol, factor)
        gain = recorded_gain(method.metadata, protocol, factor)
        real = realistic_record(method.metadata, protocol, factor) or {}
        if seg_gain is None or seg_gain <= 0 or gain is None or gain <= 0:
            continue
        if ssim_below_bspline(method.metadata, protocol, factor):
            continue
        key = (seg_gain, gain, -order)
        if best is None or key > best[0]:
            best = (key, (method.id, gain, float(real["with_atropos_dice"]), seg_gain))
    return None if best is None else best[1]


def choose_for_input(
    tasks: str | Sequence[str], factor: float, *, channels: int = 1, seg_model: str | None = None
) -> DefaultChoice:
    """What ``model="auto"`` (the CLI's default ``--model``) runs: :func:`choose_default` for the request,
    with the protocol the tasks imply and the classical fallback (``bspline``; ``atropos`` when ``seg`` is
    asked), so the command line gets the path the real-scan report measured best, as the Slicer panel does.
    With a caller's own ``seg_model`` the model is the best method for the image it segments.  The
    self-trained modes take one-channel images only: a multi-channel request falls back to the classical
    method."""
    wanted = parse_tasks(tasks)
    classical = SEGMENTATION_PEER if "seg" in wanted and seg_model is None else DEFAULT_BASELINE
    if "seg" in wanted and factor == INPUT_GRID_FACTOR:  # segment an HR input on its own grid: only Atropos
        return DefaultChoice(classical, f"segmentation on the input grid: {classical}")
    if not float(factor).is_integer() or int(factor) not in SCALE_FACTORS:
        return DefaultChoice(classical, "no default for this factor")  # predict refuses it in one line
    if seg_model is not None:  # the caller's segmenter reads this model's image: the best image method
        wanted = tuple(t for t in wanted if t in IMAGE_TASKS) or IMAGE_TASKS[:1]
    choice = choose_default(wanted, None, int(factor), fallback=classical, chain_segmentation=seg_model is None)
    if channels > 1 and choice.model in SELF_TRAINED:
        return DefaultChoice(classical, f"{choice.model} takes one-channel images and the input has {channels} "
                             f"channels; using {classical}")  # fmt: skip
    return choice


def default_model(
    tasks: str | Sequence[str], protocol: str | None = None, factor: int = 4, fallback: str = DEFAULT_FALLBACK
) -> str:
    """The id :func:`choose_default` picks (``fallback`` when no shipped package fits)."""
    return choose_default(tasks, protocol, factor, fallback=fallback).model or fallback


__all__ = [
    "DEFAULT_FALLBACK",
    "SEGMENTATION_PEER",
    "DefaultChoice",
    "choose_default",
    "choose_for_input",
    "default_model",
    "describe_request",
    "fits",
    "beats_segmentation_peer",
    "chained_segmentation_gain",
    "quality_text",
    "realistic_record",
    "recorded_dice",
    "recorded_gain",
    "regression_check",
    "request_protocol",
    "shipped_packages",
    "shipped_priors",
    "ssim_below_bspline",
]
