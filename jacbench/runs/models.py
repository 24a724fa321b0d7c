"""Models in a run: the user's own network, or one of jacbench's built-in models, as a grid axis.

A model is a factory ``make(d_in, d_out, **params) -> torch.nn.Module | callable`` whose
result maps x of shape (D,) to (P,), and (B, D) to (B, P) or jacbench batches it
(``SampleWise``, NOTE: [Models of one sample]). A run names it as a built-in model
(``residual``, ``attention``, …: ``jacbench.ad.builtin_models.BUILTIN_MODELS``), as
``path/to/file.py:function`` or ``package.module:function``, or, from Python, gives the
function itself; its keyword parameters are grid axes (``--param width=64,128``).

A run builds the model at every point (D, P) from its seed, moves it to the point's dtype
and device in eval mode with its parameters fixed (no gradient recorded for them: a
benchmark's weights are constants, as the MLP's are), and times the methods that take any
network (``Method.any_network``) on it. A factory of the user's is user code: its points
run in a worker process (NOTE: [Workers]), and a factory that cannot be loaded, does not
take (d_in, d_out, **params), raises or returns the wrong shape is refused in one line
before the run starts.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import pickle
import sysconfig
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from jacbench.ad import generic
from jacbench.ad.builtin_models import BUILTIN_MODELS, OneOrBatch
from jacbench.ad.generic import SampleWise
from jacbench.ad.networks import MLP
from jacbench.measure import tuning
from jacbench.measure.messages import one_line
from jacbench.runs import routines, sandbox, workers
from jacbench.runs.options import DEFAULT_CALL_TIMEOUT, ModelLike

# The MLP's own rows (not built from a factory) carry this in the ``model`` column.
MLP_LABEL = "mlp"
# The batch a factory's result is tried on when the model is checked.
_PROBE_BATCH = 2


class ModelError(ValueError):
    """A model that cannot be loaded, built or called as a model: one line that says why."""


@dataclass(frozen=True)
class Model:
    """A factory and the keyword parameters it is called with."""

    name: str  # a built-in model's name, the spec as given, or the function's name
    params: tuple[tuple[str, Any], ...] = ()
    # How a process finds the factory: a built-in model's name, a spec, or the pickled function;
    # None for a function that cannot be sent to another process (``fn`` then holds it).
    ref: str | bytes | None = None
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """The ``model`` column: ``residual(width=64,depth=3)``, the name alone without params."""
        if not self.params:
            return self.name
        return f"{self.name}({','.join(f'{k}={v}' for k, v in self.params)})"

    @property
    def user_code(self) -> bool:
        """Whether the factory is the user's (built in a worker where it can be sent there)."""
        return self.name not in BUILTIN_MODELS

    @property
    def isolated(self) -> bool:
        """Whether its points run in a sandbox: a user's factory that can go there."""
        return self.user_code and self.ref is not None

    @property
    def owner(self) -> sandbox.Owner | None:
        """Whose sandbox its points run in (NOTE: [Sandboxes]): the factory's own, one for
        every params of it; None where it runs in this process."""
        if not self.isolated:
            return None
        if isinstance(self.ref, bytes):
            return sandbox.owner_of_callable(self.ref)
        return sandbox.owner_of_spec(str(self.ref))

    def with_params(self, params: Mapping[str, Any]) -> Model:
        """This factory with ``params``."""
        return Model(self.name, tuple(params.items()), self.ref, self.fn)

    def factory(self) -> Callable[..., Any]:
        """The factory function, loaded in this process (once)."""
        if self.fn is not None:
            return self.fn
        assert self.ref is not None  # a Model has one or the other
        found = _FACTORIES.get(self.ref)
        if found is None:
            found = _FACTORIES[self.ref] = _load(self.ref)
        return found

    def build(
        self, d_in: int, d_out: int, *, seed: int = 0, dtype: torch.dtype = torch.float32,
        device: str = "cpu",
    ) -> Any:  # fmt: skip
        """The model for (d_in, d_out): made under ``seed`` (the same weights on every device
        and dtype), on ``device`` in ``dtype``, in eval mode, its parameters fixed.

        Raises:
            ModelError: the factory does not take these arguments, or raised.
        """
        factory = self.factory()
        params = dict(self.params)
        try:
            inspect.signature(factory).bind(d_in, d_out, **params)
        except TypeError as error:
            raise ModelError(
                f"{self.name} does not take (d_in, d_out, {_spelled(params)}): {error}"
            ) from None
        except ValueError:  # no signature to read (a builtin): the call will tell
            pass
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                made = factory(d_in, d_out, **params)
            except Exception as error:  # the user's factory may raise anything
                raise ModelError(
                    f"{self.label} at d_in={d_in}, d_out={d_out} raised {one_line(error)}"
                ) from None
        try:
            return batched(moved(made, dtype, device), d_in, dtype, device)
        except ModelError as error:
            raise ModelError(f"{self.label}: {error}") from None


