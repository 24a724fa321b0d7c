"""Second order on PINN-sized batches: jacbench's Hessian modes and Laplacians against
torch.func (and JAX, when installed), timed in one process with torch.utils.benchmark.

    python examples/second_order.py            # prints a Markdown table
    python examples/second_order.py --quick    # one small shape (what the tests run)

Every routine is checked against float64 torch.func.hessian before it is timed.
"""

import argparse
import platform
import sys

import numpy as np
import torch
import torch.utils.benchmark as benchmark
from torch.func import hessian as func_hessian
from torch.func import vmap

import jacbench
from jacbench import hessians, methods, tuning
from jacbench.networks import MLP
from jacbench.results import cpu_model

SHAPES = [  # (L, D, K, P, B): the pinn-laplacian shapes
    (6, 2, 64, 1, 4096),
    (4, 2, 128, 1, 2048),
    (6, 3, 128, 1, 1024),
    (8, 3, 64, 1, 8192),
]


def candidates(net: MLP, x: torch.Tensor) -> dict:
    """name → (operator, zero-argument call)."""
    calls = {
        "forward-laplacian": ("laplacian", lambda: hessians.laplacian(net, x)),
        "hessian-trace": ("laplacian", lambda: hessians.laplacian(net, x, "hessian-trace")),
        "func trace(hessian)": (
            "laplacian",
            lambda: vmap(func_hessian(net))(x).diagonal(dim1=-2, dim2=-1).sum(-1),
        ),
    }
    for mode in hessians.HESSIAN_MODES[:-1]:
        calls[f"hessian {mode}"] = ("hessian", lambda mode=mode: hessians.hessian(net, x, mode))
    calls["func hessian"] = ("hessian", lambda: vmap(func_hessian(net))(x))
    if methods._jax_available():
        import jax.numpy as jnp

        def trace(f):
            import jax

            return lambda xs: jnp.trace(jax.hessian(f)(xs), axis1=-2, axis2=-1)

        calls["jax trace(hessian)"] = ("laplacian", methods._build_jax(trace, net, x))
        calls["jax hessian"] = ("hessian", methods._build_jax("hessian", net, x))
    return calls


def check(net: MLP, x: torch.Tensor, name: str, operator: str, call) -> None:
    reference = hessians.reference_hessian(net.to(dtype=torch.float64), x.double())
    if operator == "laplacian":
        reference = reference.diagonal(dim1=-2, dim2=-1).sum(-1)
    result = call()
    if isinstance(result, torch.Tensor):
        got = result.double()
    else:  # a JAX array
        got = torch.tensor(np.asarray(result), dtype=torch.float64)
    error = ((got - reference).abs().max() / reference.abs().max()).item()
    if not error < 1e-4:
        sys.exit(f"{name} is wrong: relative error {error:.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, short timings")
    args = parser.parse_args()
    tuning.keep_freed_memory()  # as every timing entry point of jacbench does
    shapes = [(3, 2, 16, 1, 64)] if args.quick else SHAPES
    min_time = 0.05 if args.quick else 1.0
    print(
        f"Machine: {cpu_model()}, {torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"jacbench {jacbench.__version__}, Python {platform.python_version()}; float32; "
        f"median of `torch.utils.benchmark` blocks, min_time {min_time} s.\n"
    )
    print("| shape | operator | method | median | × best of operator |")
    print("|---|---|---|---:|---:|")
    for depth, d_in, width, d_out, batch in shapes:
        net = jacbench.make_mlp(depth=depth, d_in=d_in, width=width, d_out=d_out)
        x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(1))
        timed = {}
        for name, (operator, call) in candidates(net, x).items():
            check(net, x, name, operator, call)
            timer = benchmark.Timer("call()", globals={"call": call})
            timed[name] = (operator, timer.blocked_autorange(min_run_time=min_time).median)
        best = {}
        for operator, seconds in timed.values():
            best[operator] = min(best.get(operator, seconds), seconds)
        label = f"L={depth} D={d_in} K={width} P={d_out} B={batch}"
        for name, (operator, seconds) in sorted(
            timed.items(), key=lambda t: t[1][0] != "laplacian"
        ):
            ratio = seconds / best[operator]
            print(f"| {label} | {operator} | {name} | {seconds * 1e3:.2f} ms | {ratio:.2f} |")


if __name__ == "__main__":
    main()
