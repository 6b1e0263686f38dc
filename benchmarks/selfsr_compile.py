"""Does ``torch.compile`` pay for self-SR inside its budget?  Eager against compiled, compile time counted.

    OMP_NUM_THREADS=1 python -m benchmarks.selfsr_compile --threads 1

Issue #16 asks for ``torch.compile`` "where it pays".  Self-SR (``self`` / ``adapt``) runs one small 2D
network (:func:`JointSRSegLib.selfsr_net.build_network`, ``cnn``) for at most 60-150 s per scan, so a
compile only pays if its first call plus the compiled batches beat the eager batches within that budget.
The input is a batch of LR coronal planes of a 256³ head at ×4 (64 thick slices × 256 pixels), the shape
the inference loop feeds; the timing is forward-only (inference mode), as inference dominates the budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .common import environment, write_result

OUT = Path("benchmarks/results/selfsr_compile.json")


def _seconds_per_batch(net, batch, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        net(batch)
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--planes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    from JointSRSegLib.selfsr_net import build_network

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, _ = build_network("cnn", 1, 4, "sr")
    net.eval()
    batch = torch.randn(args.planes, 1, 64, 256)
    with torch.inference_mode():
        net(batch)  # warm-up: allocator and kernels, as the first eager call of a run
        eager = _seconds_per_batch(net, batch, args.repeats)
        started = time.perf_counter()
        compiled = torch.compile(net)
        compiled(batch)
        first_call = time.perf_counter() - started
        compiled_batch = _seconds_per_batch(compiled, batch, args.repeats)
    saving = eager - compiled_batch
    write_result(args.out, {
        "benchmark": "selfsr_compile",
        "command": "python -m benchmarks.selfsr_compile " + " ".join(sys.argv[1:] if argv is None else argv),
        "input": {"planes": args.planes, "shape": [1, 64, 256], "network": "cnn", "factor": 4},
        "eager_s_per_batch": round(eager, 3),
        "compile_first_call_s": round(first_call, 1),
        "compiled_s_per_batch": round(compiled_batch, 3),
        "batches_to_break_even": round(first_call / saving, 1) if saving > 0 else None,
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
