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
import os
import sys
import tempfile
import time
from pathlib import Path

from .common import environment, write_result

OUT = Path("benchmarks/results/selfsr_compile.json")


def _seconds_per_batch(net, batch, repeats: int) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        net(batch)
    return (time.perf_counter() - started) / repeats


def _measure(net, batch, repeats: int, cache_dir: str) -> dict:
    """Eager and compiled seconds per batch, and the compiled first call with a cold compile cache (a
    user's first run: inductor caches kernels on disk, so a second process compiles faster)."""
    import torch

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    torch._dynamo.reset()
    with torch.inference_mode():
        net(batch)  # warm-up: allocator and kernels, as the first eager call of a run
        eager = _seconds_per_batch(net, batch, repeats)
        started = time.perf_counter()
        compiled = torch.compile(net)
        compiled(batch)
        first_call = time.perf_counter() - started
        compiled_batch = _seconds_per_batch(compiled, batch, repeats)
    saving = eager - compiled_batch
    return {"eager_s_per_batch": round(eager, 3), "compile_first_call_s": round(first_call, 1),
            "compiled_s_per_batch": round(compiled_batch, 3),
            "batches_to_break_even": round(first_call / saving, 1) if saving > 0 else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--planes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    from JointSRSegLib.selfsr_net import build_network, fast_inference_dtype

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net, _ = build_network("cnn", 1, 4, "sr")
    net.eval()
    batch = torch.randn(args.planes, 1, 64, 256)
    precisions = {"float32": None}
    if fast_inference_dtype(torch.device("cpu")) is not None:  # what self-SR's inference uses here
        precisions["bfloat16 trunk"] = fast_inference_dtype(torch.device("cpu"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, dtype) in enumerate(precisions.items()):
            net.trunk_dtype = dtype
            rows[name] = _measure(net, batch, args.repeats, os.path.join(tmp, str(index)))
    write_result(args.out, {
        "benchmark": "selfsr_compile",
        "command": "python -m benchmarks.selfsr_compile " + " ".join(sys.argv[1:] if argv is None else argv),
        "input": {"planes": args.planes, "shape": [1, 64, 256], "network": "cnn", "factor": 4,
                  "batches_per_256_cube": 2 * 256 // args.planes},  # two planes of 256 slices each
        "precisions": rows,
        "environment": environment(),
    })


if __name__ == "__main__":
    main()
