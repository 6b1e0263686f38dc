"""``make bench``: every benchmark, JSON into ``benchmarks/results/``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# realistic and uncertainty after quality: quality.py rewrites docs/benchmarks.md, they re-insert their blocks.
BENCHMARKS = ("scale", "speed", "selfsr", "adapt_prior", "quality", "realistic", "uncertainty")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    for name in args.only or BENCHMARKS:
        if not (Path(__file__).parent / f"{name}.py").exists():
            print(f"skip {name}: not present")
            continue
        subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", "--out", str(args.out / f"{name}.json")], check=True
        )


if __name__ == "__main__":
    main()
