"""Whether a call runs eagerly on a plain tensor, so that it may step outside torch's
dispatch: write into kept buffers (``jacbench.ad.workspace``), replay a CUDA graph
(``jacbench.ad.graphs``), compute in NumPy (``jacbench.kernels.small``) or in jacbench's
own C++ (``jacbench.kernels.native``).

A torch.func transform passes its own wrapper tensors (vmap's batched, grad's tracking),
a ``torch.compile`` trace passes fake ones, and a tensor subclass may redefine any op: each
must see torch's operations, so none of those shortcuts may be taken for them.

A form made once from plain tensors (a view, a NumPy array, a C++ pointer, a captured
graph) holds while each tensor keeps its ``layout``; ``backed`` says whether a tensor's
storage still holds what its shape reaches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Looked up once: the checks run on every product of a routine's hot path.
_functorch_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)


def is_wrapped(x: Tensor) -> bool:
    """A torch.func transform's wrapper (vmap's batched or grad's tracking tensor)."""
    return bool(_functorch_wrapped(x)) if _functorch_wrapped is not None else False


def plain_eager(x: Tensor) -> bool:
    """x is a plain ``Tensor`` (no subclass, no transform's wrapper) and no compile is
    tracing."""
    return type(x) is Tensor and not torch.compiler.is_compiling() and not is_wrapped(x)


def unwatched(*tensors: Tensor) -> bool:
    """``plain_eager`` for every one of ``tensors``, and no dispatch mode (a FLOP counter,
    fake tensors) on the stack: nothing would miss operations done outside torch. A plain
    loop: the kernels check this on every product."""
    if torch._C._len_torch_dispatch_stack() or torch.compiler.is_compiling():
        return False
    for x in tensors:
        if type(x) is not Tensor or is_wrapped(x):
            return False
    return True


def layout(tensors: Sequence[Tensor]) -> list[tuple] | None:
    """Each tensor's (address, shape, strides, dtype, whether autograd tracks it): what a
    form made from the tensors once (a view, a NumPy array, a C++ pointer, a captured CUDA
    graph) takes as given. None where a tensor has no memory of its own (a torch.func
    transform's wrapper: made and dropped within one transform, nothing to follow)."""
    try:
        return [(t.data_ptr(), t.shape, t.stride(), t.dtype, t.requires_grad) for t in tensors]
    except RuntimeError:
        return None


def backed(t: Tensor) -> bool:
    """Whether t's storage holds every element its shape and strides reach (a storage
    freed or shrunk under a tensor, as FSDP does, leaves the shape as it was)."""
    if t.numel() == 0:
        return True
    reach = t.storage_offset() + 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr() != 0 and t.untyped_storage().nbytes() >= reach * t.element_size()
