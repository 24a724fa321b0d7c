"""Routines that misbehave in every way a run, a check or a grade must survive.

Loaded by the tests through specs (``tests/hostile_routines.py:name``), as a user's file is.
"""

import ctypes
import os
import sys
import time

import torch

from jacbench import jacobian_reverse


def forever(net, x):
    while True:
        time.sleep(0.01)


def exits(net, x):
    sys.exit(0)


def hard_exit(net, x):
    os._exit(3)


def segfault(net, x):
    ctypes.string_at(0)


def interrupts(net, x):
    raise KeyboardInterrupt


def mutates_and_sets_threads(net, x):
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    jac = jacobian_reverse(net, x)
    x.mul_(2)
    return jac


def returns_a_list(net, x):
    return jacobian_reverse(net, x).tolist()


def textbook_forever(x, L, param_dict):
    while True:
        time.sleep(0.01)


class RunsCodeWhenUnpickled:
    """A reply that would run a command in whoever unpickled it."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/jacbench-forged",))


def forged_reply(net=None, x=None):
    return RunsCodeWhenUnpickled()


def _own_pipe():
    import gc
    from multiprocessing.connection import Connection

    return next(o for o in gc.get_objects() if isinstance(o, Connection))


def half_a_reply(net=None, x=None):
    """A reply's header saying 1000 bytes follow, one byte, then nothing."""
    import struct

    os.write(_own_pipe().fileno(), struct.pack("!i", 1000) + b"x")
    time.sleep(3600)


def a_million_lists(net=None, x=None):
    """A small reply that unpickles into a million lists (at scale: a memory bomb)."""
    import struct

    data = b"\x80\x04(" + b"]" * 1_000_000 + b"l."
    os.write(_own_pipe().fileno(), struct.pack("!i", len(data)) + data)
    time.sleep(3600)


# ---------------------------------------------------------------- tricks against the verdict
def patches_jacrev(net, x):
    """Makes torch.func.jacrev (the reference, where it shares a process) return zeros."""
    import torch.func

    torch.func.jacrev = lambda f, *a, **k: lambda *args: torch.zeros(net.d_out, net.d_in)
    return torch.zeros(net.d_out, net.d_in, dtype=x.dtype)


_CALLS = {"n": 0}


def right_twice_then_empty(net, x):
    _CALLS["n"] += 1
    if _CALLS["n"] <= 3:  # the batch probe, the first call and the check: all right
        return jacobian_reverse(net, x)
    return torch.empty(net.d_out, net.d_in, dtype=x.dtype)


_MEMO: dict = {}


def memo_by_id(net, x):
    key = id(x)
    if key not in _MEMO:
        _MEMO[key] = jacobian_reverse(net, x)
    return _MEMO[key]


class Agreeable(torch.Tensor):
    """A tensor whose differences are always zero."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.sub, torch.sub, torch.Tensor.__sub__):
            return torch.zeros(())
        return super().__torch_function__(func, types, args, kwargs or {})


def lying_subclass(net, x):
    return torch.zeros(net.d_out, net.d_in, dtype=x.dtype).as_subclass(Agreeable)


def complex_result(net, x):
    return jacobian_reverse(net, x) + 1j * torch.ones(net.d_out, net.d_in, dtype=x.dtype)


def float64_answer(net, x):
    return jacobian_reverse(net.to(dtype=torch.float64), x.to(torch.float64))


def reads_the_callers_reference(net, x):
    """Walks the stack for a variable named like a reference and returns it."""
    frame = sys._getframe(1)
    while frame is not None:
        for name in ("reference", "ref", "expected"):
            value = frame.f_locals.get(name)
            if isinstance(value, torch.Tensor):
                return value
        frame = frame.f_back
    return torch.zeros(net.d_out, net.d_in, dtype=x.dtype)


def slow_calls(net, x):
    """A third of a second a call, every call: within a one-second timeout each time."""
    time.sleep(0.3)
    return jacobian_reverse(net, x)


def _patch_the_bench_to_report_its_own_times():
    """Replace, in its own process, the code that times it and keeps its results: every
    clock there reads a microsecond per call."""
    from jacbench.measure import timing
    from jacbench.runs import bench

    def measured(*args, **kwargs):
        return timing.Measurement(tuple(1e-6 for _ in range(30)))

    timing.measure = measured
    timing.sized_blocks = lambda *args, **kwargs: tuple(1e-6 for _ in range(30))
    bench.Bench.measure = lambda self, *args, **kwargs: measured()


def forges_its_timing(net, x):
    """Right, two milliseconds a call, and every clock in its process made to say 1 µs."""
    if not getattr(forges_its_timing, "patched", False):
        _patch_the_bench_to_report_its_own_times()
        forges_its_timing.patched = True
    time.sleep(0.002)
    return jacobian_reverse(net, x)


def commits_then_swaps(net, x):
    """Idle when timed (zeros committed to), then right for the calls picked for checking."""
    if not getattr(commits_then_swaps, "patched", False):
        from jacbench.runs import bench
        from jacbench.runs.plain import digest, plain_of

        def timed_block(self, handle, name, seed, calls):
            self._ensure(handle, name)
            self._seed_and_calls = (seed, calls)
            zero = plain_of(torch.zeros(net.d_out, x.shape[-1], dtype=x.dtype))
            return tuple(digest(zero) for _ in range(calls))

        def block_results(self, indices):
            seed, calls = self._seed_and_calls
            draws = bench.block_draws(self.point, seed, calls)
            zero = digest(plain_of(torch.zeros(net.d_out, x.shape[-1], dtype=x.dtype)))
            found = {}
            for i in indices:  # the inputs as the parent draws them from the zeros' digests
                xi = bench.chained_input(draws[i], zero if i > 0 else b"")
                found[i] = plain_of(jacobian_reverse(self.net, xi))
            return found

        bench.Bench.timed_block = timed_block
        bench.Bench.block_results = block_results
        commits_then_swaps.patched = True
    return jacobian_reverse(net, x)


def stalls_when_asked_for_picks(net, x):
    """Right, and slow to hand over the results picked for checking: it holds the grade."""
    if not getattr(stalls_when_asked_for_picks, "patched", False):
        from jacbench.runs import bench

        answer = bench.Bench.block_results

        def block_results(self, indices):
            time.sleep(60)
            return answer(self, indices)

        bench.Bench.block_results = block_results
        stalls_when_asked_for_picks.patched = True
    return jacobian_reverse(net, x)
