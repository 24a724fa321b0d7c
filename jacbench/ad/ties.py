"""Choices between whole routines where the cost model's counts tie or mislead: what the
tuning times on this machine, beside its kernels (``jacbench.measure.tuning.TIE_CLASSES``).

NOTE: [Ties measured, not assumed]
    Where two modes do the same FLOPs, or nearly, the counts cannot say which is faster, and
    the answer differs between CPUs. On two Xeon cores (MKL) forward mode on one input with
    D = P narrower than the layers was 17–21% faster than reverse mode at D = P = 1 and
    2–14% at 16–128 (results/cpu-crossover), and mixed mode 1–8% ahead of reverse mode on
    batched ties (results/cpu-peers); on two AMD EPYC cores mixed mode took 9.6 ms at
    L=7 D=3 K=64 P=2 B=4096 where reverse mode took 13.8 ms, and forward mode 6.29–6.38 ms
    at L=6 D=P=3 K=128 B=1024 where reverse took 6.80–6.83. And where the counts do not tie
    they can still mislead: the forward Laplacian does 43–51% fewer matmul FLOPs than the
    trace of the structured Hessian, and was faster at every PINN shape on the Xeon, but on
    the EPYC the trace won at K = 128 (9.11 against 10.4 ms at L=4 D=2 B=2048) and lost at
    K = 64. So each such choice is a class of the tuning: both routines timed on one
    representative shape, in the tuning's interleaved rounds and with its busy-machine check,
    held against the earlier tunings of the machine (NOTE: [A tie holds across tunings] in
    ``jacbench.measure.tuning.record``), and the plan (``cost.plan``,
    ``cost.plan_second_order``) follows the faster, naming the rule and the times. The
    defaults, where nothing was measured, are the fixed rules above.

NOTE: [One input's tie by width]
    One shape per class does not hold for one input at every width. On two AMD EPYC cores
    (one process, interleaved rounds), forward over reverse mode's time at D = P: K = 128
    (L = 8, D = 8) 1.48; K = 256 (L = 3) 1.18–1.20 at D = 4, 1.09 at 16, 1.04–1.06 at 64;
    K = 512 (L = 5) 0.76 at D = 4, 0.85 at 16, 0.97 at 64; K = 1000 (L = 3) 1.27 at D = 4,
    0.76 at 16. Reverse mode reads every weight twice: a 256-wide weight (256 KB) is still
    in the cores' L2 cache for the second read, a 512-wide one (1 MB) is not, and forward
    mode's one read of each weight pays. A tuning timed on K = 512 alone chose forward mode
    (592 against 627 µs) and the quick preset's two D = P shapes (K = 256) then ran 6–20%
    slower than reverse mode. So one input's tie is two classes, split at ONE_INPUT_WIDE,
    each timed on its own shape. The narrow class's default is reverse mode: the EPYC's
    figures above, and on an Intel Xeon reverse mode 1–24% ahead at D = 4 through K = 16–128
    (NOTE: [Launch-bound problems] in ``cost``); timed at D = P = 16, K = 256, reverse mode
    took 109 µs and forward mode 114 (one round of the tuning): not 5% apart, so the default
    stands where the two are that close.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from jacbench.ad.hessians import laplacian
from jacbench.ad.jacobians import jacobian_forward, jacobian_mixed, jacobian_reverse
from jacbench.ad.networks import MLP
from jacbench.measure.tuning import TIE_CLASSES

# The shape each class is timed on: (widths, batch). One input with D = P below the layers,
# narrow (the quick preset's K = 256) and wide (the crossover grid's K = 512); a PINN batch
# with D = P (the classes preset's, where forward mode ran 1–10% ahead of reverse on the
# EPYC); a PINN-like batch where mixed mode's bracketing ties with reverse mode; PINN
# Laplacians at the two widths the EPYC and the Xeon disagreed on.
SHAPES: dict[str, tuple[tuple[int, ...], int]] = {
    "tie one input narrow": ((16, 256, 256, 256, 16), 1),
    "tie one input wide": ((16, 512, 512, 512, 512, 512, 16), 1),
    "tie batch modes": ((3, *([128] * 6), 3), 1024),
    "tie batch": ((3, *([64] * 7), 2), 1024),
    "laplacian narrow": ((2, *([64] * 4), 1), 1024),
    "laplacian wide": ((2, *([128] * 4), 1), 1024),
}


def candidates() -> dict[str, dict[str, Callable[[], object]]]:
    """Per tie class, each candidate as a zero-argument call on the class's shape."""
    found: dict[str, dict[str, Callable[[], object]]] = {}
    generator = torch.Generator().manual_seed(0)
    for name, (widths, batch) in SHAPES.items():
        net = MLP.from_widths(widths, seed=0)
        shape = (widths[0],) if batch == 1 else (batch, widths[0])
        x = torch.randn(shape, generator=generator)
        calls: dict[str, Callable[[], object]]
        if set(TIE_CLASSES[name]) == {"forward", "reverse"}:  # the one-input and batch ties
            modes = {"forward": jacobian_forward, "reverse": jacobian_reverse}
            calls = {mode: functools.partial(modes[mode], net, x) for mode in TIE_CLASSES[name]}
        elif name == "tie batch":  # the batch's pure mode here is reverse (P < D)
            calls = {
                "pure": functools.partial(jacobian_reverse, net, x),
                "mixed": functools.partial(jacobian_mixed, net, x),
            }
        else:
            calls = {m: functools.partial(laplacian, net, x, m) for m in TIE_CLASSES[name]}
        assert set(calls) == set(TIE_CLASSES[name]), name
        found[name] = calls
    return found
