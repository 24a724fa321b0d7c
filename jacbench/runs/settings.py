"""A sweep's settings: its options resolved once, into one record every layer reads.

``SweepOptions`` is what a caller asks for (``jacbench run``'s options, ``jacbench.sweep``'s
keywords). ``resolve`` checks it and resolves it once: the preset, the grid's points, the
methods (user routines loaded in a worker) and the operator, and how each point's network
is built (``Build``), each method checked (``validate``) and timed (``Timing``). Everything
below the faces reads the resulting ``Settings``; nothing resolves the options again.

meta.json records ``Settings.to_meta()`` under ``settings``; ``results.read_settings`` reads
that back from any run folder (an older folder's ``params`` too), and a resumed run must
repeat every part but its timing (``results.settings_differences``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from jacbench.ad.networks import INITS
from jacbench.kernels.activations import ACTIVATIONS
from jacbench.runs import models, routines
from jacbench.runs.grid import Point, expand_grid, expand_models, get_preset
from jacbench.runs.methods import METHODS, Method, model_methods
from jacbench.runs.operators import get_operator
from jacbench.runs.options import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_CALL_TIME,
    DEFAULT_MIN_TIME,
    MethodLike,
    SweepOptions,
)


@dataclass(frozen=True)
class Build:
    """How each point's network and input are made: the same for one seed on every device."""

    seed: int = 0
    init: str = "lecun"
    activation: str = "tanh"


@dataclass(frozen=True)
class Timing:
    """How each method is timed: at least ``min_time`` seconds a row in ``rounds``
    interleaved rounds; a call slower than ``max_call_time`` timed once (``slow``); a user's
    call stopped after ``call_timeout``; ``processes`` fresh processes pooled; the device's
    ``peaks`` measured first."""

    min_time: float = DEFAULT_MIN_TIME
    max_call_time: float = DEFAULT_MAX_CALL_TIME
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    rounds: int = 1
    processes: int = 1
    threads: int | None = None
    peaks: bool = False


_Part = TypeVar("_Part", Build, Timing)


@dataclass(frozen=True)
class Settings:
    """A sweep resolved: the grid's points, the methods and the operator they compute, how
    networks are built, whether results are checked, how methods are timed; ``options`` is
    what was asked (the grid as given, for meta.json and a run's processes)."""

    options: SweepOptions
    points: tuple[Point, ...]
    methods: tuple[Method, ...]
    operator: str = "jacobian"
    build: Build = field(default_factory=Build)
    timing: Timing = field(default_factory=Timing)
    validate: bool = True
    shards: int | None = None  # a sharded run's count of shards (its points are one shard's)
    # What each model takes, by its label, as its check said ("takes one sample; batched
    # with torch.func.vmap"): meta.json's ``models``, said by ``jacbench run``.
    takes: tuple[tuple[str, str], ...] = ()

    @property
    def device(self) -> str:
        """The device every point runs on."""
        return self.options.device

    def to_meta(self) -> dict[str, Any]:
        """meta.json's ``settings``: the grid as asked, the methods by name and every
        resolved setting, in JSON's own types (the layout ``results.read_settings`` reads)."""
        asked = self.options
        model_params = {k: list(v) for k, v in asked.params or ()}
        grid = {
            **{k: None if v is None else list(v) for k, v in asked.grid.items()},
            "shapes": None if asked.shapes is None else [[list(w), b] for w, b in asked.shapes],
            "model": None if asked.model is None else [_model_name(m) for m in asked.model],
            "model_params": model_params if asked.model is not None else None,
            "dtype": list(asked.dtype),
            "device": asked.device,
        }
        return {
            "preset": asked.preset,
            "grid": grid,
            "operator": self.operator,
            "methods": [m.name for m in self.methods],
            "build": dataclasses.asdict(self.build),
            "validate": self.validate,
            "timing": dataclasses.asdict(self.timing),
            "shards": self.shards,
        }

    def for_processes(self) -> SweepOptions:
        """The options each process of a pooled run sweeps: these settings, resolved, in
        one process each."""
        return dataclasses.replace(
            self.options,
            methods=tuple(self.asked_methods()),
            operator=self.operator,
            min_time=self.timing.min_time,
            processes=1,
        )

    def asked_methods(self) -> list[MethodLike]:
        """The methods as asked where one was (a routine by its spec), else by name."""
        if self.options.methods is not None:
            return list(dict.fromkeys(self.options.methods))
        return [m.name for m in self.methods]


def options_of(recorded: dict[str, Any]) -> SweepOptions:
    """The options that make the run whose settings are ``recorded`` (``to_meta``'s layout,
    as ``results.read_settings`` reads any run folder's): what ``--resume`` continues.

    Raises:
        ValueError: a merged run's record, which no options make.
    """
    if "merged" in recorded:
        raise ValueError("a merged run is made by jacbench merge, not by a sweep to resume")
    grid, build, timing = (recorded.get(k) or {} for k in ("grid", "build", "timing"))
    keywords: dict[str, Any] = {
        **{k: grid.get(k) for k in ("depths", "d_in", "width", "d_out", "batch", "shapes")},
        "model": grid.get("model"),
        "params": grid.get("model_params") if grid.get("model") else None,
        "preset": recorded.get("preset") or "quick",
        "operator": recorded.get("operator"),
        "methods": recorded.get("methods"),
        "validate": recorded.get("validate", True),
        **{k: v for k, v in build.items() if v is not None},
        **{k: v for k, v in timing.items() if k in _TIMING_FIELDS},
    }
    if grid.get("dtype") is not None:
        keywords["dtype"] = grid["dtype"]
    if grid.get("device") is not None:
        keywords["device"] = grid["device"]
    return SweepOptions.from_keywords(keywords)