# NOTE: [Models of one sample]
#     Most scientific code maps one sample, (D,) → (P,), and leaves batching to the caller
#     (torch.func's idiom: vmap(jacrev(f))). A model is built, then called on one seeded
#     sample and on a batch of two; where the batch's call raises, returns another shape, or
#     answers other than the samples' own calls (code that mixes samples), the model is
#     wrapped in ``SampleWise``: vmap where vmap runs it and agrees with the samples' calls,
#     else a loop. jacbench's per-sample methods (auto, torch.func's) never see the wrapper's
#     batch path: they vmap the one-sample call themselves (or loop, where vmap cannot run
#     the code). A model that refuses one sample but maps a batch as each sample alone
#     would be mapped (BatchNorm1d in eval mode) takes one sample as a batch of one.
def batched(model: Any, d_in: int, dtype: torch.dtype, device: str) -> Any:
    """``model`` as it is where it maps one sample (D,) and a batch (B, D) sample by sample
    and torch.func can transform it, else made to (``SampleWise``); as it is too where it
    maps neither (``check_model`` says why)."""
    if isinstance(model, (MLP, SampleWise, OneOrBatch)):  # jacbench's own: sample-wise
        return model
    generator = torch.Generator().manual_seed(0)
    pair = torch.randn(2, d_in, generator=generator, dtype=torch.float64)
    pair = pair.to(dtype=dtype, device=device)
    with torch.no_grad():
        each = _called(lambda: torch.stack([model(sample) for sample in pair]))
        if each is None:  # not one sample: batches only (each as a batch of one)?
            alone = _called(lambda: torch.cat([model(sample[None]) for sample in pair]))
            if alone is None or not _agrees(lambda: model(pair), alone):
                return model
            how = "batch of one"
        elif _agrees(lambda: model(pair), each):
            # its own batching; per-sample methods vmap its one-sample call, which may
            # branch on a value (a loop over the batch inside it)
            how = "batch" if _agrees(lambda: torch.func.vmap(model)(pair), each) else "loop"
        else:
            how = "vmap" if _agrees(lambda: torch.func.vmap(model)(pair), each) else "loop"
    made = SampleWise(model, how)
    made.refused = _transform_refused(made, pair[0])
    if made.refused:
        try:
            torch.autograd.functional.jacobian(made, pair[0].detach().clone())
        except Exception as error:  # nothing can differentiate it: say so before a run
            raise ModelError(
                f"neither torch.func nor torch.autograd can differentiate this model "
                f"(torch.autograd: {one_line(error)}{_user_line(error)})"
            ) from None
    return model if how == "batch" and not made.refused else made


def _transform_refused(model: SampleWise, sample: Tensor) -> str:
    """Why torch.func cannot take the Jacobian of ``model`` at ``sample`` (its error, and
    the line of the user's code it came from), or "" where it can."""
    try:
        torch.func.jacrev(model)(sample.detach().clone())
    except Exception as error:  # the user's code may raise anything under the transform
        return f"torch.func cannot transform its code ({one_line(error)}{_user_line(error)})"
    return ""


def _user_line(error: BaseException) -> str:
    """Where in the user's code ``error`` was raised (the last frame outside torch,
    jacbench and the installed libraries, NumPy's say): " at file.py:12"; "" where none
    is."""
    paths = sysconfig.get_paths()
    libraries = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    skipped = (str(Path(torch.__file__).parent), str(Path(__file__).parent.parent), *libraries)
    every = traceback.extract_tb(error.__traceback__)
    frames = [f for f in every if not f.filename.startswith(skipped)]
    if not frames:
        return ""
    return f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}"


def _called(call: Callable[[], Any]) -> Tensor | None:
    """What ``call`` returns where it is a matrix (a batch's outputs), else None."""
    try:
        found = call()
    except Exception:  # the user's model may raise anything: check_model reports it
        return None
    return found if isinstance(found, Tensor) and found.ndim == 2 else None


