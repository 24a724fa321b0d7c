"""A method's result as plain data: what crosses from a worker to the parent.

Nothing a worker returns is trusted (NOTE: [Workers]). A result goes back as a
``PlainResult``: the name of its type, and, where it is a plain array (a ``torch.Tensor`` of
exactly that type, or an array of NumPy's or JAX's), its bytes, dtype, shape and device.
The parent rebuilds a tensor of its own from the bytes (``tensor_of``) and judges it there: a
Tensor subclass, whose operators could lie about a comparison, arrives as a name only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# torch's dtypes by the name a PlainResult gives them ("float32", "complex64", …).
DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.complex64,
        torch.complex128,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
    )
}


@dataclass(frozen=True)
class PlainResult:
    """A result as data: ``kind`` is its type's name; ``array`` whether it is a plain array
    (a ``torch.Tensor`` exactly, or an array of NumPy's or JAX's), and then its ``dtype``
    (torch's name), ``shape``, ``device`` and C-ordered ``data``."""

    kind: str
    array: bool = False
    subclass: bool = False  # a subclass of torch.Tensor: not judged by its own operators
    dtype: str = ""
    shape: tuple[int, ...] = ()
    device: str = ""
    data: bytes = b""


def plain_of(value: Any) -> PlainResult:
    """``value`` as plain data (in the process that made it)."""
    kind = type(value).__name__
    if type(value) is torch.Tensor:
        tensor = value.detach()
        cpu = tensor.to("cpu").contiguous()
        name = str(cpu.dtype).removeprefix("torch.")
        if name not in DTYPES:
            return PlainResult(kind)
        data = _bytes(cpu)
        return PlainResult(kind, True, False, name, tuple(cpu.shape), str(tensor.device), data)
    if isinstance(value, torch.Tensor):
        return PlainResult(kind, subclass=True)
    if value is not None and hasattr(value, "__array__") and hasattr(value, "shape"):
        try:
            tensor = tensor_of_array(value)
        except (TypeError, ValueError):  # an array of objects, strings, …
            return PlainResult(kind)
        name = str(tensor.dtype).removeprefix("torch.")
        if name not in DTYPES:
            return PlainResult(kind)
        return PlainResult(kind, True, False, name, tuple(tensor.shape), "cpu", _bytes(tensor))
    return PlainResult(kind)


def tensor_of_array(value: Any) -> torch.Tensor:
    """An array of NumPy's or JAX's as a tensor of its own memory (a copy: JAX's arrays are
    read-only, which torch warns of). bfloat16 (ml_dtypes', JAX's), which torch does not
    take from NumPy, goes exactly through float32.

    Raises:
        TypeError, ValueError: an array torch cannot hold (of objects, of strings).
    """
    array = np.array(value, copy=True, order="C")
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(array)


def _bytes(tensor: torch.Tensor) -> bytes:
    if tensor.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bits as int16
        return tensor.view(torch.int16).numpy().tobytes()
    return tensor.numpy().tobytes()


def tensor_of(result: PlainResult) -> torch.Tensor:
    """The parent's own tensor of a plain array's bytes (on the CPU).

    Raises:
        ValueError: the bytes do not make an array of that dtype and shape.
    """
    dtype = DTYPES.get(result.dtype)
    count = 1
    for size in result.shape:
        count *= int(size)
    if dtype is None or count * dtype.itemsize != len(result.data):
        raise ValueError(f"its {len(result.data)} bytes are no {result.dtype} {result.shape}")
    if count == 0:
        return torch.empty(result.shape, dtype=dtype)
    flat = torch.frombuffer(bytearray(result.data), dtype=dtype)
    return flat.reshape(result.shape)


def digest(result: PlainResult) -> bytes:
    """A digest of everything ``result`` says (what a sandbox commits to before it is asked
    for a timed result: NOTE: [Every timed call checked])."""
    said = hashlib.blake2b(digest_size=16)
    for part in (result.kind, result.dtype, repr(result.shape), result.device):
        said.update(part.encode() + b"\0")
    said.update(bytes([result.array, result.subclass]))
    said.update(result.data)
    return said.digest()
