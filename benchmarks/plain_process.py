"""jacbench's routines in a plain Python process against the process `jacbench run` times in.

    python benchmarks/plain_process.py [--min-time S]

For every operator (the Jacobian, the Hessian, the Laplacian, Hessian-vector products) at
the PINN shapes and the seed problem, each configuration in a fresh process: ``plain``, as a
user's program imports jacbench, and ``run``, with glibc's thresholds fixed as the harness
fixes them (``allocator.keep_freed_memory``). It prints the page faults each call makes after
warm-up and the median times, and their ratio (NOTE: [Buffers reused from call to call] in
``jacbench.ad.workspace``). A benchmark, not a test: its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

# (operator, widths, batch): the PINN shapes of the presets, and the seed problem's middle.
CASES = [
    (operator, widths, batch)
    for operator in ("jacobian", "hessian", "laplacian", "hvp")
    for widths, batch in (
        ((2, 96, 96, 96, 96, 96, 1), 2048),
        ((2, 64, 64, 64, 64, 64, 64, 1), 4096),
    )
] + [("jacobian", (1000, 1000, 1000, 1000, 1000, 1000, 1), 1)]
WARMUP, CALLS = 5, 20


def measure_here(operator: str, widths: list[int], batch: int, keep: bool, min_time: float):
    """Faults per call and the median seconds of one operator, in this process."""
    import torch

    from jacbench.ad.networks import MLP
    from jacbench.measure import allocator, timing
    from jacbench.runs.methods import METHODS
    from jacbench.runs.operators import OPERATORS

    if keep:
        allocator.keep_freed_memory()
    net = MLP.from_widths(widths, seed=0)
    x = torch.randn(batch, widths[0]) if batch > 1 else torch.randn(widths[0])
    best = OPERATORS[operator].best_method
    call = METHODS[best].build(net, x)
    for _ in range(WARMUP):
        call()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(CALLS):
        call()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / CALLS
    seconds = timing.measure(call, min_time=min_time).median
    return {"method": best, "faults": faults, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-time", type=float, default=0.5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        operator, widths, batch, keep = json.loads(args.child)
        print(json.dumps(measure_here(operator, widths, batch, keep, args.min_time)))
        return
    print(f"{'operator':10} {'shape':28} {'method':18} {'faults plain':>12} {'faults run':>10} "
          f"{'plain':>9} {'run':>9} {'plain/run':>9}")  # fmt: skip
    for operator, widths, batch in CASES:
        found = []
        for keep in (False, True):
            child = json.dumps([operator, list(widths), batch, keep])
            out = subprocess.run(
                [sys.executable, __file__, "--child", child, "--min-time", str(args.min_time)],
                capture_output=True,
                text=True,
                check=True,
            )
            found.append(json.loads(out.stdout.strip().splitlines()[-1]))
        plain, run = found
        shape = f"L={len(widths) - 2} D={widths[0]} K={widths[1]} P={widths[-1]} B={batch}"
        print(
            f"{operator:10} {shape:28} {plain['method']:18} {plain['faults']:12.1f} "
            f"{run['faults']:10.1f} {plain['seconds'] * 1e3:7.2f}ms {run['seconds'] * 1e3:7.2f}ms "
            f"{plain['seconds'] / run['seconds']:9.2f}"
        )


if __name__ == "__main__":
    main()