def _agrees(call: Callable[[], Any], expected: Tensor) -> bool:
    try:
        found = call()
    except Exception:  # the user's model may raise anything
        return False
    return (
        isinstance(found, Tensor)
        and found.shape == expected.shape
        and bool(torch.allclose(found, expected, rtol=1e-4, atol=1e-5, equal_nan=True))
    )


# What a model takes, by how it is made sample-wise (``SampleWise.how``).
TAKES = {
    "batch": "takes one sample and a batch",
    "vmap": "takes one sample; batched with torch.func.vmap",
    "loop": "takes one sample; batched by a loop over the samples (vmap cannot run its code)",
    "batch of one": "takes batches only; one sample goes in as a batch of one",
}


def batching(model: Any) -> str:
    """What a built model takes, as the model check says it."""
    takes = TAKES[model.how if isinstance(model, SampleWise) else "batch"]
    if isinstance(model, SampleWise) and model.refused:
        takes += f"; {model.refused}: timed with torch.autograd's methods"
    return takes


def moved(model: Any, dtype: torch.dtype, device: str) -> Any:
    """``model`` in ``dtype`` on ``device``: a module (eval mode, parameters fixed) or
    jacbench's MLP converted, a plain function as it is (its weights are its own)."""
    if isinstance(model, MLP):
        return model.to(dtype=dtype, device=device)
    if isinstance(model, nn.Module):
        model = model.to(dtype=dtype, device=device).eval()
        model.requires_grad_(False)
        return model
    if not callable(model):
        raise ModelError(
            f"a factory must return a module or a function, got {type(model).__name__}"
        )
    return model


def copied(model: Any, dtype: torch.dtype | None = None) -> Any:
    """A copy of ``model`` that shares no tensor with it (in ``dtype`` where given): for
    jacbench's MLP its clone, for a module a deep copy; a plain function is itself."""
    if isinstance(model, MLP):
        model = model.clone()
        return model if dtype is None else model.to(dtype=dtype)
    if isinstance(model, nn.Module):
        model = copy.deepcopy(model)
        return model if dtype is None else model.to(dtype=dtype)
    return model


def _spelled(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no params"


_FACTORIES: dict[str | bytes, Callable[..., Any]] = {}


def _load(ref: str | bytes) -> Callable[..., Any]:
    """The factory ``ref`` names, imported in this process."""
    if isinstance(ref, bytes):
        return pickle.loads(ref)
    if ref in BUILTIN_MODELS:
        return BUILTIN_MODELS[ref]
    try:
        return routines.import_function(ref)[0]
    except routines.RoutineError as error:
        raise ModelError(str(error)) from None


def resolve_model(model: ModelLike | Model) -> Model:
    """The ``Model`` that ``model`` names: a built-in model, a spec or a factory function.

    Raises:
        ModelError: neither a built-in model nor a spec, or not callable.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, str):
        if model in BUILTIN_MODELS:
            return Model(model, ref=model)
        if routines.is_spec(model):  # a file named where it lies: a sandbox works elsewhere
            return Model(model, ref=routines.absolute_spec(model))
        raise ModelError(
            f"unknown model {model!r}; expected one of: {', '.join(BUILTIN_MODELS)}, "
            "or path/to/file.py:function or package.module:function"
        )
    if not callable(model):
        raise ModelError(f"a model is a name, a spec or a factory, got {type(model).__name__}")
    name = getattr(model, "__name__", None) or type(model).__name__
    ref = routines.pickled(model)
    return Model(name, ref=ref, fn=None if ref is not None else model)


def parse_param(text: str) -> tuple[str, tuple[Any, ...]]:
    """``"width=64,128"`` → ``("width", (64, 128))``: ints, floats, true/false and words.

    Raises:
        ValueError: not NAME=V1,V2,… in one line.
    """
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier() or not values.strip():
        raise ValueError(f"--param takes NAME=V1,V2,… (e.g. width=64,128), got {text!r}")
    return name, tuple(_value(v.strip()) for v in values.split(",") if v.strip())


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def params_grid(params: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the params' values (one empty dict without params).

    >>> params_grid({"width": [64, 128], "depth": [3]})
    [{'width': 64, 'depth': 3}, {'width': 128, 'depth': 3}]
    """
    params = dict(params or {})
    for name, values in params.items():
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"param {name} takes a list of values, got {values!r}")
    names = list(params)
    return [dict(zip(names, combo)) for combo in itertools.product(*params.values())]


