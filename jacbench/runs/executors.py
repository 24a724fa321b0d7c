"""Executors: where a task's steps run, in this process or in a worker process.

The task pipeline (``jacbench.runs.tasks``) is written once. It opens a point's bench (the
network, the input and the reference, built where the methods will run) and calls its
steps: build a method, call it once, check it, time it. An executor hosts the bench and
runs each step: ``InProcess`` here, ``InWorker`` in the worker process (NOTE: [Workers] in
``jacbench.runs.workers``), one request per step, each with its own deadline. Deadlines, a
worker's death and its replacement are the executor's business; the steps know none of it.

Either way a step that fails raises ``StepFailed``, which says what happened as data: the
mistake (an exception, a crash, a timeout), and whether it was running out of memory or a
method declining the network (``UnsupportedNetwork``: the row is skipped, not failed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from jacbench.ad.networks import UnsupportedNetwork
from jacbench.measure.messages import first_line
from jacbench.measure.rows import Mistake
from jacbench.runs import sandbox, workers
from jacbench.runs.methods import Method

# What a user's code raising these means: it tried to end the process, not to fail a call.
_ENDING = ("SystemExit", "KeyboardInterrupt")


class StepFailed(Exception):
    """A step that did not return a result: ``mistake`` says why (RAISES, CRASH, TIMEOUT);
    ``oom`` when it ran out of memory, ``unsupported`` when the method declined the network
    (the message then is its reason)."""

    def __init__(
        self, message: str, mistake: Mistake, *, oom: bool = False, unsupported: bool = False
    ) -> None:
        super().__init__(message)
        self.mistake = mistake
        self.oom = oom
        self.unsupported = unsupported


@dataclass(frozen=True)
class Raised:
    """An exception a step raised, as data that crosses a pipe."""

    error_type: str
    first_line: str
    oom: bool = False
    unsupported: bool = False

    @classmethod
    def of(cls, error: BaseException) -> Raised:
        """What ``error`` was: its type's name, its first line, and what it means."""
        first = first_line(error)
        unsupported = isinstance(error, UnsupportedNetwork)
        return cls(type(error).__name__, first, is_oom(error), unsupported)

    def failure(self) -> StepFailed:
        """The step's failure, in the words a row shows."""
        if self.unsupported:
            return StepFailed(self.first_line, Mistake.RAISES, unsupported=True)
        said = f"{self.error_type}: {self.first_line}" if self.first_line else self.error_type
        if self.oom:
            return StepFailed(said[:300], Mistake.RAISES, oom=True)
        mistake = Mistake.CRASH if self.error_type in _ENDING else Mistake.RAISES
        return StepFailed(f"raised {said}"[:300], mistake)


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is running out of memory (CUDA's, or the CPU allocator's)."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


class Executor(Protocol):
    """Hosts one object (a point's bench) and runs its steps, each within a deadline."""

    def open(self, factory: Callable[..., Any], *args: Any, deadline: float) -> None:
        """Host ``factory(*args)`` (a module's class or function), replacing what was hosted."""

    def call(self, step: str, *args: Any, deadline: float) -> Any:
        """The hosted object's method ``step`` called with ``args``; its result."""

    def portable(self, method: Method) -> Method | str | bytes:
        """``method`` as the hosted object can receive it."""

    def close(self) -> None:
        """Let go of the hosted object."""


class InProcess:
    """Steps run in this process: no deadline can be kept here, and none is."""

    def __init__(self) -> None:
        self.hosted: Any = None

    def open(self, factory: Callable[..., Any], *args: Any, deadline: float) -> None:
        self.close()
        self.hosted = _run(factory, args)

    def call(self, step: str, *args: Any, deadline: float) -> Any:
        return _run(getattr(self.hosted, step), args)

    def portable(self, method: Method) -> Method | str | bytes:
        # A routine loaded for a worker, at a point that stays here (a lambda's model is
        # part of it), is loaded here too, by its reference.
        return method if method.ref is None else method.ref

    def close(self) -> None:
        closing, self.hosted = self.hosted, None
        if closing is not None and hasattr(closing, "close"):
            closing.close()


def _run(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    try:
        return function(*args)
    except (Exception, SystemExit) as error:  # a user's code may raise anything
        raise Raised.of(error).failure() from error


class InWorker:
    """Steps run in the owner's sandbox (NOTE: [Sandboxes]), each one request with a deadline.
    A worker that runs past a deadline is killed, one that dies is named by how; either way
    the next request starts a fresh one, where the hosted object is built again first."""

    def __init__(self, owner: sandbox.Owner) -> None:
        self.owner = owner
        self._opened: tuple[Callable[..., Any], tuple[Any, ...], float] | None = None
        self._worker: workers.Worker | None = None

    def open(self, factory: Callable[..., Any], *args: Any, deadline: float) -> None:
        self._opened = (factory, args, deadline)
        self._worker = sandbox.sandbox(self.owner).worker()
        self._request(_host, factory, args, deadline=deadline)

    def call(self, step: str, *args: Any, deadline: float) -> Any:
        if self._opened is not None and sandbox.sandbox(self.owner).worker() is not self._worker:
            factory, opened_with, limit = self._opened  # a fresh worker: host it again
            self.open(factory, *opened_with, deadline=limit)
        return self._request(_call_hosted, step, args, deadline=deadline)

    def portable(self, method: Method) -> str | bytes:
        return method.ref or method.name

    def close(self) -> None:
        if self._worker is not None and self._worker.alive:
            try:
                self._request(_host, None, (), deadline=workers.START_S)
            except StepFailed:
                pass  # a worker that is gone hosts nothing
        self._opened = self._worker = None

    def _request(self, function: Callable[..., Any], *args: Any, deadline: float) -> Any:
        try:
            outcome, value = sandbox.run(self.owner, function, *args, deadline=deadline)
        except workers.WorkerFailed as failure:
            raise StepFailed(str(failure), failure.mistake) from None
        if outcome == "raised" and isinstance(value, Raised):
            raise value.failure()
        if outcome != "ok":
            raise StepFailed("sent a reply jacbench does not read", Mistake.CRASH)
        return value


# ------------------------------------------------------------------------ in the worker
# The object the worker hosts for its parent (a point's bench), between requests.
_HOSTED: list[Any] = [None]


def _host(factory: Callable[..., Any] | None, args: tuple[Any, ...]) -> tuple[str, Any]:
    if _HOSTED[0] is not None and hasattr(_HOSTED[0], "close"):
        _HOSTED[0].close()
    _HOSTED[0] = None
    if factory is None:
        return "ok", None
    return _caught(factory, args, keep=True)


def _call_hosted(step: str, args: tuple[Any, ...]) -> tuple[str, Any]:
    if _HOSTED[0] is None:
        return "raised", Raised("RuntimeError", "the worker hosts no bench (it was replaced)")
    return _caught(getattr(_HOSTED[0], step), args)


def _caught(function: Callable[..., Any], args: tuple[Any, ...], keep: bool = False):
    try:
        value = function(*args)
    except BaseException as error:  # SystemExit, KeyboardInterrupt: the user's too
        return "raised", Raised.of(error)
    if keep:
        _HOSTED[0] = value
        return "ok", None
    return "ok", value
