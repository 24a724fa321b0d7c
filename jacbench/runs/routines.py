"""User routines: a Jacobian function of yours, measured like the built-in methods.

A routine is given as ``path/to/file.py:function``, ``package.module:function`` or, from
Python, as the callable itself. Two calling conventions, told apart by the signature:

- library style ``fn(net, x) -> J``: ``net`` a ``MLP``, x of shape
  (D,) → J (P, D). If the routine also takes a batch (B, D) → (B, P, D) it is called with
  the whole batch, otherwise once per sample: this is decided once, when it is loaded, by
  calling it on a small batch.
- textbook style ``fn(x, L, param_dict) -> J`` for one sample, given the depth L and
  ``net.param_dict()`` (``{"W1": (K, D), …, "WL", "WF": (P, K)}``); a batch is one call
  per sample.

Loading a file runs it: it is the user's code, imported as Python imports a module (its
folder joins ``sys.path``, so its own imports work). Nothing else in jacbench executes code
from disk. A routine named by a spec, or a function importable from a module other than
``__main__``, is loaded and called in a worker process (NOTE: [Workers] in
``jacbench.runs.workers``): the parent learns its name and convention there and never calls
it. A function it cannot send there (a lambda, a nested function, one defined in
``__main__``) runs in the caller's process, and its method's description says so.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import pickle
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jacbench.ad.networks import MLP
from jacbench.measure.messages import one_line
from jacbench.measure.rows import Mistake
from jacbench.runs import sandbox, workers
from jacbench.runs.methods import JacobianCall, Method, get_method
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT

LIBRARY = "library"
TEXTBOOK = "textbook"
USER_FAMILY = "user"

# The small network a library-style routine is tried on to see whether it takes a batch.
_PROBE_WIDTHS = (3, 5, 5, 2)
_PROBE_BATCH = 2


class RoutineError(ValueError):
    """A routine that cannot be loaded or called: one line that says why, and the mistake
    it is (``Mistake``: a syntax error, a missing function, wrong arguments, failing when
    loaded, …)."""

    def __init__(self, message: str, mistake: Mistake = Mistake.FAILS_WHEN_LOADED) -> None:
        super().__init__(message)
        self.mistake = mistake


@dataclass(frozen=True)
class Routine:
    """A user's Jacobian function with what jacbench learnt about it when loading it."""

    fn: Callable[..., Any] | None  # None: it lives in a worker process, found there by ref
    name: str  # the method name in results: the spec as given, or the function's name
    source: str  # where it comes from: "/abs/path/file.py:function" or "module:function"
    convention: str  # LIBRARY or TEXTBOOK
    batched: bool  # library style only: called with a whole batch
    ref: str | bytes | None = None  # how its sandbox finds it: a spec there, or pickled
    owner: sandbox.Owner | None = None  # whose sandbox it runs in (None: this process)

    @property
    def calling(self) -> str:
        """How jacbench calls it, in words (for tables and meta.json)."""
        if self.convention == TEXTBOOK:
            return "fn(x, L, param_dict), one sample at a time"
        return "fn(net, x), " + ("batched" if self.batched else "one sample at a time")

    def bind(self, net: MLP, x: Tensor) -> JacobianCall:
        """A zero-argument call of the routine on (net, x), following its convention."""
        fn = self.fn
        if fn is None:
            raise RoutineError(f"{self.name} runs in a worker process, not here")
        if self.convention == TEXTBOOK:
            depth, params = net.depth, net.param_dict()
            if x.ndim == 1:
                return lambda: fn(x, depth, params)
            return lambda: torch.stack([_as_tensor(fn(sample, depth, params)) for sample in x])
        if x.ndim == 1 or self.batched:
            return lambda: fn(net, x)
        return lambda: torch.stack([_as_tensor(fn(net, sample)) for sample in x])

    def as_method(self) -> Method:
        """The routine as a method of the harness (family ``user``; no AD mode is assumed)."""
        here = "" if self.ref is not None else " (in this process: it cannot go to a worker)"
        return Method(
            name=self.name,
            family=USER_FAMILY,
            mode="",
            description=f"{self.source}: {self.calling}{here}",
            build=self.bind,
            source=self.source,
            ref=self.ref,
            any_network=self.convention == LIBRARY,
            convention=self.convention,
            owner=self.owner,
        )


def weights_named(convention: str) -> str:
    """What a routine of ``convention`` calls the network's weights, for diagnoses."""
    return "param_dict" if convention == TEXTBOOK else "the network's weights"