def check_model(
    model: Model, d_in: int, d_out: int, *, timeout: float = DEFAULT_CALL_TIMEOUT
) -> str:
    """Build ``model`` at (d_in, d_out) and call it on one input and on a batch, in a worker
    where it is the user's code (``timeout``: the seconds that may take); what it takes
    (``batching``: a model of one sample is batched by jacbench).

    Raises:
        ModelError: it cannot be loaded or built, its call raises, or its output is not
            (P,) for (D,) and (B, P) for (B, D); one line.
    """
    if not model.isolated:
        return _check_here(model, d_in, d_out)
    try:
        assert model.owner is not None  # isolated
        found = sandbox.run(model.owner, _check_here, model, d_in, d_out, deadline=timeout)
    except workers.WorkerFailed as failure:
        if failure.error_type == "ModelError":
            raise ModelError(failure.error_text) from None
        raise ModelError(f"{model.label}: building and calling it {failure}") from None
    return found if isinstance(found, str) else "?"  # a sandbox's answer: trusted as text only


def _check_here(model: Model, d_in: int, d_out: int) -> str:
    built = model.build(d_in, d_out, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    for x in (torch.randn(d_in, generator=generator), torch.randn(_PROBE_BATCH, d_in)):
        expected = (d_out,) if x.ndim == 1 else (_PROBE_BATCH, d_out)
        try:
            with torch.no_grad():
                out = built(x)
        except Exception as error:  # the user's model may raise anything
            raise ModelError(
                f"{model.label} (d_in={d_in}, d_out={d_out}) called on x of shape "
                f"{tuple(x.shape)} raised {one_line(error)}"
            ) from None
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        if got != expected:
            raise ModelError(
                f"{model.label} (d_in={d_in}, d_out={d_out}) returns {got} for x of shape "
                f"{tuple(x.shape)}; a model maps (D,) to (P,) (and (B, D) to (B, P), or "
                "jacbench batches it)"
            )
    return batching(built)


def model_plan(
    model: Model,
    d_in: int,
    d_out: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    timeout: float = DEFAULT_CALL_TIMEOUT,
) -> tuple[generic.GenericPlan, str]:
    """``generic.plan_of`` for ``model`` built at (d_in, d_out) on a seeded input of
    ``batch`` samples (one sample: shape (D,)), in a worker where the model is the user's;
    and what the model takes (``batching``).

    Raises:
        ModelError: it cannot be loaded, built, called or counted (one line).
    """
    tuned = tuning.active()  # this machine's calibration, which the sandbox cannot read
    if not model.isolated:
        return _plan_here(model, d_in, d_out, batch, dtype, device, tuned)
    try:
        assert model.owner is not None  # isolated
        found = sandbox.run(
            model.owner, _plan_here, model, d_in, d_out, batch, dtype, device, tuned,
            deadline=timeout,
        )  # fmt: skip
    except workers.WorkerFailed as failure:
        if failure.error_type == "ModelError":
            raise ModelError(failure.error_text) from None
        raise ModelError(f"{model.label}: counting its costs {failure}") from None
    plan, takes = found if isinstance(found, tuple) and len(found) == 2 else (None, None)
    if not (isinstance(plan, generic.GenericPlan) and isinstance(takes, str)):
        raise ModelError(f"{model.label}: its sandbox sent back a plan jacbench does not read")
    return generic.decided(plan), takes


def _plan_here(
    model: Model,
    d_in: int,
    d_out: int,
    batch: int,
    dtype: torch.dtype,
    device: str,
    tuned: tuning.Tuning | None = None,
) -> tuple[generic.GenericPlan, str]:
    with tuning.use(tuned or tuning.active()):
        return _counted_plan(model, d_in, d_out, batch, dtype, device)


def _counted_plan(
    model: Model, d_in: int, d_out: int, batch: int, dtype: torch.dtype, device: str
) -> tuple[generic.GenericPlan, str]:
    takes = _check_here(model, d_in, d_out)
    built = model.build(d_in, d_out, dtype=dtype, device=device)
    if isinstance(built, SampleWise) and built.refused:
        raise ModelError(
            f"{model.label}: {built.refused}, so its costs cannot be counted; `jacbench run "
            "--model` times it with torch.autograd's loops of JVPs and VJPs"
        )
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d_in, generator=generator, dtype=torch.float64)
    x = (x if batch > 1 else x[0]).to(dtype=dtype, device=device)
    try:
        return generic.plan_of(built, x), takes
    except Exception as error:  # torch.func may refuse the user's model in any way
        raise ModelError(f"{model.label}: counting its costs raised {one_line(error)}") from None
