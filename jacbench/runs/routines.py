"""User routines: a Jacobian function of yours, measured like the built-in methods.

A routine is given as ``path/to/file.py:function``, ``package.module:function`` or, from
Python, as the callable itself. Two calling conventions, told apart by the signature:

- library style ``fn(net, x) -> J``: ``net`` a :class:`~jacbench.ad.networks.MLP`, x of shape
  (D,) → J (P, D). If the routine also takes a batch (B, D) → (B, P, D) it is called with
  the whole batch, otherwise once per sample: this is decided once, when it is loaded, by
  calling it on a small batch.
- textbook style ``fn(x, L, param_dict) -> J`` for one sample, given the depth L and
  ``net.param_dict()`` (``{"W1": (K, D), …, "WL", "WF": (P, K)}``); a batch is one call
  per sample.

Loading a file runs it: it is the user's code, imported as Python imports a module (its
folder joins ``sys.path``, so its own imports work). Nothing else in jacbench executes code
from disk.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jacbench.ad.networks import MLP
from jacbench.runs.methods import JacobianCall, Method, get_method

LIBRARY = "library"
TEXTBOOK = "textbook"
USER_FAMILY = "user"

# The small network a library-style routine is tried on to see whether it takes a batch.
_PROBE_WIDTHS = (3, 5, 5, 2)
_PROBE_BATCH = 2


class RoutineError(ValueError):
    """A routine that cannot be loaded or called: one line that says why."""


@dataclass(frozen=True)
class Routine:
    """A user's Jacobian function with what jacbench learnt about it when loading it."""

    fn: Callable[..., Any]
    name: str  # the method name in results: the spec as given, or the function's name
    source: str  # where it comes from: "/abs/path/file.py:function" or "module:function"
    convention: str  # LIBRARY or TEXTBOOK
    batched: bool  # library style only: called with a whole batch

    @property
    def calling(self) -> str:
        """How jacbench calls it, in words (for tables and meta.json)."""
        if self.convention == TEXTBOOK:
            return "fn(x, L, param_dict), one sample at a time"
        return "fn(net, x), " + ("batched" if self.batched else "one sample at a time")

    def bind(self, net: MLP, x: Tensor) -> JacobianCall:
        """A zero-argument call of the routine on (net, x), following its convention."""
        fn = self.fn
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
        return Method(
            name=self.name,
            family=USER_FAMILY,
            mode="",
            description=f"{self.source}: {self.calling}",
            build=self.bind,
            source=self.source,
        )


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
        raise RoutineError(f"cannot read the signature of {_describe(fn)}") from None
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
        f"{_describe(fn)} takes ({names}); a routine takes (net, x) or (x, L, param_dict)"
    )


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def takes_a_batch(fn: Callable[..., Any]) -> bool:
    """Whether a library-style routine returns (B, P, D) for a batch (B, D) of a small net."""
    net = MLP.from_widths(_PROBE_WIDTHS, dtype=torch.float64, seed=0)
    x = torch.randn(_PROBE_BATCH, _PROBE_WIDTHS[0], dtype=torch.float64)
    try:
        result = fn(net, x)
    except Exception:  # a routine for one sample may fail on a batch in any way
        return False
    expected = (_PROBE_BATCH, _PROBE_WIDTHS[-1], _PROBE_WIDTHS[0])
    return tuple(getattr(result, "shape", ())) == expected


def from_callable(fn: Callable[..., Any], *, name: str | None = None) -> Routine:
    """A :class:`Routine` of a Python function (its convention read from its signature)."""
    if not callable(fn):
        raise RoutineError(f"a routine must be callable, got {type(fn).__name__}")
    convention = convention_of(fn)
    module = getattr(fn, "__module__", None) or "?"
    source = f"{module}:{_describe(fn)}"
    return Routine(
        fn=fn,
        name=name or getattr(fn, "__name__", None) or source,
        source=source,
        convention=convention,
        batched=convention == LIBRARY and takes_a_batch(fn),
    )


def is_spec(text: str) -> bool:
    """Whether ``text`` names a routine (``file.py:function`` or ``module:function``)."""
    module, _, function = text.rpartition(":")
    return bool(module) and function.isidentifier()


def load(spec: str) -> Routine:
    """Import the routine ``spec`` names: ``path/to/file.py:function`` or ``module:function``.

    Importing a file runs its top-level code.

    Raises:
        RoutineError: one line: no such file or module, a syntax or import error in it, no
            such function, or a function of neither convention.
    """
    where, _, function = spec.rpartition(":")
    if not where or not function.isidentifier():
        raise RoutineError(
            f"{spec!r} does not name a routine; expected path/to/file.py:function "
            "or package.module:function"
        )
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where).expanduser().resolve()
        module = _import_file(path, spec)
        source = f"{path}:{function}"
    else:
        module = _import_module(where, spec)
        source = f"{where}:{function}"
    fn = getattr(module, function, None)
    if fn is None:
        raise RoutineError(f"{spec}: {where} has no function {function!r}")
    if not callable(fn):
        raise RoutineError(f"{spec}: {function} is a {type(fn).__name__}, not a function")
    routine = from_callable(fn, name=spec)
    return Routine(fn, spec, source, routine.convention, routine.batched)


# Files already imported, by path: a spec named twice runs its file once.
_FILE_MODULES: dict[Path, Any] = {}


def _import_file(path: Path, spec: str) -> Any:
    if path in _FILE_MODULES:
        return _FILE_MODULES[path]
    if not path.is_file():
        raise RoutineError(f"{spec}: no such file {path}")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = f"jacbench_user_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RoutineError(f"{spec}: {path} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as error:
        del sys.modules[name]
        raise RoutineError(f"{spec}: {path}:{error.lineno}: SyntaxError: {error.msg}") from None
    except Exception as error:  # the user's top-level code may raise anything
        del sys.modules[name]
        raise RoutineError(f"{spec}: importing {path} raised {_one_line(error)}") from None
    _FILE_MODULES[path] = module
    return module


def _import_module(name: str, spec: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name or name.startswith(f"{error.name}."):
            raise RoutineError(f"{spec}: no module named {name!r}") from None
        raise RoutineError(f"{spec}: importing {name} raised {_one_line(error)}") from None
    except SyntaxError as error:
        where = f"{error.filename}:{error.lineno}"
        raise RoutineError(f"{spec}: {where}: SyntaxError: {error.msg}") from None
    except Exception as error:  # the module's top-level code may raise anything
        raise RoutineError(f"{spec}: importing {name} raised {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


def resolve(method: str | Callable[..., Any] | Method) -> Method:
    """The method that ``method`` names: a registered name, a routine spec, or a callable.

    Raises:
        ValueError: an unknown name, or a routine that cannot be loaded (``RoutineError``).
    """
    if isinstance(method, Method):
        return method
    if callable(method):
        return from_callable(method).as_method()
    if isinstance(method, str) and is_spec(method):
        return load(method).as_method()
    if not isinstance(method, str):
        raise RoutineError(f"a method is a name, a routine spec or a callable, got {method!r}")
    return get_method(method)


def resolve_all(methods: Iterable[str | Callable[..., Any] | Method]) -> list[Method]:
    """:func:`resolve` each; two methods with one name are refused."""
    resolved = [resolve(m) for m in methods]
    names = [m.name for m in resolved]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"two methods are named {', '.join(map(repr, twice))}")
    return resolved
