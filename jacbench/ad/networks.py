"""Deep MLPs  f(x) = W_F · σ_L(W_L · … σ_1(W_1 · x + b_1) … + b_L) + b_F.

``widths = (D, K_1, …, K_L, P)``: W_1 is K_1×D, W_i is K_i×K_{i-1}, W_F is P×K_L.
Depth L counts the σ layers, so a network has L+1 weight matrices. Biases are
optional (the textbook network has none); they do not change the Jacobian's
formula, only the points σ' is evaluated at.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from jacbench.ad.cost import check_widths
from jacbench.kernels import native, small
from jacbench.kernels.activations import Activation, get_activation
from jacbench.kernels.eager import backed, layout

INITS = ("lecun", "xavier", "normal")


class UnsupportedNetwork(ValueError):
    """A routine does not take this network (too wide, another dtype, …): a sweep records
    the row as skipped, not as an error."""


_SEQUENTIAL_ACTIVATIONS: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ReLU: "relu",
    nn.Softplus: "softplus",
    nn.Identity: "identity",
}


# NOTE: [A network's derived parts follow its tensors]
#     An MLP keeps what its routes read on every call (its widths, the weights' transposes
#     as views, the NumPy route's arrays, the C++ chain's pointers), made from its tensors.
#     In-place changes of values (an optimiser's step, ``copy_``, ``load_state_dict``) are
#     seen through them; a tensor given new memory or a new layout is not: after
#     ``w.data = torch.randn(…)`` the views would still read the old storage (a wrong
#     Jacobian, relative error ~1), and the chain's pointers would point at freed memory.
#     The transposes' views also keep the autograd tracking their weights had when they
#     were made (``requires_grad_`` later: gradients through the Jacobian silently short),
#     and record none where they are made under ``no_grad`` or inference mode: they are
#     always made with autograd on, or a validation pass before training would cut every
#     later gradient off at them (dJ/dW wrong, or None).
#     So each call compares the tensors' (address, shape, strides, dtype, tracking) with
#     those the parts were made from (``eager.layout``) and derives them again where one
#     differs (``MLP.refresh``), checking again that the parts fit together and that each
#     tensor's storage still holds its elements (FSDP frees a storage under its tensor).
#     The comparison costs about 0.4 µs a tensor. The C++ chain keeps views of the tensors
#     it points at: a thread that replaces ``.data`` while another computes cannot free
#     the memory under a running call (the result may mix old and new weights, as torch's
#     own operations would).


@dataclass(frozen=True)
class MLP:
    """An immutable MLP: weights ``(W_1, …, W_L, W_F)``, biases, one activation per σ layer.

    Build one with ``make_mlp``, ``MLP.from_widths`` or ``MLP.from_sequential``.

    >>> net = make_mlp(depth=2, d_in=3, width=4, d_out=2)
    >>> net.widths, net.depth, net(torch.ones(5, 3)).shape
    ((3, 4, 4, 2), 2, torch.Size([5, 2]))
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor | None, ...]
    activations: tuple[Activation, ...]
    # Derived once (NOTE: [A network's derived parts follow its tensors]): every Jacobian
    # call reads the widths and forward mode the transposes; on small networks building
    # them per call costs as much as the arithmetic.
    _widths: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _transposed: tuple[Tensor, ...] = field(init=False, repr=False, compare=False)
    _layout: list[tuple] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._derive()

    def _derive(self) -> None:
        """Check the parts fit together, then derive what calls read (the widths, the
        transposes' views, the tensors' layout) and drop the routes' cached forms."""
        weights, biases, activations = self.weights, self.biases, self.activations
        if len(weights) < 2:
            raise ValueError(
                f"an MLP needs at least 2 weight matrices (depth ≥ 1), got {len(weights)}"
            )
        if len(biases) != len(weights):
            raise ValueError(f"expected {len(weights)} biases (None for none), got {len(biases)}")
        if len(activations) != len(weights) - 1:
            raise ValueError(f"expected {len(weights) - 1} activations, got {len(activations)}")
        reference = weights[0]
        for i, w in enumerate(weights):
            if w.ndim != 2:
                raise ValueError(f"weight {i + 1} must be a matrix, got shape {tuple(w.shape)}")
            if w.dtype != reference.dtype or w.device != reference.device:
                raise ValueError("all weights must share one dtype and device")
            if i > 0 and w.shape[1] != weights[i - 1].shape[0]:
                raise ValueError(
                    f"weight {i + 1} has {w.shape[1]} columns but weight {i} has "
                    f"{weights[i - 1].shape[0]} rows"
                )
            b = biases[i]
            if b is not None and (b.shape != (w.shape[0],) or b.dtype != w.dtype):
                raise ValueError(
                    f"bias {i + 1} must have shape ({w.shape[0]},) and dtype {w.dtype}"
                )
        tensors_layout = self._layout_now()
        if tensors_layout is not None and reference.device.type in ("cpu", "cuda"):
            for kind, tensors in (("weight", weights), ("bias", biases)):
                for i, t in enumerate(tensors):
                    if t is not None and not backed(t):
                        raise ValueError(
                            f"{kind} {i + 1}'s memory was freed or shrunk under it "
                            f"(its storage holds less than its shape {tuple(t.shape)})"
                        )
        widths = (weights[0].shape[1], *(w.shape[0] for w in weights))
        object.__setattr__(self, "_widths", widths)
        with torch.inference_mode(False), torch.enable_grad():  # whatever the caller's mode
            transposed = tuple(w.T for w in weights)
        object.__setattr__(self, "_transposed", transposed)
        object.__setattr__(self, "_layout", tensors_layout)
        for cached in ("numpy_network", "native_chain"):  # functools.cached_property's
            self.__dict__.pop(cached, None)

    def _layout_now(self) -> list[tuple] | None:
        return layout([*self.weights, *(b for b in self.biases if b is not None)])

    def refresh(self) -> None:
        """Derive the network's cached parts again where a weight or bias has been given new
        memory, a new shape, strides or dtype, or autograd's tracking turned on or off
        since they were made (``w.data = …``, ``resize_``, ``requires_grad_``); in-place
        changes of values need nothing. Every Jacobian routine calls it first; until then
        ``widths`` and the other derived properties tell the network as it was.

        Raises:
            ValueError: the tensors no longer fit together as a network, or one's memory
                was freed or shrunk under it.
        """
        if self._layout is not None and self._layout_now() != self._layout:
            self._derive()

    # ------------------------------------------------------------------ shape
    @property
    def widths(self) -> tuple[int, ...]:
        """``(D, K_1, …, K_L, P)``."""
        return self._widths

    @property
    def transposed_weights(self) -> tuple[Tensor, ...]:
        """``(W_1ᵀ, …, W_Fᵀ)`` as views (no copies), made once."""
        return self._transposed

    @functools.cached_property
    def numpy_network(self) -> small.Network | None:
        """The network's parts as NumPy arrays sharing the tensors' memory, made on first
        use (NOTE: [Small networks in NumPy]), for ``jacbench.kernels.small``'s routes; None
        where they cannot take it (not float32 or float64 on the CPU, an activation without
        a NumPy form there)."""
        names = [act.name for act in self.activations]
        return small.network(self.weights, self.biases, names)

    @functools.cached_property
    def native_chain(self) -> native.Chain | None:
        """The network for jacbench's one-call C++ Jacobians of one input, made on first use
        (NOTE: [The reverse chain in one call]); None where they cannot take it (an
        activation other than tanh, not float32 on the CPU, no C++ kernels here)."""
        if any(act.name != "tanh" for act in self.activations):
            return None
        return native.chain(self.weights, self.biases)

    @property
    def depth(self) -> int:
        """L, the number of σ layers."""
        return len(self.activations)

    @property
    def d_in(self) -> int:
        """D, the input dimension."""
        return self._widths[0]

    @property
    def d_out(self) -> int:
        """P, the output dimension."""
        return self._widths[-1]

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self.weights[0].dtype

    @property
    def device(self) -> torch.device:
        """The weights' device."""
        return self.weights[0].device

    # --------------------------------------------------------------- evaluate
    def __call__(self, x: Tensor) -> Tensor:
        """f(x) for x of shape (D,) → (P,) or (B, D) → (B, P)."""
        h = x
        for w, b, act in zip(self.weights, self.biases, self.activations):
            h = act.fn(nn.functional.linear(h, w, b))
        return nn.functional.linear(h, self.weights[-1], self.biases[-1])

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MLP:
        """The network on ``device`` and/or in ``dtype`` (tensors already there are shared,
        as ``Tensor.to`` shares them; ``clone`` copies)."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype)

        return MLP(
            tuple(move(w) for w in self.weights),
            tuple(None if b is None else move(b) for b in self.biases),
            self.activations,
        )

    def clone(self) -> MLP:
        """A copy with tensors of its own: what is done to one leaves the other as it was."""
        return MLP(
            tuple(w.clone() for w in self.weights),
            tuple(None if b is None else b.clone() for b in self.biases),
            self.activations,
        )

    def param_dict(self) -> dict[str, Tensor]:
        """The weights named as in the textbook exercise: ``{"W1", …, "WL", "WF"}``.

        Biases, where the network has them, are ``"b1"`` … ``"bL"``, ``"bF"``. The tensors
        are the network's own (no copies): ``from_param_dict`` inverts this.

        >>> sorted(make_mlp(depth=2, d_in=3, width=4, d_out=1).param_dict())
        ['W1', 'W2', 'WF']
        """
        suffixes = [*(str(i) for i in range(1, self.depth + 1)), "F"]
        params = {f"W{s}": w for s, w in zip(suffixes, self.weights)}
        params.update({f"b{s}": b for s, b in zip(suffixes, self.biases) if b is not None})
        return params

    # ----------------------------------------------------------- constructors
    @classmethod
    def from_widths(
        cls,
        widths: Sequence[int],
        *,
        activation: str | Activation = "tanh",
        init: str = "lecun",
        bias: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> MLP:
        """A seeded network with any ``widths = (D, K_1, …, K_L, P)`` (hourglass ones too).

        Args:
            widths: at least three positive sizes (depth L = len(widths) − 2 ≥ 1).
            activation: one name from ``jacbench.kernels.activations.ACTIVATIONS``, for
                every σ layer.
            init: ``"lecun"`` N(0, 1/fan_in) (default: tanh stays out of saturation),
                ``"xavier"`` N(0, 2/(fan_in+fan_out)), or ``"normal"`` N(0, 1) — the textbook
                exercise's choice, under which deep tanh layers saturate (σ' ≈ 0, J ≈ 0).
            bias: add biases, drawn like the weights of their layer.
            seed: weights are drawn on the CPU in float64 from this seed, then cast and moved,
                so the same seed gives the same network on every device and dtype.

        >>> MLP.from_widths((8, 64, 4, 64, 8)).widths
        (8, 64, 4, 64, 8)
        """
        widths = check_widths(widths)
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; expected one of: {', '.join(INITS)}")
        act = get_activation(activation)
        generator = torch.Generator().manual_seed(seed)
        weights: list[Tensor] = []
        biases: list[Tensor | None] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            std = {
                "lecun": 1 / math.sqrt(fan_in),
                "xavier": math.sqrt(2 / (fan_in + fan_out)),
                "normal": 1.0,
            }[init]
            w = torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * std
            weights.append(w.to(device=device, dtype=dtype))
            if bias:
                b = torch.randn(fan_out, generator=generator, dtype=torch.float64) * std
                biases.append(b.to(device=device, dtype=dtype))
            else:
                biases.append(None)
        return cls(tuple(weights), tuple(biases), (act,) * (len(widths) - 2))

    @classmethod
    def from_param_dict(
        cls, params: Mapping[str, Tensor], activation: str | Activation = "tanh"
    ) -> MLP:
        """The network of a textbook parameter dict ``{"W1": (K, D), "W2" … "WL": (K, K),
        "WF": (P, K)}``, with optional biases ``"b1"`` … ``"bL"``, ``"bF"``.

        Depth L is the number of ``W<i>`` keys; ``activation`` is every σ layer's.

        Raises:
            ValueError: naming the key: a missing, extra or misnumbered key, a value that is
                not a tensor, a shape that does not chain, mixed dtypes or devices.

        >>> import torch
        >>> net = MLP.from_param_dict({"W1": torch.ones(4, 3), "WF": torch.ones(2, 4)})
        >>> net.widths, net.depth
        ((3, 4, 2), 1)
        """
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a dict of tensors, got {type(params).__name__}")
        for key, value in params.items():
            if not isinstance(value, Tensor):
                raise ValueError(f"params[{key!r}] is a {type(value).__name__}, not a tensor")
        numbered = sorted(
            int(key[1:])
            for key in params
            if key[:1] == "W" and key[1:].isdigit() and key == f"W{int(key[1:])}" != "W0"
        )
        if "WF" not in params:
            raise ValueError("params has no 'WF' (the output layer's weight)")
        if not numbered or numbered[0] != 1:
            raise ValueError("params has no 'W1' (the first layer's weight)")
        depth = numbered[-1]
        missing = [f"W{i}" for i in range(1, depth + 1) if i not in numbered]
        if missing:
            raise ValueError(f"params has W1 … W{depth} but no {', '.join(missing)}")
        suffixes = [*(str(i) for i in range(1, depth + 1)), "F"]
        known = {f"{kind}{s}" for s in suffixes for kind in "Wb"}
        extra = sorted(set(params) - known)
        if extra:
            raise ValueError(
                f"params has unexpected keys {', '.join(map(repr, extra))}; expected "
                f"{_numbered('W', depth)}, WF and optional biases {_numbered('b', depth)}, bF"
            )
        weights = tuple(params[f"W{s}"] for s in suffixes)
        biases = tuple(params.get(f"b{s}") for s in suffixes)
        first = weights[0]
        for s, w in zip(suffixes, weights):
            if w.dtype != first.dtype or w.device != first.device:
                raise ValueError(
                    f"params['W{s}'] is {w.dtype} on {w.device} but params['W1'] is "
                    f"{first.dtype} on {first.device}"
                )
            if w.ndim != 2:
                raise ValueError(f"params['W{s}'] must be a matrix, got shape {tuple(w.shape)}")
        for (s, w), (prev_s, prev) in zip(zip(suffixes[1:], weights[1:]), zip(suffixes, weights)):
            if w.shape[1] != prev.shape[0]:
                raise ValueError(
                    f"params['W{s}'] has shape {tuple(w.shape)}: its {w.shape[1]} columns do "
                    f"not match the {prev.shape[0]} rows of params['W{prev_s}']"
                )
        for s, w, b in zip(suffixes, weights, biases):
            if b is not None and (
                b.shape != (w.shape[0],) or b.dtype != w.dtype or b.device != w.device
            ):
                raise ValueError(
                    f"params['b{s}'] must have shape ({w.shape[0]},), dtype {w.dtype} and "
                    f"device {w.device}, got {tuple(b.shape)} {b.dtype} on {b.device}"
                )
        act = get_activation(activation)
        return cls(weights, biases, (act,) * depth)

    @classmethod
    def from_sequential(cls, model: nn.Sequential) -> MLP:
        """The MLP of an ``nn.Sequential`` of Linear layers and activations.

        Accepts ``nn.Linear`` (with or without bias) and ``nn.Tanh``, ``nn.Sigmoid``,
        ``nn.ReLU``, ``nn.Softplus`` (default beta and threshold), ``nn.Identity``.
        Linear and activation layers must alternate, starting and ending with Linear.

        Raises:
            ValueError: naming the first layer that does not fit.
        """
        weights: list[Tensor] = []
        biases: list[Tensor | None] = []
        activations: list[Activation] = []
        expect_linear = True
        for index, layer in enumerate(model):
            where = f"layer {index} ({type(layer).__name__})"
            if isinstance(layer, nn.Linear):
                if not expect_linear:
                    raise ValueError(
                        f"{where}: two Linear layers in a row; put an activation between"
                    )
                weights.append(layer.weight.detach())
                biases.append(None if layer.bias is None else layer.bias.detach())
            elif type(layer) in _SEQUENTIAL_ACTIVATIONS:
                if expect_linear:
                    raise ValueError(f"{where}: expected a Linear layer here")
                if isinstance(layer, nn.Softplus) and (layer.beta != 1 or layer.threshold != 20):
                    raise ValueError(f"{where}: only Softplus(beta=1, threshold=20) is supported")
                activations.append(get_activation(_SEQUENTIAL_ACTIVATIONS[type(layer)]))
            else:
                supported = ", ".join(["Linear", *(t.__name__ for t in _SEQUENTIAL_ACTIVATIONS)])
                raise ValueError(f"{where} is not supported; expected one of: {supported}")
            expect_linear = not expect_linear
        if expect_linear or len(weights) < 2:
            raise ValueError(
                "expected Linear, activation, …, Linear with at least two Linear layers"
            )
        return cls(tuple(weights), tuple(biases), tuple(activations))


def make_mlp(
    depth: int,
    d_in: int,
    width: int,
    d_out: int,
    *,
    activation: str | Activation = "tanh",
    init: str = "lecun",
    bias: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> MLP:
    """The deep tanh-network generator: depth L, input D, width K, output P.

    ``make_mlp(L, D, K, P)`` is ``MLP.from_widths((D, K, …, K, P))`` with L hidden widths;
    see ``MLP.from_widths`` for the keyword arguments. With ``init="normal"`` (N(0, 1),
    the textbook's) tanh saturates once K is more than a few units: most σ' are ≈ 0 and the
    Jacobian of a deep network is ≈ 0, which is why the default is ``"lecun"``.

    >>> net = make_mlp(depth=3, d_in=10, width=20, d_out=1)
    >>> net.widths
    (10, 20, 20, 20, 1)
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a whole number ≥ 1, got {depth!r}")
    return MLP.from_widths(
        (d_in, *([width] * depth), d_out),
        activation=activation,
        init=init,
        bias=bias,
        seed=seed,
        dtype=dtype,
        device=device,
    )


def _numbered(kind: str, depth: int) -> str:
    """``W1 … W3`` for a depth of 3, ``W1`` for one.

    >>> _numbered("W", 3), _numbered("b", 1)
    ('W1 … W3', 'b1')
    """
    return f"{kind}1" if depth == 1 else f"{kind}1 … {kind}{depth}"