def _as_tensor(value: Any) -> Tensor:
    return value if isinstance(value, Tensor) else torch.as_tensor(value)


def convention_of(fn: Callable[..., Any]) -> str:
    """LIBRARY for ``fn(net, x)``, TEXTBOOK for ``fn(x, L, param_dict)``, from the signature.

    Raises:
        RoutineError: the function takes neither two nor three positional arguments.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        message = f"cannot read the signature of {_describe(fn)}"
        raise RoutineError(message, Mistake.WRONG_ARGUMENTS) from None
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 2:
        return LIBRARY
    if len(positional) == 3:
        return TEXTBOOK
    names = ", ".join(p.name for p in positional)
    raise RoutineError(
        f"{_describe(fn)} takes ({names}); a routine takes (net, x) or (x, L, param_dict)",
        Mistake.WRONG_ARGUMENTS,
    )


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def takes_a_batch(fn: Callable[..., Any]) -> bool:
    """Whether a library-style routine returns (B, P, D) for a batch (B, D) of a small net."""
    net = MLP.from_widths(_PROBE_WIDTHS, dtype=torch.float64, seed=0)
    x = torch.randn(_PROBE_BATCH, _PROBE_WIDTHS[0], dtype=torch.float64)
    try:
        result = fn(net, x)
    except (Exception, SystemExit):  # a routine for one sample may fail on a batch in any way
        return False
    expected = (_PROBE_BATCH, _PROBE_WIDTHS[-1], _PROBE_WIDTHS[0])
    return tuple(getattr(result, "shape", ())) == expected


def from_callable(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    isolated: bool = True,
    timeout: float = DEFAULT_CALL_TIMEOUT,
) -> Routine:
    """A ``Routine`` of a Python function (its convention read from its signature).

    ``isolated``: learn about it in a worker process, where it will run, when it can be sent
    there (a function importable from a module other than ``__main__``).
    """
    if not callable(fn):
        message = f"a routine must be callable, got {type(fn).__name__}"
        raise RoutineError(message, Mistake.MISSING_FUNCTION)
    ref = pickled(fn) if isolated else None
    if ref is not None:
        return _described(ref, sandbox.owner_of_callable(ref), timeout, name)
    return _from_callable_here(fn, name=name)


def pickled(fn: Callable[..., Any]) -> bytes | None:
    """The function pickled by reference, where a worker can import it again (None for one
    it cannot import: a lambda, a nested function, one of ``__main__``)."""
    if getattr(fn, "__module__", None) in (None, "__main__"):
        return None
    try:
        ref = pickle.dumps(fn)
        return ref if pickle.loads(ref) is fn else None
    except Exception:  # a lambda, a nested function, a callable object of any kind
        return None


def _from_callable_here(
    fn: Callable[..., Any], *, name: str | None = None, probe: bool = True
) -> Routine:
    convention = convention_of(fn)
    module = getattr(fn, "__module__", None) or "?"
    source = f"{module}:{_describe(fn)}"
    return Routine(
        fn=fn,
        name=name or getattr(fn, "__name__", None) or source,
        source=source,
        convention=convention,
        batched=convention == LIBRARY and probe and takes_a_batch(fn),
    )


def is_spec(text: str) -> bool:
    """Whether ``text`` names a routine (``file.py:function`` or ``module:function``)."""
    module, _, function = text.rpartition(":")
    return bool(module) and function.isidentifier()


def load(
    spec: str,
    *,
    isolated: bool = True,
    timeout: float = DEFAULT_CALL_TIMEOUT,
    owner: sandbox.Owner | None = None,
) -> Routine:
    """The routine ``spec`` names: ``path/to/file.py:function`` or ``module:function``.

    Importing a file runs its top-level code: with ``isolated`` (the default) that happens in
    a sandbox of its own (NOTE: [Sandboxes]; ``owner``: whose, by default the spec's), where
    the routine will run (``timeout``: seconds it may take).

    Raises:
        RoutineError: one line: no such file or module, a syntax or import error in it, no
            such function, a function of neither convention, or a file whose loading did not
            finish or ended its process.
    """
    if isolated:
        _check_spec(spec)
        owner = owner or sandbox.owner_of_spec(spec)
        inside = sandbox.spec_inside(owner, absolute_spec(spec))
        routine = _described(inside, owner, timeout, spec)
        return replace(routine, source=_source_of(spec, routine.source))
    return _load_here(spec)


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file (``path/file.py:function``), not a module."""
    where = spec.rpartition(":")[0]
    return where.endswith(".py") or "/" in where or "\\" in where


def absolute_spec(spec: str) -> str:
    """``spec`` with its file's path absolute (a module's spec as it is): a sandbox works in
    a folder of its own."""
    where, _, function = spec.rpartition(":")
    if not is_file_spec(spec):
        return spec
    return f"{Path(where).expanduser().resolve()}:{function}"


def _source_of(spec: str, found: str) -> str:
    """Where a spec's routine comes from, as the user named it (not its sandbox's copy)."""
    return absolute_spec(spec) if is_file_spec(spec) else found


def _check_spec(spec: str) -> None:
    where, _, function = spec.rpartition(":")
    if not where or not function.isidentifier():
        raise RoutineError(
            f"{spec!r} does not name a routine; expected path/to/file.py:function "
            "or package.module:function",
            Mistake.MISSING_FUNCTION,
        )


def _described(ref: str | bytes, owner: sandbox.Owner, timeout: float, name: str | None) -> Routine:
    """What the owner's sandbox learns loading ``ref``, as a Routine that runs there.

    Loading is two requests: the import, which must succeed (a routine that cannot be loaded
    is refused), and the probe for a batch, a call of the routine that may fail in any way
    (then it is called once per sample, and its own rows will say what went wrong).
    """
    what = name or (ref if isinstance(ref, str) else "the routine")
    try:
        described = sandbox.run(owner, _describe_here, ref, deadline=timeout)
    except workers.WorkerFailed as failure:
        raise RoutineError(f"{what}: loading it {failure}") from None
    if not (isinstance(described, tuple) and len(described) == 3):  # the worker is not trusted
        raise RoutineError(f"{what}: loading it sent a reply jacbench does not read")
    fn_name, source, convention = described
    if fn_name is None:  # it could not be loaded: (None, the mistake, the message)
        raise RoutineError(_outside(str(convention), owner), _mistake_named(source))
    if convention not in (LIBRARY, TEXTBOOK) or not isinstance(fn_name, str):
        raise RoutineError(f"{what}: loading it sent a reply jacbench does not read")
    batched = False
    if convention == LIBRARY:
        try:
            batched = sandbox.run(owner, _probe_here, ref, deadline=timeout) is True
        except workers.WorkerFailed:
            pass
    return Routine(None, name or fn_name, str(source), convention, batched, ref, owner)


def _outside(message: str, owner: sandbox.Owner) -> str:
    """A message of the sandbox's, with its copy's folder named as the user named it."""
    if not owner.seal.files:
        return message
    files = Path(owner.seal.files).resolve()
    return message.replace(str(owner.folder), str(files if files.is_dir() else files.parent))


def _mistake_named(value: object) -> Mistake:
    try:
        return Mistake(value)
    except ValueError:
        return Mistake.FAILS_WHEN_LOADED


def _describe_here(ref: str | bytes) -> tuple[str | None, str, str]:
    """In a worker: load ``ref`` (no call) and say what it is: name, source, convention; or
    (None, the mistake, the message) where it cannot be loaded."""
    try:
        routine = routine_here(ref, probe=False)
    except RoutineError as error:
        return None, error.mistake.value, str(error)
    return routine.name, routine.source, routine.convention


def _probe_here(ref: str | bytes) -> bool:
    """In a worker: whether the loaded routine takes a batch (a call of it)."""
    batched = routine_here(ref).batched
    return batched


_HERE: dict[str | bytes, Routine] = {}


def routine_here(ref: str | bytes, *, probe: bool = True) -> Routine:
    """In a worker: the routine ``ref`` names, loaded in this process (once); ``probe``: with
    whether it takes a batch found out (a call of it)."""
    routine = _HERE.get(ref)
    if routine is None:
        if isinstance(ref, str):
            routine = _load_here(ref, probe=False)
        else:
            routine = _from_callable_here(pickle.loads(ref), probe=False)
        _HERE[ref] = routine
    if probe and routine.convention == LIBRARY and ref not in _PROBED:
        assert routine.fn is not None  # loaded here
        routine = _HERE[ref] = replace(routine, batched=takes_a_batch(routine.fn))
        _PROBED.add(ref)
    return routine


_PROBED: set[str | bytes] = set()


def resolve_here(ref: str | bytes) -> Method:
    """In a worker: the method a routine's ref names, loaded in this process; a registered
    method's name gives that method."""
    if isinstance(ref, str) and not is_spec(ref):
        return get_method(ref)
    routine = routine_here(ref)
    return replace(routine, ref=ref).as_method()


def _load_here(spec: str, *, probe: bool = True) -> Routine:
    """Import the routine ``spec`` names in this process (``load``'s work)."""
    fn, source = import_function(spec)
    routine = _from_callable_here(fn, name=spec, probe=probe)
    return Routine(fn, spec, source, routine.convention, routine.batched)


def import_function(spec: str) -> tuple[Callable[..., Any], str]:
    """The function ``spec`` names (``path/to/file.py:function``, ``package.module:function``),
    imported in this process, and where it comes from (the file's absolute path or the
    module, then ``:function``).

    Raises:
        RoutineError: one line: not a spec, no such file or module, an error importing it,
            no such function, or not a function.
    """
    _check_spec(spec)
    where, _, function = spec.rpartition(":")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        module = _import_file(path, spec)
        source = f"{path}:{function}"
    else:
        module = _import_module(where, spec)
        source = f"{where}:{function}"
    fn = getattr(module, function, None)
    if fn is None:
        message = f"{spec}: {where} has no function {function!r}"
        raise RoutineError(message, Mistake.MISSING_FUNCTION)
    if not callable(fn):
        message = f"{spec}: {function} is a {type(fn).__name__}, not a function"
        raise RoutineError(message, Mistake.MISSING_FUNCTION)
    return fn, source


# Files already imported, by path: a spec named twice runs its file once.
_FILE_MODULES: dict[Path, Any] = {}


def _import_file(path: Path, spec: str) -> Any:
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not path.is_file():
        raise RoutineError(f"{spec}: no such file {path}", Mistake.MISSING_FUNCTION)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"jacbench_user_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RoutineError(f"{spec}: {path} is not a Python file", Mistake.MISSING_FUNCTION)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        message = f"{spec}: {path}:{error.lineno}: SyntaxError: {error.msg}"
        raise RoutineError(message, Mistake.SYNTAX_ERROR) from None
    except Exception as error:  # the user's top-level code may raise anything
        del sys.modules[name]
        raise RoutineError(f"{spec}: importing {path} raised {one_line(error, 1000)}") from None
    _FILE_MODULES[path] = module
    return module


def _import_module(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name or name.startswith(f"{error.name}."):
            message = f"{spec}: no module named {name!r}"
            raise RoutineError(message, Mistake.MISSING_FUNCTION) from None
        raise RoutineError(f"{spec}: importing {name} raised {one_line(error, 1000)}") from None
    except SyntaxError as error:
        where = f"{error.filename}:{error.lineno}"
        message = f"{spec}: {where}: SyntaxError: {error.msg}"
        raise RoutineError(message, Mistake.SYNTAX_ERROR) from None
    except Exception as error:  # the module's top-level code may raise anything
        raise RoutineError(f"{spec}: importing {name} raised {one_line(error, 1000)}") from None


def resolve(
    method: str | Callable[..., Any] | Method,
    *,
    timeout: float = DEFAULT_CALL_TIMEOUT,
    isolated: bool = True,
) -> Method:
    """The method that ``method`` names: a registered name, a routine spec, or a callable.
    A routine is loaded in a worker process where it can be (``timeout``: the seconds its
    loading may take), unless ``isolated`` is False: then it is loaded here, to be called
    here (pytest-benchmark times a function of the test's own process).

    Raises:
        ValueError: an unknown name, or a routine that cannot be loaded (``RoutineError``).
    """
    if isinstance(method, Method):
        return method
    if callable(method):
        return from_callable(method, timeout=timeout, isolated=isolated).as_method()
    if isinstance(method, str) and is_spec(method):
        return load(method, timeout=timeout, isolated=isolated).as_method()
    if not isinstance(method, str):
        message = f"a method is a name, a routine spec or a callable, got {method!r}"
        raise RoutineError(message, Mistake.MISSING_FUNCTION)
    return get_method(method)


def resolve_all(
    methods: Iterable[str | Callable[..., Any] | Method], *, timeout: float = DEFAULT_CALL_TIMEOUT
) -> list[Method]:
    """``resolve`` each; two methods with one name are refused."""
    resolved = [resolve(m, timeout=timeout) for m in methods]
    names = [m.name for m in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two methods are named {', '.join(map(repr, twice))}")
    return resolved
