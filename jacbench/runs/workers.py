"""Workers: user code runs in a process of its own, one request at a time over a pipe.

NOTE: [Workers]
    A user's routine may never return, call sys.exit or os._exit, crash the interpreter,
    raise KeyboardInterrupt, change its arguments in place or change torch's global state
    (threads, default dtype, grad mode). None of that may end, hang or skew a run, a check or
    a grade. So user code is loaded, called and timed in a worker: a fresh interpreter,
    sealed for one owner (a sandbox: ``jacbench.runs.sandbox``), that serves one request at a
    time. The parent waits for each reply with a deadline (one request is one step of a task:
    building a method, one call of it, its timing; the executor, ``jacbench.runs.executors``,
    sets each step's); past it the parent kills the worker and the task's row is a
    ``timeout``. A worker that dies is named by how (an exit code, a signal: "killed by
    SIGSEGV"); an exception the user's code raises, SystemExit and KeyboardInterrupt included,
    comes back as that exception's type and first line. Either way the next request gets a
    fresh worker and the run goes on.

    Nothing a worker sends back is trusted: a reply is unpickled by ``load_reply``, which
    builds only plain values (numbers, strings, bytes, tuples, lists, dicts) and the few
    records of jacbench's listed in ``REPLY_TYPES`` (a measurement, a diagnosis, a result as
    bytes with its dtype and shape), never a tensor and never anything that runs code.
"""

from __future__ import annotations

import ctypes
import importlib
import io
import os
import pickle
import pickletools
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from jacbench.measure.messages import first_line
from jacbench.measure.rows import Mistake

# Seconds a worker may take to start (import torch and jacbench) before it counts as hung.
START_S = 120.0
# How a request past its deadline is described: "did not return within 60 s".
TIMED_OUT = "did not return within"
# The largest reply a worker may send: a result's bytes and little else.
MAX_REPLY_BYTES = 1 << 28
# A reply's pickle may hold this many opcodes at most: each can make an object of some 60
# bytes in jacbench's process (1 GiB of them made 64 GiB), and no honest reply needs more.
MAX_REPLY_OPS = 1 << 18
# A reply that has begun must arrive at this rate at least, after this many seconds.
REPLY_GRACE_S, REPLY_RATE = 10.0, 20e6
# What a reply may hold beyond plain values: jacbench's records, by module.
REPLY_TYPES: dict[str, frozenset[str]] = {
    "jacbench.measure.timing": frozenset({"Measurement"}),
    "jacbench.measure.rows": frozenset({"Mistake"}),
    "jacbench.runs.operators": frozenset({"Costs"}),
    "jacbench.runs.diagnosis": frozenset({"Diagnosis"}),
    "jacbench.runs.executors": frozenset({"Raised"}),
    "jacbench.runs.plain": frozenset({"PlainResult"}),
    "jacbench.ad.generic": frozenset({"GenericPlan", "Calibration"}),
}
_PLAIN_BUILTINS = frozenset(
    {"tuple", "list", "dict", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
     "bool", "complex", "NoneType"}
)  # fmt: skip


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


class _ReplyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _PLAIN_BUILTINS:
            return super().find_class(module, name)
        if name in REPLY_TYPES.get(module, ()):
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"a worker's reply may not hold {module}.{name}")


def load_reply(data: bytes) -> Any:
    """A reply as a worker sent it, built only from plain values and ``REPLY_TYPES``.

    Raises:
        pickle.UnpicklingError: the reply holds anything else.
    """
    ops = 0
    for _ in pickletools.genops(data):
        ops += 1
        if ops > MAX_REPLY_OPS:
            raise pickle.UnpicklingError(f"a worker's reply holds over {MAX_REPLY_OPS} objects")
    return _ReplyUnpickler(io.BytesIO(data)).load()


