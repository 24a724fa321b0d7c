"""Buffers reused from call to call: a routine's large intermediates, kept for its next call.

NOTE: [Buffers reused from call to call]
    PyTorch's CPU tensors come from malloc. glibc serves a block above its mmap threshold with
    fresh pages from the kernel and gives them back when it is freed, and it trims the top of
    its heap above a trim threshold; both thresholds move as the program runs. A routine whose
    intermediates are a megabyte each (a PINN batch's (B, K) activations and σ', the forward
    Laplacian's (D + 1, B, K) rows) can then pay a page fault for every 4 KB page on every call,
    in a plain Python process: on an AMD EPYC (two cores) the forward Laplacian made 4,500
    faults a call at L=5 D=2 K=96 B=2048 (12.6 ms) and 2,900 at L=6 D=2 K=64 B=4096 (13.5 ms);
    written into buffers kept from the call before, none (7.3 and 10.1 ms). ``jacbench run``
    hides this by fixing glibc's thresholds (``jacbench.measure.allocator.keep_freed_memory``),
    which changes the whole program: a library cannot ask that of its user. So the routines write
    their large intermediates into a ``Workspace`` kept per (routine, network, input shape,
    dtype, thread): after the first call a call allocates its result and little else. A result
    is never one of the buffers. What a step uses once (a sweep's product and its scaling, a
    layer's seeds) takes one of two buffers in turn, or is scaled in place, so that it lands in
    memory the cores' caches still hold, as a fresh allocation's would: a buffer per layer was
    up to 20% slower in a long-running process, where fresh allocations no longer fault. In such
    a process (and in ``jacbench run``) the workspaces now cost 0–8% on the AMD EPYC (the
    Hessian at PINN shapes) or nothing; in a plain one they save up to 40%. A thread keeps the
    workspaces of its last ``WORKSPACES`` calls' shapes; a network's go with it. None is used
    where autograd records (``out=`` does not differentiate: x, a weight or a bias tracked),
    under ``torch.compile`` or a torch.func transform, or on a GPU, whose caching allocator
    already reuses memory. Inference mode has workspaces of its own: its buffers are
    inference tensors, which nothing outside it may write into.
"""

from __future__ import annotations

import collections
import threading
import weakref
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from jacbench.ad.networks import MLP
from jacbench.kernels.eager import plain_eager

WORKSPACES = 8  # per thread


class Workspace:
    """Named buffers of one routine for one network, input shape and dtype."""

    def __init__(self, like: Tensor) -> None:
        self.dtype, self.device = like.dtype, like.device
        self._buffers: dict[tuple[Hashable, tuple[int, ...]], Tensor] = {}
        self._ids: set[int] = set()

    def take(self, name: Hashable, shape: Sequence[int]) -> Tensor:
        """The buffer called ``name`` of ``shape``: what the last call left in it, or empty."""
        key = (name, tuple(shape))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = torch.empty(key[1], dtype=self.dtype, device=self.device)
            self._ids.add(id(buffer))
        return buffer

    def owns(self, tensor: Tensor) -> bool:
        """Whether ``tensor`` is one of the buffers (so the routine may overwrite it)."""
        return id(tensor) in self._ids


_KEPT: collections.OrderedDict[tuple, Workspace] = collections.OrderedDict()
_WATCHED: set[int] = set()  # networks with a finaliser that drops their workspaces
_LOCK = threading.Lock()


def records(net: MLP, *inputs: Tensor) -> bool:
    """Whether autograd records a call on ``inputs`` through ``net``: grad mode on, and one
    of them, a weight or a bias tracked (then nothing may be written with ``out=``)."""
    if not torch.is_grad_enabled():
        return False
    tensors = (*inputs, *net.weights, *(b for b in net.biases if b is not None))
    return any(t.requires_grad for t in tensors)


def workspace(routine: str, net: MLP, x: Tensor, *others: Tensor) -> Workspace | None:
    """The workspace of ``routine`` for (net, x), or None where none is used (autograd
    records: x, ``others`` (the call's other inputs), a weight or a bias tracked; a
    transform or a compile under way; a GPU)."""
    if not x.is_cpu or not plain_eager(x) or records(net, x, *others):
        return None
    thread = threading.get_ident()
    inference = torch.is_inference_mode_enabled()  # its buffers are inference tensors
    key = (routine, id(net), tuple(x.shape), x.dtype, inference, thread)
    with _LOCK:
        found = _KEPT.get(key)
        if found is None:
            found = _KEPT[key] = Workspace(x)
            if id(net) not in _WATCHED:
                _WATCHED.add(id(net))
                weakref.finalize(net, _forget, id(net))
            mine = [k for k in _KEPT if k[-1] == thread]
            for old in mine[: max(0, len(mine) - WORKSPACES)]:
                del _KEPT[old]
        _KEPT.move_to_end(key)
        return found


def release() -> None:
    """Drop every workspace (their memory goes back to the allocator)."""
    with _LOCK:
        _KEPT.clear()


def _forget(net_id: int) -> None:
    with _LOCK:
        _WATCHED.discard(net_id)
        for key in [k for k in _KEPT if k[1] == net_id]:
            del _KEPT[key]


def take(ws: Workspace | None, name: Hashable, shape: Sequence[int]) -> Tensor | None:
    """``ws.take(name, shape)``, or None without a workspace: an ``out=`` that allocates."""
    return None if ws is None else ws.take(name, shape)
