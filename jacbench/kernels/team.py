"""The calling thread's team: torch's operations on one thread for the length of a call,
without changing how many threads any other Python thread of the process gets.

NOTE: [One thread for this call only]
    ``torch.set_num_threads`` changes two settings of the calling thread (OpenMP's thread
    count, kept per thread, and MKL's thread-local one) and one of the process: the count
    each Python thread takes on its first parallel operation. A small Jacobian that dropped
    to one thread that way (NOTE: [One thread for small problems]) and restored the count
    after left any Python thread that began its torch work meanwhile on one thread for good:
    three threads computing L=3 D=8 K=32 P=4 Jacobians beside a fourth that started, the
    fourth read ``torch.get_num_threads()`` = 1 in one run of two. ``one_thread`` sets the
    calling thread's two settings only, through the OpenMP runtime and the MKL that torch
    loaded (``omp_set_num_threads``, ``MKL_Set_Num_Threads_Local``), and puts them back;
    the C++ chains take their team as an argument instead. Its four calls through ctypes
    cost about 1 µs where ``torch.set_num_threads`` twice costs 0.25 µs (AMD EPYC), on the
    path that runs torch's own operations (tens of microseconds at least); leaving MKL at
    two threads there instead made small batches 1.2× slower. Where torch was built
    without OpenMP, or the symbols are not found, it falls back to ``torch.set_num_threads``.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class one_thread:  # noqa: N801 (a context manager, used as a function: ``with one_thread():``)
    """torch's operations in this Python thread on one thread inside the block, as many as
    before after it, whatever happens inside; other Python threads keep theirs. A class,
    not a generator: its enter and exit cost 1 µs less, on calls of tens of microseconds."""

    __slots__ = ("threads", "mkl_before", "setters")

    def __enter__(self) -> None:
        self.threads = threads = torch.get_num_threads()  # also settles this thread's count
        if threads == 1:
            return
        self.setters = setters = _thread_setters()
        if setters is None:
            torch.set_num_threads(1)
            return
        set_openmp, set_mkl = setters
        set_openmp(1)
        self.mkl_before = set_mkl(1) if set_mkl is not None else 0

    def __exit__(self, *exception: object) -> None:
        threads = self.threads
        if threads == 1:
            return
        if self.setters is None:
            torch.set_num_threads(threads)
            return
        set_openmp, set_mkl = self.setters
        set_openmp(threads)
        if set_mkl is not None:
            set_mkl(self.mkl_before)  # 0: MKL follows OpenMP's count again


_Setter = Callable[[int], Any]  # ctypes functions: None (OpenMP) or the count before (MKL)


@functools.cache
def _thread_setters() -> tuple[_Setter, _Setter | None] | None:
    """OpenMP's and MKL's per-thread count setters (MKL's None where torch has no MKL), or
    None where torch's runtime does not show them."""
    if not torch.backends.openmp.is_available():
        return None
    suffix = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    path = Path(torch.__file__).parent / "lib" / f"libtorch_cpu{suffix}"
    try:
        library = ctypes.CDLL(str(path))  # already loaded: its symbols and its runtimes'
        set_openmp = library.omp_set_num_threads
        set_mkl = library.MKL_Set_Num_Threads_Local if torch.backends.mkl.is_available() else None
    except (OSError, AttributeError):
        return None
    # Both take one C int, as ctypes passes a Python int; no argtypes (0.3 µs a call less).
    set_openmp.restype = None
    if set_mkl is not None:
        set_mkl.restype = ctypes.c_int
    return set_openmp, set_mkl
