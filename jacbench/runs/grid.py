"""Points and grids: which network shapes a run measures, and the named presets.

A point is one network shape (widths), batch, dtype and device, and for a model
(``jacbench.runs.models``) the model; a grid is the points of a run. ``expand_grid`` makes the
product of lists of depths L, input dimensions D, hidden widths K, output dimensions P and batches B
(keyword names as the CLI's options), plus any explicit ``shapes``; ``expand_models`` the product of
models, D, P and B. ``PRESETS`` is the one table of named grids, read by ``jacbench run --preset``
and by the pytest-benchmark suites (``JACBENCH_BENCH_PRESET``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from jacbench.ad.cost import check_widths
from jacbench.measure.rows import RowKey
from jacbench.runs.methods import METHODS, MODEL_METHODS, default_methods, model_methods
from jacbench.runs.models import MLP_LABEL, Model

DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
)

# The grid options of a run, in CLI order: each takes a list of positive whole numbers.
GRID_OPTIONS = ("depths", "d_in", "width", "d_out", "batch")


@dataclass(frozen=True)
class Point:
    """One network shape ``widths = (D, K_1, …, K_L, P)``, batch, dtype and device; for a
    model, ``widths = (D, P)`` and the model (its own parameters say the rest)."""

    widths: tuple[int, ...]
    batch: int = 1
    dtype: str = "float32"
    device: str = "cpu"
    model: Model | None = None  # None: jacbench's MLP of these widths

    @property
    def depth(self) -> int:
        """L, the number of σ layers."""
        return len(self.widths) - 2

    @property
    def d_in(self) -> int:
        """D, the input dimension."""
        return self.widths[0]

    @property
    def width(self) -> int:
        """K: the hidden width (the largest one where they differ), as in the ``width`` column
        (0 for a model)."""
        return max(self.widths[1:-1], default=0)

    @property
    def d_out(self) -> int:
        """P, the output dimension."""
        return self.widths[-1]

    @property
    def torch_dtype(self) -> torch.dtype:
        """The point's dtype as a ``torch.dtype``."""
        return DTYPES[self.dtype]

    def key(self, method: str) -> RowKey:
        """The key of this point's row for ``method``."""
        return RowKey(self.widths, self.batch, self.dtype, self.device, method, self.label)

    @property
    def label(self) -> str:
        """The ``model`` column: the model's label, ``mlp`` for jacbench's MLP."""
        return MLP_LABEL if self.model is None else self.model.label


# The deepest network a grid takes: the cost model's chain order is cubic in the depth (a
# prediction at L = 500 took 27 s), and a depth of 10^9 was a widths list no memory holds.
MAX_DEPTH = 256


def uniform_widths(depth: int, d_in: int, width: int, d_out: int) -> tuple[int, ...]:
    """(D, K, …, K, P) with L hidden widths K."""
    return (d_in, *([width] * depth), d_out)


def check_depths(depths: Sequence[int]) -> None:
    """Depths no deeper than MAX_DEPTH, or one line saying so."""
    for depth in depths:
        if depth > MAX_DEPTH:
            raise ValueError(f"depths go up to {MAX_DEPTH} layers, got {depth}")


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    values = list(values)
    if not values:
        raise ValueError(f"{name} needs at least one value")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} takes whole numbers ≥ 1, got {value!r}")
    return values


def expand_grid(
    *,
    depths: Sequence[int] = (),
    d_in: Sequence[int] = (),
    width: Sequence[int] = (),
    d_out: Sequence[int] = (),
    batch: Sequence[int] = (1,),
    dtype: Sequence[str] = ("float32",),
    device: str = "cpu",
    shapes: Sequence[tuple[Sequence[int], int]] = (),
) -> list[Point]:
    """Every combination of depths × d_in × width × d_out × batch × dtype, then ``shapes``.

    ``shapes`` are explicit (widths, batch) pairs, each taken in every dtype. Repeated
    points are dropped; order is kept.

    >>> [p.widths for p in expand_grid(depths=[1, 2], d_in=[3], width=[4], d_out=[1])]
    [(3, 4, 1), (3, 4, 4, 1)]
    """
    for name in dtype:
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}")
    product = [depths, d_in, width, d_out]
    if any(product):
        for name, values in zip(GRID_OPTIONS, product):
            _positive_ints(name, values)
        check_depths(depths)
    batches = _positive_ints("batch", batch)
    uniform = [
        (uniform_widths(*dims), b)
        for dims in itertools.product(*product)
        for b in batches
        if any(product)
    ]
    check_depths([len(ws) - 2 for ws, _ in shapes])
    explicit = [(check_widths(ws), _positive_ints("batch", [b])[0]) for ws, b in shapes]
    points = [Point(ws, b, name, device) for ws, b in uniform + explicit for name in dtype]
    return list(dict.fromkeys(points))


