"""``jointsrseg`` command line: info, models, run, eval, demo, serve (and, with packages, import-model).

Every user-fixable problem ends as one line ``jointsrseg: error: <file>: <problem>`` on stderr
with exit code 2 -- never a traceback, never a partial output.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .errors import CancelledError, InputError
from .vocabulary import (
    ADAPTATION,
    AUTO,
    DEVICES,
    IMAGE_BASELINES,
    LABEL_BASELINES,
    MAX_FACTOR,
    MIN_FACTOR,
    OUTPUT_FORMATS,
    SEGMENTATION_BASELINES,
    SELF_SUPERVISED,
    TASKS,
    UNCERTAINTY_METHOD_TEXT,
    UNCERTAINTY_METHODS,
    parse_axis,
    parse_tasks,
)

EXIT_USAGE = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (plus where to look), not argparse's usage block."""

    def error(self, message: str):
        print(f"jointsrseg: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler; BaseException so staging clean-up runs like for Ctrl-C."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be a positive number of threads")
    return value


def _tasks(text: str) -> tuple[str, ...]:
    """``--tasks`` through the vocabulary, so an unknown task is a one-line usage error."""
    try:
        return parse_tasks(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="FILE",
        help="input volume (NIfTI, NRRD, MHA/MHD, MGZ or a DICOM folder); repeat for several modalities",
    )
    _add_model_arguments(p)
    p.add_argument("--out-dir", required=True, type=Path, help="folder for outputs and report.json")
    p.add_argument("--format", default=OUTPUT_FORMATS[0], choices=OUTPUT_FORMATS, help="output file format")
    p.add_argument("--series", default=None, metavar="UID", help="DICOM folder with several series: the one to read")


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``run`` and ``batch``: what to compute and with which model."""
    from .atropos import DEFAULT_MASK, MASK_MODES, PRIOR_MODES

    p.add_argument(
        "--tasks",
        default=(TASKS[0],),
        type=_tasks,
        help=f"comma-separated, from {', '.join(TASKS)}: sr (thick-slice SR), interp (slice interpolation), seg",
    )
    p.add_argument(
        "--scale",
        type=float,
        default=4,
        help=f"through-plane factor R, an integer {MIN_FACTOR}-{MAX_FACTOR} (default 4); "
        "1 with --tasks seg and atropos: the input grid",
    )
    p.add_argument("--axis", default=AUTO, help="through-plane voxel axis 0, 1, 2 or auto (largest spacing)")
    p.add_argument(
        "--model",
        default=AUTO,
        help=f"{AUTO} (default): the method the real-scan report measured best for the request (report.json "
        "'model_choice' says which and why; e.g. SR x4: adapt, SR+seg x4: adapt + atropos); or a model id, "
        f"package path, {SELF_SUPERVISED} (trained on the scan itself), {ADAPTATION} (the shipped "
        f"prior fine-tuned on the scan) or baseline: {', '.join(IMAGE_BASELINES)} (images), "
        f"{', '.join(LABEL_BASELINES)} (label maps), {', '.join(SEGMENTATION_BASELINES)} "
        "(B-spline + ANTs Atropos GM/WM); see 'jointsrseg models'",
    )
    p.add_argument(
        "--seg-model",
        default=None,
        choices=SEGMENTATION_BASELINES,
        help="segment the output of --model with this classical method instead (ANTs Atropos, extra 'atropos')",
    )
    p.add_argument(
        "--atropos-priors",
        default="template",
        choices=PRIOR_MODES,
        help="Atropos: template = MNI152 GM/WM priors registered to the scan (default), none = k-means only",
    )
    p.add_argument(
        "--atropos-mask",
        default=DEFAULT_MASK,
        choices=MASK_MODES,
        help="Atropos brain mask: learned = the brain-extraction network (default), classical = intensity rules",
    )
    p.add_argument("--device", default=AUTO, choices=DEVICES)
    p.add_argument(
        "--uncertainty", action="store_true", help="also write uncertainty maps when the model supports them"
    )
    p.add_argument(
        "--threads", type=_positive_int, default=None, help="CPU threads for the network (default: PyTorch's choice)"
    )
    p.add_argument(
        "--uncertainty-method",
        default=AUTO,
        choices=UNCERTAINTY_METHODS,
        help="; ".join(f"{name}: {text}" for name, text in UNCERTAINTY_METHOD_TEXT.items()),
    )
    p.add_argument("--time-budget", type=float, default=None,
                   help="ceiling in seconds for --model self / adapt (default 150 / 60; training stops earlier when "
                   "it converges)")


def predict_options(args: argparse.Namespace) -> dict:
    """The ``predict`` keyword arguments given by the shared model options (``run`` and ``batch``)."""
    return {
        "model": args.model,
        "tasks": args.tasks,
        "scale": args.scale,
        "axis": parse_axis(args.axis),
        "device": args.device,
        "uncertainty": args.uncertainty,
        "threads": args.threads,
        "uncertainty_method": args.uncertainty_method,
        "time_budget": args.time_budget,
        "seg_model": args.seg_model,
        "atropos_priors": args.atropos_priors,
        "atropos_mask": args.atropos_mask,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="jointsrseg",
        description="Joint super-resolution, slice interpolation and segmentation of MRI/CT volumes.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="geometry summary of a volume")
    info.add_argument("file", type=Path)
    sub.add_parser("models", help="list available models and baselines")
    run = sub.add_parser("run", help="run a model on a volume")
    _add_run_arguments(run)
    ev = sub.add_parser("eval", help="metrics of a prediction against a reference, as JSON")
    ev.add_argument("--pred", required=True, type=Path)
    ev.add_argument("--reference", required=True, type=Path)
    ev.add_argument("--labels", action="store_true", help="compare label maps (Dice, IoU, HD95...) instead of images")
    imp = sub.add_parser("import-model", help="verify a model package (.zip or folder) and install it")
    imp.add_argument("package", type=Path)
    batch = sub.add_parser("batch", help="run a model on every volume of a folder (resumable, shardable)")
    batch.add_argument("--input-dir", required=True, type=Path)
    batch.add_argument("--out-dir", required=True, type=Path)
    _add_model_arguments(batch)
    batch.add_argument("--format", default=OUTPUT_FORMATS[0], choices=OUTPUT_FORMATS)
    batch.add_argument(
        "--shard",
        default=None,
        help="i/n: process every n-th volume starting at i (0-based); defaults to RANK/WORLD_SIZE under torchrun",
    )
    demo = sub.add_parser("demo", help="x4 thick-slice demo on the bundled MNI152 sample")
    demo.add_argument("--out-dir", type=Path, default=Path("demo_out"))
    demo.add_argument("--device", default=AUTO, choices=DEVICES)
    demo.add_argument(
        "--time-budget", type=float, default=60.0, help="seconds of self-supervised training when it is the SR method"
    )
    serve = sub.add_parser("serve", help="the Slicer module's panel in a web browser (trame-slicer, extra 'slicer')")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--data-dir", type=Path, default=None, help="folder whose volumes the page may open")
    serve.add_argument("--max-upload-mb", type=float, default=None, help="largest upload accepted (default 512 MB)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _handle_sigterm()
    try:
        if getattr(args, "out_dir", None) is not None:
            from .outputs import check_out_dir

            check_out_dir(args.out_dir)  # before any work
        return int(_dispatch(args) or 0)
    except InputError as error:
        print(f"jointsrseg: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except CancelledError:
        print("jointsrseg: cancelled; nothing was written", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("jointsrseg: interrupted; nothing was written", file=sys.stderr)
        return 130
    except _Terminated:
        print("jointsrseg: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _handle_sigterm():
    """SIGTERM raises like Ctrl-C (staging removed, exit 143); the previous handler, or None off the main thread."""

    def terminate(signum, frame):
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        return None


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "info":
        return _cmd_info(args.file)
    if args.command == "models":
        return _cmd_models()
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "eval":
        return _cmd_eval(args.pred, args.reference, args.labels)
    if args.command == "import-model":
        return _cmd_import_model(args.package)
    if args.command == "batch":
        from .batch import run_batch

        return run_batch(args)
    if args.command == "serve":
        return _cmd_serve(args)
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args.out_dir, device=args.device, show_progress=True, time_budget=args.time_budget)
        return 0
    raise AssertionError(args.command)


def _cmd_info(path: Path) -> int:
    from .geometry import through_plane_axis
    from .io import read_volume
    from .report import describe_volume

    volume = read_volume(path)
    summary = describe_volume(volume)
    try:
        summary["through_plane_axis"] = through_plane_axis(volume)
    except InputError:
        summary["through_plane_axis"] = None  # isotropic: no slice axis to detect
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_models() -> int:
    from .packaging import available_models

    rows = available_models()
    width = max(len(r.id) for r in rows)
    print(f"{'id':<{width}}  {'source':<8}  {'tasks':<16}  {'inputs':<22}  scale")
    for r in rows:
        print(f"{r.id:<{width}}  {r.source:<8}  {','.join(r.tasks):<16}  {','.join(r.inputs):<22}  {r.scale}")
    from .selfsr_prior import available_priors

    print(
        SELF_SUPERVISED + " " * max(2, width - 2) + "  built-in  sr,interp          any single image        "
        f"any factor {MIN_FACTOR}-{MAX_FACTOR} (trains on the scan itself)"
    )
    priors = ", ".join(f"{p} x{f}" for p, f in available_priors()) or "none shipped"
    print(ADAPTATION + " " * max(2, width - 3) + f"  built-in  sr,interp          one-channel image       {priors} "
          "(shipped prior fine-tuned on the scan)")
    return 0


def _cmd_import_model(path: Path) -> int:
    from .packaging import import_model

    package = import_model(path)
    print(f"installed {package.id} {package.version} into {package.path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .api import predict
    from .outputs import output_paths, refuse_overwriting_inputs, write_outputs
    from .progress import TqdmProgress

    options = predict_options(args)
    planned = output_paths(args.out_dir, [*options["tasks"], "uncertainty_sr", "uncertainty_seg"], args.format)
    refuse_overwriting_inputs([Path(p) for p in args.input], [*planned.values(), args.out_dir / "report.json"])
    inputs = args.input
    if args.series is not None:
        from .io import read_volumes

        inputs = read_volumes(args.input, series=args.series)
    with TqdmProgress() as bar:
        result = predict(inputs, progress=bar, **options)
    written = write_outputs(args.out_dir, result.outputs, args.format, result.report)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """The web panel lives beside the Slicer module logic (it imports slicer): loaded only here."""
    import importlib.util

    missing = [name for name in ("trame", "trame_slicer", "slicer") if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError("serve", f"needs {', '.join(missing)}: pip install 'jointsrseg[slicer]'")
    module_dir = Path(__file__).resolve().parents[1] / "JointSRSeg"
    if not (module_dir / "JointSRSegModule" / "serve.py").is_file():
        raise InputError(module_dir, "the Slicer module folder is missing; run serve from the source tree")
    if args.data_dir is not None and not args.data_dir.is_dir():
        raise InputError(args.data_dir, "is not a folder (--data-dir)")
    if not 0 <= args.port <= 65535:
        raise InputError("--port", f"{args.port} is not a TCP port (0-65535)")
    if args.max_upload_mb is not None and not args.max_upload_mb > 0:
        raise InputError("--max-upload-mb", f"{args.max_upload_mb:g} must be positive")
    sys.path.insert(0, str(module_dir))
    try:
        from JointSRSegModule.serve import serve
    except ImportError as error:
        raise InputError("serve", f"cannot load the web panel ({error}); pip install 'jointsrseg[slicer]'") from None
    options = {} if args.max_upload_mb is None else {"max_upload_mb": args.max_upload_mb}
    return serve(args.host, args.port, args.data_dir, **options)


def _cmd_eval(pred_path: Path, reference_path: Path, labels: bool) -> int:
    from .evaluation import evaluate_files

    print(json.dumps(evaluate_files(pred_path, reference_path, labels), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
