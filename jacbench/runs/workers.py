"""Worker processes: user code runs in a process of its own.

NOTE: [Workers]
    A user's routine may never return, call sys.exit or os._exit, crash the interpreter,
    raise KeyboardInterrupt, change its arguments in place or change torch's global state
    (threads, default dtype, grad mode). None of that may end, hang or skew a run, a check or
    a grade. So a routine is loaded, called and timed in a worker: a fresh interpreter
    (``spawn``: no fork of a process whose thread pools are running) that serves one request
    at a time over a pipe. The parent waits for each reply with a deadline (one request is
    one step of a task: building a method, one call of it, its check, its timing; the
    executor, ``jacbench.runs.executors``, sets each step's); past it the parent kills the
    worker and the task's row is a ``timeout``. A worker that dies is named by how (an exit
    code, a signal: "killed by SIGSEGV"); an exception the user's code raises, SystemExit
    and KeyboardInterrupt included, comes back as that exception's name and first line.
    Either way the next request gets a fresh worker and the run goes on.

    The worker ignores SIGINT and SIGTERM (a Ctrl-C or Slurm's time limit reaches the whole
    process group: the parent handles it and ends the worker) and dies with its parent. A
    point that has a user routine runs all its methods in the worker, so the comparison
    between them is made in one process (``jacbench.runs.tasks``).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from jacbench.measure.rows import Mistake

# Seconds a worker may take to start (import torch and jacbench) before it counts as hung.
START_S = 120.0
# How a request past its deadline is described: "did not return within 60 s".
TIMED_OUT = "did not return within"


class WorkerFailed(Exception):
    """A request the worker did not answer: it ran past its deadline (``timed_out``), died,
    or the code it ran raised (``error_type``: the exception's type name, ``error_text`` its
    first line)."""

    def __init__(
        self, message: str, *, timed_out: bool = False, error_type: str = "", error_text: str = ""
    ) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.error_type = error_type
        self.error_text = error_text

    @property
    def mistake(self) -> Mistake:
        """What the failure was, as a kind: a timeout, a crash (the process died, or the
        code asked it to end), or an exception."""
        if self.timed_out:
            return Mistake.TIMEOUT
        if self.error_type in ("", "SystemExit", "KeyboardInterrupt"):
            return Mistake.CRASH
        return Mistake.RAISES


class Worker:
    """One worker process and the pipe to it."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        with _main_not_imported():
            self._process.start()
        child.close()
        self._started = False

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self._process.is_alive()

    def call(self, function: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """``function(*args)`` in the worker (a module's function, picklable arguments).

        ``deadline``: seconds the function may take to return.

        Raises:
            WorkerFailed: past a deadline (the worker is killed), the worker died, or the
                function raised.
        """
        if not self._started:
            self._wait_ready()
        try:  # where the parent imports from and works: a spec is found there as here
            self._conn.send((function, args, list(sys.path), os.getcwd()))
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self._death()) from None
        try:
            ready = self._conn.poll(deadline)
            message = self._conn.recv() if ready else None
        except (EOFError, OSError):
            raise WorkerFailed(self._death()) from None
        if message is None:
            self.kill()
            raise WorkerFailed(f"{TIMED_OUT} {deadline:.3g} s", timed_out=True)
        kind, payload = message
        if kind == "result":
            return payload
        error_type, text = payload  # "raised": the exception's type name and first line
        said = f"{error_type}: {text}" if text else error_type
        raise WorkerFailed(f"raised {said}", error_type=error_type, error_text=text)

    def _wait_ready(self) -> None:
        """Wait for the worker to start serving (its interpreter, torch and jacbench loaded)."""
        try:
            ready = self._conn.poll(START_S)
            message = self._conn.recv() if ready else None
        except (EOFError, OSError):
            raise WorkerFailed(f"a worker process could not start: {self._death()}") from None
        if message != ("ready", None):
            self.kill()
            raise WorkerFailed(f"a worker process did not start within {START_S:g} s")
        self._started = True

    def _death(self) -> str:
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is None:
            self.kill()
            return "stopped answering"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def kill(self) -> None:
        """End the process now (SIGKILL) and wait for it."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        self._conn.close()

    def close(self) -> None:
        """Ask the process to end, then make sure it has."""
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=5)
        self.kill()


_SHARED: Worker | None = None


@contextlib.contextmanager
def _main_not_imported() -> Iterator[None]:
    """Start a process without importing the caller's ``__main__`` into it. ``spawn`` runs
    the main script again in the child (as ``__mp_main__``), so a script that calls
    ``jacbench.sweep`` at top level, without ``if __name__ == "__main__":``, would sweep again
    there. A worker needs nothing of ``__main__``: a function defined there is never sent to
    one (``routines.pickled``)."""
    main = sys.modules.get("__main__")
    hidden = {k: main.__dict__.pop(k) for k in ("__file__",) if main and k in main.__dict__}
    spec = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(hidden)
            main.__spec__ = spec


def shared() -> Worker:
    """The process's worker, started on first use and again after one has died."""
    global _SHARED
    if _SHARED is None or not _SHARED.alive:
        _SHARED = Worker()
    return _SHARED


def run(function: Callable[..., Any], *args: Any, deadline: float) -> Any:
    """``shared().call(...)``; a worker that fails is replaced for the next request."""
    worker = shared()
    try:
        return worker.call(function, *args, deadline=deadline)
    except WorkerFailed as failure:
        if not failure.error_type:
            worker.kill()
        raise


@atexit.register
def _close_shared() -> None:
    if _SHARED is not None:
        _SHARED.close()


# ------------------------------------------------------------------------ in the worker
def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    # The user's prints must not land in the parent's progress display: they go to stderr.
    sys.stdout = sys.stderr
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        function, args, path, cwd = request
        sys.path[:] = path
        if os.getcwd() != cwd:
            os.chdir(cwd)
        try:
            reply = ("result", function(*args))
        except BaseException as error:  # SystemExit, KeyboardInterrupt: the user's too
            reply = ("raised", (type(error).__name__, _first_line(error)))
        try:
            conn.send(reply)
        except Exception as error:  # a result pickle cannot carry
            said = f"its result could not be sent back: {describe(error)}"
            conn.send(("raised", ("PicklingError", said)))


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0]


def describe(error: BaseException) -> str:
    """An exception's name and first line: ``SystemExit: 0``."""
    first = _first_line(error)
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