def _read_message(fd: int) -> bytes | None:
    """One message as ``multiprocessing.Connection`` frames it (a 4-byte size, or -1 and an
    8-byte one, then the bytes), read within ``REPLY_GRACE_S`` plus its size at
    ``REPLY_RATE``; None for one larger than ``MAX_REPLY_BYTES`` or not finished in time (a
    header alone, then nothing, held the reading forever).

    Raises:
        EOFError: the pipe closed.
    """
    until = time.monotonic() + REPLY_GRACE_S
    header = _read_exactly(fd, 4, until)
    if header is None:
        return None
    (size,) = struct.unpack("!i", header)
    if size == -1:
        header = _read_exactly(fd, 8, until)
        size = struct.unpack("!Q", header)[0] if header else MAX_REPLY_BYTES + 1
    if not 0 <= size <= MAX_REPLY_BYTES:
        return None
    return _read_exactly(fd, size, until + size / REPLY_RATE)


def _read_exactly(fd: int, size: int, until: float) -> bytes | None:
    """``size`` bytes from ``fd`` by ``until`` (monotonic), else None."""
    parts, got = [], 0
    while got < size:
        left = until - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class Worker:
    """One worker process and the pipe to it; ``process`` is what started it (a sandbox's
    launcher: its exit status is the worker's)."""

    def __init__(self, conn: Connection, process: subprocess.Popen) -> None:
        self._conn = conn
        self._process = process
        self._started = False

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        return self._process.poll() is None

    def call(self, function: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """``function(*args)`` in the worker (a module's function, picklable arguments).

        ``deadline``: seconds the function may take to return.

        Raises:
            WorkerFailed: past a deadline (the worker is killed), the worker died, the
                function raised, or its reply was not a plain one.
        """
        if not self._started:
            self._wait_ready()
        try:
            self._conn.send((function, args))
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self._death()) from None
        message = self._receive(deadline)
        if message is None:
            self.kill()
            raise WorkerFailed(f"{TIMED_OUT} {deadline:.3g} s", timed_out=True)
        kind, payload = message
        if kind == "result":
            return payload
        error_type, text = payload  # "raised": the exception's type name and first line
        said = f"{error_type}: {text}" if text else error_type
        raise WorkerFailed(f"raised {said}", error_type=str(error_type), error_text=str(text))

    def _receive(self, deadline: float) -> Any:
        try:
            if not self._conn.poll(deadline):
                return None
            data = _read_message(self._conn.fileno())
        except (EOFError, OSError):
            raise WorkerFailed(self._death()) from None
        if data is None:  # begun and not finished, or too large: the worker is not trusted
            self.kill()
            raise WorkerFailed("sent a reply jacbench does not read (too large, or cut short)")
        try:
            message = load_reply(data)
        except Exception as error:  # a forged or damaged reply: the worker is not trusted
            self.kill()
            raise WorkerFailed(f"sent a reply jacbench does not read ({error})") from None
        if not (isinstance(message, tuple) and len(message) == 2):
            self.kill()
            raise WorkerFailed("sent a reply jacbench does not read")
        return message

    def _wait_ready(self) -> None:
        """Wait for the worker to start serving (its interpreter, torch and jacbench loaded)."""
        message = self._receive(START_S)
        if message != ("ready", None):
            self.kill()
            raise WorkerFailed(f"a worker process did not start within {START_S:g} s")
        self._started = True

    def _death(self) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
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
        if self._process.poll() is None:
            self._process.kill()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._conn.close()

    @property
    def pid(self) -> int:
        """The launcher's process id."""
        return self._process.pid


# ------------------------------------------------------------------------ in the worker
def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(conn: Connection) -> None:
    """Answer the parent's requests until it closes the pipe (the worker's main loop)."""
    _die_with_parent()
    # The user's prints must not land in the parent's display: both streams are the
    # sandbox's captured output.
    sys.stdout = sys.stderr
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        function, args = request
        try:
            reply = ("result", function(*args))
        except BaseException as error:  # SystemExit, KeyboardInterrupt: the user's too
            reply = ("raised", (type(error).__name__, first_line(error)))
        try:
            conn.send(reply)
        except Exception as error:  # a result pickle cannot carry
            said = f"its result could not be sent back: {describe(error)}"
            conn.send(("raised", ("PicklingError", said)))


def describe(error: BaseException) -> str:
    """An exception's name and first line: ``SystemExit: 0``."""
    first = first_line(error)
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def serve_descriptor(fd: int) -> None:
    """The worker's entry point: serve on the pipe inherited as ``fd``."""
    serve(Connection(fd))
