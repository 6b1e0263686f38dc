"""Train a JointSRSeg model: ``python training/train.py --config training/configs/<name>.yaml [key=value ...]``.

Multi-GPU / multi-node: ``torchrun --nproc_per_node N training/train.py --config ...`` (gloo on CPU).
Resume: ``python training/train.py --resume RUN_DIR [key=value ...]`` (config read from RUN_DIR).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `training` and `JointSRSegLib` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import ConfigError, options_help, resolve  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train a joint SR / interpolation / segmentation model on a dataset or the MNI sample.",
        epilog=options_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML config (training/configs/*.yaml)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last.pt with its saved config.yaml")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--stop-at-step", type=int, default=None, metavar="N",
                        help="pause after global step N (a multiple of train.checkpoint_every, so last.pt holds it); "
                             "continue with --resume, possibly with other options")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=2e-4")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.resume is not None:
            config_path = args.resume / "config.yaml"
            if not config_path.is_file():
                raise ConfigError(f"{config_path}: not found; is {args.resume} a run folder?")
        elif args.config is not None:
            config_path = args.config
        else:
            raise ConfigError("give --config FILE (or --resume RUN_DIR)")
        cfg = resolve(config_path, args.overrides)
        every = cfg["train"]["checkpoint_every"]
        if args.stop_at_step is not None and (args.stop_at_step <= 0 or not every or args.stop_at_step % every):
            raise ConfigError(f"--stop-at-step {args.stop_at_step}: must be a positive multiple of "
                              f"train.checkpoint_every ({every}), so the pause is saved")
        if args.print_config:
            import yaml

            print(yaml.safe_dump(cfg, sort_keys=False))
            return 0
        from JointSRSegLib.errors import InputError
        from training.engine.loop import TrainingError, run_training

        try:
            summary = run_training(cfg, resume_dir=args.resume, stop_at_step=args.stop_at_step)
        except (InputError, TrainingError, FileNotFoundError, ValueError) as error:
            print(f"train.py: error: {error}", file=sys.stderr)
            return 2
    except ConfigError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    if summary.get("best"):
        best = summary["best"]
        print(f"done: step {summary['step']} ({summary['stopped']}); best {best['metric']} "
              f"{best['value']:.4g} at step {summary['best_step']}; run folder {summary['run_dir']}")
    else:
        print(f"done: step {summary['step']} ({summary['stopped']}); run folder {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
