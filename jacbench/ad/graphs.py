"""CUDA graphs: a function of one tensor captured once per input shape, then replayed.

NOTE: [CUDA graphs for launch-bound Jacobians]
    On a GPU the Jacobians jacbench measures are launch-bound: L layers take about 4L
    kernels (a product and σ per primal step, a product and a scaling per tangent or adjoint
    step), each eager launch from Python costs microseconds (about 11 µs on the H200 of
    results/cuda-*), and a 1000-wide layer's arithmetic takes about one. A CUDA graph
    records the kernels of one call with their arguments and replays them all with one
    launch. It is bound to the memory it was captured on: the caller's input is copied into
    the graph's own input and the result copied out of its output (two kernels), so a
    replayed call answers like an eager one, with a tensor of its own. The graph reads the
    weights where they lie, so changing a weight in place is seen by the next replay; a
    weight moved to new memory (``tensor.data = …``) is not, which is why a
    ``CapturedCall`` made for a network records where its tensors lie and
    ``jacobian(mode="auto")`` captures again when they move.

    Capture needs a plain tensor on a CUDA device, no autograd history to record, and no
    capture or ``torch.compile`` trace already under way (``capturable``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from jacbench.kernels.eager import layout, plain_eager

# Untimed calls before a capture, on a side stream: lazy initialisation and library
# workspaces must not happen inside the capture.
WARMUP_CALLS = 3


class CapturedCall:
    """``fn`` captured as a CUDA graph for inputs shaped like ``example``.

    Calling it copies x into the graph's input, replays the graph and returns a copy of
    its output: a tensor of the caller's own, as ``fn(x)`` would. ``replay`` skips both
    copies: it computes from whatever ``input`` holds and returns ``output``,
    which the next replay overwrites. ``watched`` tensors (a network's weights) are
    recorded by layout: ``current`` says whether they still lie where, and as, they did.
    """

    def __init__(
        self, fn: Callable[[Tensor], Tensor], example: Tensor, watched: Sequence[Tensor] = ()
    ) -> None:
        if example.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device (--device cuda)")
        start = time.perf_counter()
        device = example.device
        self.input = example.detach().clone()
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                fn(self.input)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = fn(self.input)
        torch.cuda.synchronize(device)
        self.capture_s = time.perf_counter() - start
        self._watched = tuple(watched)
        self._layout = layout(self._watched)

    @property
    def current(self) -> bool:
        """Whether every watched tensor still lies where, and as, it did at capture: the
        same address, shape, strides and dtype (``eager.layout``)."""
        return layout(self._watched) == self._layout

    def replay(self) -> Tensor:
        """Replay on ``input``; returns ``output`` (overwritten by the next replay)."""
        self.graph.replay()
        return self.output

    def __call__(self, x: Tensor) -> Tensor:
        if x.shape != self.input.shape or x.dtype != self.input.dtype:
            raise ValueError(
                f"this graph was captured for inputs of shape {tuple(self.input.shape)} and "
                f"{self.input.dtype}, got {tuple(x.shape)} and {x.dtype}"
            )
        self.input.copy_(x)
        self.graph.replay()
        return self.output.clone()


def capturable(x: Tensor, *tensors: Tensor | None) -> bool:
    """Whether a call on x (and ``tensors``, a network's weights) can be captured now.

    A plain tensor on a CUDA device, no gradient to record (autograd cannot run through a
    replay), and no capture or ``torch.compile`` trace already under way.
    """
    if not x.is_cuda or not plain_eager(x):
        return False
    if torch.is_grad_enabled() and (
        x.requires_grad or any(t is not None and t.requires_grad for t in tensors)
    ):
        return False
    return not torch.cuda.is_current_stream_capturing()
