"""jacbench's own matrix-vector kernels, in C++, built on first use with the machine's compiler.

``rows_times`` (a few rows times a weight, G·W, or times a weight's transpose, X·Wᵀ) is
one narrow-product kernel of ``jacbench.kernels.products`` (``native``): the tuning times it
beside torch's, and the routines run it only where it was measured faster on this machine.
``available`` says whether it can run here (a compiler, OpenMP in torch, a build that
loads), ``why_not`` why not.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from jacbench.kernels.eager import unwatched

# NOTE: [jacbench's own matrix-vector kernels]
#     A few vectors through a wide weight (the seed problem's chain: P = 1 reverse mode,
#     every primal step of one input; forward mode's D = 3 tangents) read the weight once
#     and do two FLOPs per element and vector: their speed is the speed at which the cores
#     read W. torch's CPU BLAS (MKL) runs them on one thread, on some CPUs at a fraction of
#     that; the split kernel (NOTE: [Narrow products on all cores]) spreads them over the
#     threads through one bmm. Measured on an AMD EPYC (two cores of a shared VM, one
#     process, per product): a 1000 × 1000 weight and one vector from L3, torch.mv 69 µs,
#     split 45 µs (W·x) and 49 µs (g·W), this C++ kernel 29 and 28 µs; from memory (24
#     weights in turn), split 156/146 µs, this kernel 127/137 µs (the read rate, 32 GB/s);
#     3 rows through 600 × 600 weights in cache, MKL's rows 91/87 µs, split 51/51, this
#     kernel 34/22. The seed chain (L = 3, forward and back) went from 356 µs (auto) to
#     288 µs; JAX took 293–320 µs in the same process. NumPy's OpenBLAS is as fast from L3,
#     but its own thread pool spins after each call and stalls torch's for ~50 ms
#     (docs/runs.md, "On an AMD EPYC"); this kernel opens its parallel region in the OpenMP
#     runtime torch loaded (a library that needs libgomp gets the one already in the
#     process), so it runs on torch's pool and obeys torch.set_num_threads.
#
#     A weight streams fastest read as few long runs of memory as the work allows: one
#     vector's X·Wᵀ reads W row after row, and the reverse chain's G·W for one output reads
#     the rows' two halves side by side, where neighbouring rows a pass are as many streams
#     a page long, which the CPU's prefetchers lose at every row (on the AMD EPYC the seed
#     chain took 0.92 / 0.81 / 0.66 of that way's time at L = 3 / 5 / 10; the comments in
#     native_narrow.cpp have the measurements and where it does not pay).
#
#     It is plain C++ with the compiler's 64-byte vector type (no intrinsics), built with
#     -march=native: AVX-512 where the CPU has it, AVX2 or NEON where not; each row count
#     1–15 is its own instantiation, its accumulators in registers. The build (about five
#     seconds with g++) is named by a hash of the source, the flags, the compiler and the
#     CPU, so a cache shared between machines (a cluster's home directory) keeps one per
#     CPU. It is called through ctypes (about 2 µs a call, 5% of a 1000-wide product): a
#     torch extension would save a microsecond but take 25 s and ninja to build.
SOURCE = Path(__file__).with_name("native_narrow.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
MAX_ROWS = 15  # the kernels' rows: a narrow block has fewer than 16
BUILD_TIMEOUT_S = 120


def cache_dir() -> Path:
    """jacbench's cache: ``$JACBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/jacbench`` or
    ``~/.cache/jacbench`` (the tuning's cache file and the built kernels)."""
    root = os.environ.get("JACBENCH_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "jacbench"


def compiler() -> str | None:
    """The C++ compiler: ``$CXX``, else ``c++``, ``g++`` or ``clang++`` on the PATH."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's model and feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(keep)}))


def _library_path(cxx: str) -> Path:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    key = hashlib.sha256(
        "\n".join((SOURCE.read_text(), " ".join(FLAGS), version.stdout, _cpu_signature())).encode()
    ).hexdigest()[:16]
    return cache_dir() / "native" / f"narrow-{key}.so"


def _build(cxx: str, target: Path) -> None:
    """Compile SOURCE into ``target`` through a temporary file renamed over it, so that two
    processes building at once each leave a whole library and a reader never sees half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [cxx, *FLAGS, str(SOURCE), "-o", tmp],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            raise RuntimeError(f"{cxx} failed: {lines[0] if lines else done.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _library() -> dict[tuple[str, torch.dtype], Callable[..., int]] | str:
    """The built library's functions by (product, dtype), or why there are none (one line)."""
    if not torch.backends.openmp.is_available():
        return "torch was built without OpenMP, whose thread pool the kernels share"
    cxx = compiler()
    if cxx is None:
        return "no C++ compiler (set CXX, or install g++ or clang++)"
    try:
        path = _library_path(cxx)
        if not path.is_file():
            _build(cxx, path)
        library = ctypes.CDLL(str(path))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        return f"the C++ kernels did not build: {error}"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    functions = {}
    for dtype, suffix in DTYPES.items():
        for name in ("rows_times_transposed", "rows_times_weight"):
            function = getattr(library, f"jb_{name}_{suffix}")
            function.argtypes = (pointer, pointer, pointer, size, size, size)
            function.restype = ctypes.c_int
            functions[(name, dtype)] = function
    # The chains: (L, W, biases, widths, x, W_F, P, out, threads)
    for name in ("reverse_chain", "forward_chain"):
        chain = getattr(library, f"jb_{name}_f32")
        chain.argtypes = (
            size, pointer, pointer, pointer, pointer, pointer, size, pointer, ctypes.c_int
        )  # fmt: skip
        chain.restype = ctypes.c_int
        functions[(name, torch.float32)] = chain
    tanh = library.jb_tanh_f32
    tanh.argtypes, tanh.restype = (pointer, size), None
    functions[("tanh", torch.float32)] = tanh
    return functions


def available() -> bool:
    """Whether the kernels run here (the first call builds them: about five seconds)."""
    return not isinstance(_library(), str)


def why_not() -> str:
    """Why the kernels do not run here ("" where they do)."""
    library = _library()
    return library if isinstance(library, str) else ""


def fits(rows: Tensor, matrix: Tensor) -> bool:
    """Whether the kernels can take ``rows @ matrix`` as they are: a contiguous block of 1 to
    MAX_ROWS rows (m, k) times a (k, n) matrix that is a row-major weight W (G·W) or the
    transpose of one (X·Wᵀ), plain CPU tensors of one supported dtype, and nothing watching
    torch's operations that would not see the kernels' (autograd, torch.func, torch.compile,
    a dispatch mode such as torch's FLOP counter)."""
    return _kernel(rows, matrix) is not None


def rows_times(rows: Tensor, matrix: Tensor) -> Tensor | None:
    """rows (m, k) @ matrix (k, n) → (m, n) by the kernels, None where they cannot take it
    (``fits``): G·W summed over W's rows, X·Wᵀ as each row of W dotted with X's. The checks
    run once and no view is made: on a 700-wide product each microsecond is 5%."""
    kernel = _kernel(rows, matrix)
    if kernel is None:
        return None
    m, (k, n) = rows.shape[0], matrix.shape
    out = torch.empty((m, n), dtype=rows.dtype)
    if kernel(matrix.data_ptr(), rows.data_ptr(), out.data_ptr(), m, k, n):
        raise MemoryError(f"no memory for the partial rows of a {m}-row product with {k}×{n}")
    return out


def _kernel(rows: Tensor, matrix: Tensor) -> Callable[..., int] | None:
    """The kernel that computes ``rows @ matrix`` for rows (m, k), called as (W, rows, out,
    m, k, n), or None where none can (``fits``). Each check is a tenth of a microsecond of
    Python on a product of twenty: the fewest attribute reads, the most decisive first."""
    if not unwatched(rows, matrix):
        return None
    if (rows.requires_grad or matrix.requires_grad) and torch.is_grad_enabled():
        return None
    shape, k = rows.shape, matrix.shape[0] if matrix.ndim == 2 else -1
    if len(shape) != 2 or shape[1] != k or not 1 <= shape[0] <= MAX_ROWS:
        return None
    if k == 0 or matrix.shape[1] == 0:  # nothing to read: torch's empty product
        return None
    if not (rows.is_cpu and matrix.is_cpu and rows.is_contiguous()):
        return None
    functions = _library()
    if isinstance(functions, str) or matrix.dtype != rows.dtype:
        return None
    if matrix.is_contiguous():  # G·W: W is (k, n)
        return functions.get(("rows_times_weight", rows.dtype))
    if matrix.stride() == (1, k):  # X·Wᵀ for W (n, k)
        return functions.get(("rows_times_transposed", rows.dtype))
    return None


def tanh_(z: Tensor) -> Tensor | None:
    """tanh(z) in place by the C++ kernels' rational tanh (within 4e-7 of tanh, float32),
    one vectorised pass over the threads: a tuning candidate beside torch.tanh and the
    sigmoid form (torch.tanh ran at 1.7 ns an element on an AMD EPYC). None, z untouched,
    where it cannot take z: not a plain contiguous float32 CPU tensor, tracked, or watched."""
    if z.dtype != torch.float32 or not (z.is_cpu and z.is_contiguous()) or not unwatched(z):
        return None
    if z.requires_grad and torch.is_grad_enabled():
        return None
    functions = _library()
    if isinstance(functions, str):
        return None
    functions[("tanh", torch.float32)](z.data_ptr(), z.numel())
    return z


# NOTE: [The reverse chain in one call]
#     One input through a tanh network in reverse mode is 2L narrow products and 2L
#     elementwise passes (tanh on the way up, σ' on the way down), each a call from Python,
#     a torch dispatch or a ctypes call, and each opening the thread pool's parallel region
#     anew. ``Chain.reverse`` runs all of it as one C++ call in one parallel region (and
#     ``Chain.forward`` forward mode, the primal row stacked on the D tangents): each
#     thread takes the tanh of the rows of W_k·h it has just computed (no pass of its own),
#     reads σ' = 1 − h² with the adjoint it multiplies (no pass of its own), and the threads
#     meet at a barrier between layers instead of a fork and a join. The products are the
#     narrow kernels' own (``rows_times``); tanh is the rational form XLA uses for float32
#     (within 4e-7 of tanh). Float32 tanh networks only, P ≤ MAX_ROWS outputs; the routines
#     take it where the tuning chose the C++ kernels for every product of the chain, and
#     for a small network (every weight under the tuned size) where the tuning chose it as
#     the route (``small_routes``: against torch and NumPy, on one thread). With a team of
#     one the threads' barriers are skipped: libgomp's costs ~0.3 µs even then, 3L of them
#     7 of a 24 µs call at L=8 K=24 P=6 (AMD EPYC); that call on one thread took 4.9 µs in
#     C++, 17–18 µs through ``jacobian`` (the NumPy route 34–37 µs, JAX's jit(jacrev) 27–64).
@dataclass(frozen=True)
class Chain:
    """A float32 tanh network as the chain kernels take it, made once per network
    (``chain``): its tensors (checked again at each call: autograd or a dispatch mode may
    watch them by then), views of them as they were (which keep that memory alive), and
    the C++ arguments that point at it. The MLP that owns the chain makes a new one where a
    tensor is given other memory or layout (NOTE: [A network's derived parts follow its
    tensors])."""

    tensors: tuple[Tensor, ...]
    kept: tuple[Tensor, ...]  # the tensors' memory when the chain was made: the pointers'
    inputs: int  # D
    outputs: int  # P
    hidden: int  # L
    args: tuple  # weight pointers, bias pointers (or None), widths
    functions: dict

    def reverse(self, x: Tensor, threads: int = 0) -> Tensor | None:
        """J (P, D) at one input x by reverse mode in one call, on ``threads`` threads (0:
        as many as torch's operations in this thread split over); None where the kernel
        does not take it (P > MAX_ROWS, or x and the tensors not plain float32 CPU ones
        now)."""
        if self.outputs > MAX_ROWS or not self._takes(x):
            return None
        return self._run("reverse_chain", x, (self.outputs, self.inputs), threads)

    def forward(self, x: Tensor, threads: int = 0) -> Tensor | None:
        """J (P, D) by forward mode, the primal row stacked on the D < MAX_ROWS tangents,
        as the transpose of a (D, P) tensor (as forward mode's rows give it); None where
        the kernel does not take it. ``threads`` as for ``reverse``."""
        if self.inputs >= MAX_ROWS or not self._takes(x):
            return None
        return self._run("forward_chain", x, (self.inputs, self.outputs), threads).T

    def _run(self, name: str, x: Tensor, shape: tuple[int, int], threads: int) -> Tensor:
        out = torch.empty(shape, dtype=torch.float32)
        last = self.kept[self.hidden]
        code = self.functions[name](
            self.hidden,
            *self.args,
            x.data_ptr(),
            last.data_ptr(),
            self.outputs,
            out.data_ptr(),
            threads,
        )
        if code:
            raise MemoryError(f"no memory for the {name.replace('_', ' ')} of this network")
        return out

    def _takes(self, x: Tensor) -> bool:
        # The tensors were plain when the chain was made, and stay so; a dispatch mode, a
        # compile, x's wrapper or autograd's tracking may come and go from call to call.
        if x.ndim != 1 or x.shape[0] != self.inputs or x.dtype != torch.float32:
            return False
        if not (x.is_cpu and x.is_contiguous() and unwatched(x)):
            return False
        if not torch.is_grad_enabled():
            return True
        return not (x.requires_grad or any(t.requires_grad for t in self.tensors))


def chain(weights: Sequence[Tensor], biases: Sequence[Tensor | None]) -> Chain | None:
    """The network W_F·tanh(W_L ⋯ tanh(W_1·x + b_1) ⋯ + b_L) (``weights`` W_1 … W_F, the
    hidden layers' ``biases`` or None) for the chain kernels (NOTE: [The reverse chain in
    one call]); None where they cannot take it: not float32 contiguous CPU tensors, some
    hidden layers biased and some not, or no built kernels. The activation is the caller's
    to know: the kernels compute tanh."""
    *hidden, last = weights
    used = list(biases[: len(hidden)])
    if not hidden or any(b is not None for b in used) and any(b is None for b in used):
        return None  # a partly biased network: the per-product route
    tensors = (*weights, *(b for b in used if b is not None))
    if not all(t.dtype == torch.float32 and t.is_cpu and t.is_contiguous() for t in tensors):
        return None
    if not unwatched(*tensors):  # a transform's wrappers, a subclass, a compile's fakes
        return None
    widths = [hidden[0].shape[1] if hidden[0].ndim == 2 else 0, *(w.shape[0] for w in hidden)]
    if any(w.ndim != 2 or w.shape[1] != widths[k] for k, w in enumerate(hidden)):
        return None
    if last.ndim != 2 or last.shape[1] != widths[-1] or min(*widths, last.shape[0]) == 0:
        return None
    if any(b is not None and b.shape != (w.shape[0],) for b, w in zip(used, hidden)):
        return None
    functions = _library()
    if isinstance(functions, str):
        return None
    kept = tuple(t.detach() for t in tensors)  # the pointers below are into these
    count, pointer = len(hidden), ctypes.c_void_p
    kept_biases = kept[count + 1 :]  # (W_1 … W_L, W_F, b_1 … b_L), or no biases
    bias = (pointer * count)(*(b.data_ptr() for b in kept_biases)) if kept_biases else None
    args = (
        (pointer * count)(*(w.data_ptr() for w in kept[:count])),
        bias,
        (ctypes.c_int64 * (count + 1))(*widths),
    )
    chains = {name: functions[(name, torch.float32)] for name in ("reverse_chain", "forward_chain")}
    return Chain(tensors, kept, widths[0], last.shape[0], count, args, chains)