def expand_models(
    models: Sequence[Model],
    *,
    d_in: Sequence[int],
    d_out: Sequence[int],
    batch: Sequence[int] = (1,),
    dtype: Sequence[str] = ("float32",),
    device: str = "cpu",
) -> list[Point]:
    """Every combination of models × d_in × d_out × batch × dtype (a model with each of its
    params already: ``Model.with_params``).

    >>> from jacbench.runs.models import Model
    >>> [p.key("auto").model for p in expand_models([Model("siren")], d_in=[2], d_out=[1, 3])]
    ['siren', 'siren']
    """
    for name in dtype:
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}")
    combos = itertools.product(
        models,
        _positive_ints("d_in", d_in),
        _positive_ints("d_out", d_out),
        _positive_ints("batch", batch),
        dtype,
    )
    points = [Point((d, p), b, name, device, model) for model, d, p, b, name in combos]
    return list(dict.fromkeys(points))


@dataclass(frozen=True)
class Preset:
    """A named grid: a product of the grid options, or a fixed list of (widths, batch)."""

    name: str
    description: str
    grid: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    shapes: tuple[tuple[tuple[int, ...], int], ...] = ()
    methods: tuple[str, ...] | None = None  # None: every installed method of the operator
    min_time: float | None = None  # None: the run's default
    operator: str = "jacobian"  # what a run of the preset computes unless --operator says
    # Models and their points: (family, params, D, P, B); a preset of models has no grid.
    models: tuple[tuple[str, Mapping[str, object], int, int, int], ...] = ()

    def points(
        self,
        dtype: Sequence[str] = ("float32",),
        device: str = "cpu",
        overrides: Mapping[str, Sequence[int] | None] | None = None,
    ) -> list[Point]:
        """The preset's points; ``overrides`` replace grid options of a product preset.

        Raises:
            ValueError: overrides given to a fixed list of shapes.
        """
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        if self.models:
            if given:
                raise ValueError(
                    f"preset {self.name} is a fixed list of models and shapes; grid options do "
                    "not apply to it"
                )
            return [
                point
                for family, params, d, p, b in self.models
                for point in expand_models(
                    [Model(family, ref=family).with_params(params)],
                    d_in=[d], d_out=[p], batch=[b], dtype=dtype, device=device,
                )
            ]  # fmt: skip
        if self.shapes and given:
            raise ValueError(
                f"preset {self.name} is a fixed list of shapes; grid options do not apply to it"
            )
        grid = {**self.grid, **given}
        return expand_grid(**grid, dtype=dtype, device=device, shapes=self.shapes)

    def installed_methods(self, operator: str | None = None) -> list[str]:
        """The preset's methods that are installed here (default: every installed one); for
        another ``operator`` than the preset's own, every installed method of that one."""
        if operator is not None and operator != self.operator:
            return list(model_methods(operator) if self.models else default_methods(operator))
        default = MODEL_METHODS if self.models else default_methods(self.operator)
        return [m for m in self.methods or default if METHODS[m].available()]

    def missing_methods(self) -> list[str]:
        """The methods the preset names that are not installed here (left out of its runs)."""
        return [m for m in self.methods or () if not METHODS[m].available()]


_JACBENCH_AND_FUNC = ("forward", "reverse", "mixed", "auto", "func-jacfwd", "func-jacrev")
_JAX = ("jax-jacfwd", "jax-jacrev")

# One shape per class of work the performance goal names, each where a fixed kernel rule
# once lost to JAX on some CPU: skinny forward blocks through wide layers, a matrix-vector
# chain, PINN batches (elementwise-bound), a classifier batch, a batched square net, and a
# tiny net (launch-bound).
SHAPE_CLASSES: tuple[tuple[tuple[int, ...], int], ...] = (
    (uniform_widths(8, 3, 600, 600), 1),
    (uniform_widths(4, 700, 700, 1), 1),
    (uniform_widths(6, 2, 64, 1), 4096),
    (uniform_widths(6, 3, 128, 3), 1024),
    (uniform_widths(4, 784, 256, 10), 64),
    (uniform_widths(8, 64, 64, 64), 256),
    (uniform_widths(8, 4, 24, 6), 1),
)

PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        preset.name: preset
        for preset in [
            Preset(
                "quick",
                "a small crossover in under two minutes",
                grid={"depths": (3,), "d_in": (4, 64, 512), "width": (256,), "d_out": (4, 64, 512)},
                min_time=0.1,
            ),
            Preset(
                "seed",
                "D=K=1000 P=1 L=3/5/10, the textbook's timing exercise",
                grid={"depths": (3, 5, 10), "d_in": (1000,), "width": (1000,), "d_out": (1,)},
            ),
            Preset(
                "crossover",
                "D×P grid at L=5 K=512: where forward and reverse mode trade places",
                grid={
                    "depths": (5,),
                    "d_in": (1, 16, 128, 1024),
                    "width": (512,),
                    "d_out": (1, 16, 128, 1024),
                },
                methods=_JACBENCH_AND_FUNC,
            ),
            # P=1 deep nets, D=1 wide outputs, square, hourglass, small, batched, large, and the
            # textbook validation case L=10 D=2 K=30 P=10.
            Preset(
                "peers",
                "the performance grid against torch.func, autograd and JAX",
                shapes=(
                    (uniform_widths(10, 1000, 1000, 1), 1),
                    (uniform_widths(5, 1000, 1000, 1), 1),
                    (uniform_widths(5, 1, 1000, 1000), 1),
                    (uniform_widths(5, 512, 512, 512), 1),
                    ((512, 512, 16, 512, 512), 1),
                    ((16, 32, 32, 32, 4), 1),
                    (uniform_widths(5, 256, 256, 1), 64),
                    ((64, 128, 128, 128, 64), 32),
                    (uniform_widths(3, 1024, 1024, 1024), 1),
                    (uniform_widths(5, 1024, 1024, 16), 8),
                    (uniform_widths(10, 2, 30, 10), 1),
                    *SHAPE_CLASSES,
                ),
                methods=(*_JACBENCH_AND_FUNC, "autograd-forward", "autograd-reverse", *_JAX),
            ),
            Preset(
                "classes",
                "one shape per performance class (skinny, matrix-vector, PINN, classifier, "
                "batched square, tiny): auto against torch.func and JAX",
                shapes=SHAPE_CLASSES,
                methods=("auto", "func-jacfwd", "func-jacrev", *_JAX),
            ),
            Preset(
                "textbook",
                "the exercise's shapes: D=K=1000 P=1 L=3/5/10, and L=10 D=2 K=30 P=10",
                shapes=(
                    (uniform_widths(3, 1000, 1000, 1), 1),
                    (uniform_widths(5, 1000, 1000, 1), 1),
                    (uniform_widths(10, 1000, 1000, 1), 1),
                    (uniform_widths(10, 2, 30, 10), 1),
                ),
                methods=(*_JACBENCH_AND_FUNC, "naive-forward", "naive-reverse"),
            ),
            # Physics-informed networks: 2–3 inputs (space, time), 1–3 outputs, a Jacobian
            # at every collocation point of a batch.
            Preset(
                "pinn",
                "PINN-sized batches: D=2–3, P=1–3, K=64–128, L=4–8, B=1024–8192",
                shapes=(
                    (uniform_widths(4, 2, 64, 1), 1024),
                    (uniform_widths(4, 2, 64, 1), 8192),
                    (uniform_widths(6, 2, 64, 1), 4096),
                    (uniform_widths(6, 3, 128, 3), 1024),
                    (uniform_widths(8, 3, 128, 1), 4096),
                    (uniform_widths(8, 2, 128, 3), 8192),
                ),
                methods=_JACBENCH_AND_FUNC,
            ),
            # The Laplacian of a PINN's output at every collocation point (the residual of
            # Poisson's or the heat equation); --operator hessian times the whole Hessian.
            Preset(
                "pinn-laplacian",
                "PINN Laplacians: D=2–3, P=1, K=64–128, L=4–8, B=1024–8192",
                shapes=(
                    (uniform_widths(6, 2, 64, 1), 4096),
                    (uniform_widths(4, 2, 128, 1), 2048),
                    (uniform_widths(6, 3, 128, 1), 1024),
                    (uniform_widths(8, 3, 64, 1), 8192),
                    (uniform_widths(4, 2, 64, 1), 1024),
                    (uniform_widths(8, 2, 128, 1), 8192),
                ),
                operator="laplacian",
            ),
            # Where the Hessian's modes trade places: the structured form while D < K, the
            # compositions once D passes K, forward over forward for many outputs of few inputs.
            Preset(
                "hessian-crossover",
                "Hessian modes over D×P at L=4 K=64, B=16: where each mode wins",
                grid={
                    "depths": (4,),
                    "d_in": (2, 16, 64, 256),
                    "width": (64,),
                    "d_out": (1, 16),
                    "batch": (16,),
                },
                methods=(
                    "hessian-fwd-over-rev",
                    "hessian-rev-over-fwd",
                    "hessian-fwd-over-fwd",
                    "hessian-structured",
                    "hessian-auto",
                    "func-hessian",
                ),
                operator="hessian",
            ),
            Preset(
                "classifier",
                "an MNIST-sized classifier: D=784 K=256 P=10, L=2/4, B=1/64",
                grid={"depths": (2, 4), "d_in": (784,), "width": (256,), "d_out": (10,)}
                | {"batch": (1, 64)},
            ),
            # Normalising flows need the full square Jacobian (its log-determinant).
            Preset(
                "flow",
                "square Jacobians of flow-like nets: D=K=P=64–512, L=4",
                shapes=tuple((uniform_widths(4, n, n, n), 1) for n in (64, 128, 256, 512)),
                methods=_JACBENCH_AND_FUNC,
            ),
            # jacbench.ad.builtin_models' models, each where forward mode should win (few inputs,
            # many outputs), where reverse mode should (many inputs, one output), and at a
            # batch: sized for two cores.
            Preset(
                "models",
                "every built-in model family (residual, SIREN, Fourier PINN, CNN, attention, "
                "the MLP) where each mode should win: torch.func's modes against auto",
                models=(
                    ("mlp", {"width": 128, "depth": 4}, 256, 1, 1),
                    ("mlp", {"width": 128, "depth": 4}, 2, 128, 1),
                    ("mlp", {"width": 128, "depth": 4}, 2, 1, 1024),
                    ("residual", {"width": 128, "depth": 3}, 256, 1, 1),
                    ("residual", {"width": 128, "depth": 3}, 4, 256, 1),
                    ("residual", {"width": 128, "depth": 3}, 64, 64, 16),
                    ("siren", {"width": 128, "depth": 3}, 256, 1, 1),
                    ("siren", {"width": 128, "depth": 3}, 3, 128, 1),
                    ("siren", {"width": 128, "depth": 3}, 2, 1, 1024),
                    ("fourier", {"width": 128, "depth": 3}, 2, 1, 1024),
                    ("fourier", {"width": 128, "depth": 3}, 3, 64, 64),
                    ("cnn", {"channels": 8}, 784, 10, 1),
                    ("cnn", {"channels": 8}, 784, 10, 16),
                    ("attention", {"seq": 8, "heads": 2}, 64, 1, 1),
                    ("attention", {"seq": 8, "heads": 2}, 16, 256, 1),
                    ("attention", {"seq": 8, "heads": 2}, 128, 128, 8),
                ),
                methods=MODEL_METHODS,
            ),
            # The classic AD problems (jacbench.ad.classic) at ADBench's and GradBench's
            # sizes for two cores: hand tracking with 100 and 500 correspondences (forward
            # mode's), a batch of bundle adjustment blocks and a Gaussian mixture of 5
            # components in 2-D over 1000 points (reverse mode's), an ODE's square chain.
            Preset(
                "classic",
                "the classic AD problems (hand tracking, bundle adjustment, a Gaussian "
                "mixture, an ODE integrator), each where ADBench or GradBench poses it",
                models=(
                    ("hand", {}, 26, 300, 1),
                    ("hand", {}, 26, 1500, 1),
                    ("ba", {}, 15, 2, 1),
                    ("ba", {}, 15, 2, 256),
                    ("gmm", {}, 30, 1, 1),
                    ("gmm", {"dims": 10}, 5 * 66, 1, 1),
                    ("ode", {}, 8, 8, 1),
                    ("ode", {"steps": 50}, 32, 32, 4),
                ),
                methods=MODEL_METHODS,
            ),
            Preset(
                "smoke",
                "two tiny shapes, seconds (the pytest-benchmark default)",
                shapes=((uniform_widths(3, 64, 64, 1), 1), (uniform_widths(3, 1, 64, 64), 1)),
                methods=_JACBENCH_AND_FUNC,
            ),
            Preset(
                "large",
                "GEMM-bound shapes of 2048–4096 units",
                shapes=(
                    (uniform_widths(10, 4096, 4096, 1), 1),
                    (uniform_widths(5, 2048, 2048, 2048), 1),
                    (uniform_widths(5, 1024, 1024, 16), 256),
                ),
                methods=_JACBENCH_AND_FUNC,
            ),
        ]
    }
)


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: no such preset.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; expected one of: {', '.join(PRESETS)}"
        ) from None