_TIMING_FIELDS = frozenset(f.name for f in dataclasses.fields(Timing))


def _model_name(model: models.ModelLike) -> str:
    return models.resolve_model(model).name


def resolve(options: SweepOptions) -> Settings:
    """``options`` checked and resolved: the points, methods, operator and settings they ask
    for (a user's routines and models are loaded and checked in a worker).

    Raises:
        ValueError: a bad option, in one line.
    """
    _check_values(options)
    chosen = get_preset(options.preset)
    operator = get_operator(options.operator or chosen.operator).name
    takes: tuple[tuple[str, str], ...] = ()
    if options.model is not None:
        points, takes = _model_points(options)
    elif options.params is not None:
        raise ValueError("params are a model's: give them with --model")
    elif options.shapes is not None:
        if any(v is not None for v in options.grid.values()):
            raise ValueError("give shapes or grid options (depths, d_in, …), not both")
        points = expand_grid(shapes=options.shapes, dtype=options.dtypes, device=options.device)
    else:
        points = chosen.points(options.dtypes, options.device, options.grid)
    if options.methods is not None:
        asked: list[MethodLike] = list(dict.fromkeys(options.methods))
    elif options.model is not None:
        asked = list(model_methods(operator))
    else:
        asked = list(chosen.installed_methods(operator))
    found = routines.resolve_all(asked, timeout=options.call_timeout)
    methods = tuple(method_of(operator, m) for m in found)
    _check_methods(methods, options.device)
    timing = dataclasses.replace(
        _copied(Timing, options), min_time=options.min_time or chosen.min_time or DEFAULT_MIN_TIME
    )
    build = _copied(Build, options)
    return Settings(
        options, tuple(points), methods, operator, build, timing, options.validate, takes=takes
    )


def _copied(part: type[_Part], options: SweepOptions) -> _Part:
    """A part of the settings with each of its fields the option of that name: a new option
    of the build or the timing is a field there and one in ``SweepOptions``."""
    return part(**{f.name: getattr(options, f.name) for f in dataclasses.fields(part)})


def method_of(operator: str, method: Method) -> Method:
    """``method`` as a method of ``operator``: a user routine is taken to compute it, a
    registered method of another operator is refused."""
    if method.source:
        return dataclasses.replace(method, operator=operator)
    if method.operator != operator:
        of_operator = ", ".join(m for m, known in METHODS.items() if known.operator == operator)
        raise ValueError(
            f"method {method.name} computes the {method.operator}, not the {operator}; "
            f"the {operator}'s methods: {of_operator}"
        )
    return method


def _check_values(options: SweepOptions) -> None:
    if options.init not in INITS:
        raise ValueError(f"unknown init {options.init!r}; expected one of: {', '.join(INITS)}")
    if options.activation not in ACTIVATIONS:
        known = ", ".join(ACTIVATIONS)
        raise ValueError(f"unknown activation {options.activation!r}; expected one of: {known}")
    if options.min_time is not None and not 0 < options.min_time < math.inf:
        raise ValueError("min_time and max_call_time must be > 0 and finite")
    if not 0 < options.max_call_time < math.inf:
        raise ValueError("min_time and max_call_time must be > 0 and finite")
    if not -(2**63) <= options.seed < 2**63:  # torch's seeds are 64-bit
        raise ValueError(f"seed must fit in 64 bits (|seed| < 2^63), got {options.seed}")
    for name in ("rounds", "processes", "threads"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be ≥ 1, got {value}")
    if not options.call_timeout > 0:
        raise ValueError(f"call_timeout must be > 0, got {options.call_timeout}")


def _check_methods(methods: tuple[Method, ...], device: str) -> None:
    for method in methods:
        if not method.available():
            raise ValueError(f"method {method.name} is not available here: {method.requirement}")
        if method.needs_cuda and torch.device(device).type != "cuda":
            raise ValueError(f"method {method.name} needs a CUDA device (--device cuda)")


def _model_points(options: SweepOptions) -> tuple[list[Point], tuple[tuple[str, str], ...]]:
    """The points of a run of models: each model with every combination of its params, at
    every d_in × d_out × batch; each checked first (built and called in a worker where it
    is the user's code), and what each takes (``models.batching``), by label.

    Raises:
        ValueError: a grid option of the MLP's, no d_in or d_out, or a model that cannot
            be loaded, built or called (one line).
    """
    if options.depths is not None or options.width is not None or options.shapes is not None:
        raise ValueError(
            "depths, width and shapes are the MLP's; give a model's own as params "
            "(--param width=64)"
        )
    if options.d_in is None or options.d_out is None:
        raise ValueError("a model needs d_in and d_out (--d-in 8 256 --d-out 1)")
    grid = models.params_grid(dict(options.params or ()))
    chosen = [models.resolve_model(m).with_params(p) for m in options.model or () for p in grid]
    takes = tuple(
        (model.label, models.check_model(
            model, options.d_in[0], options.d_out[0], timeout=options.call_timeout
        ))
        for model in dict.fromkeys(chosen)
    )  # fmt: skip
    points = expand_models(
        chosen,
        d_in=options.d_in,
        d_out=options.d_out,
        batch=options.batch or (1,),
        dtype=options.dtypes,
        device=options.device,
    )
    return points, takes
