"""jacbench's own matrix-vector kernels: exact against float64 torch, refused where they
cannot run, and a one-line reason where they do not build."""

import dataclasses
import shutil

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from jacbench import MLP, jacobian, jacobian_forward, jacobian_reverse
from jacbench.ad.jacobians import reference_jacobian, relative_error
from jacbench.kernels import eager, native
from jacbench.kernels.products import narrow_product
from jacbench.measure import tuning
from tests.test_tuning import forcing

needs_kernels = pytest.mark.skipif(
    not native.available(), reason=f"the C++ kernels do not run here: {native.why_not()}"
)

# Rows and columns that are and are not multiples of the 2–8 rows and 16 lanes a pass takes,
# fewer rows than threads, a lone column, a long row read by one vector with a whole vector
# left after its pairs of vectors (1050 = 32·32 + 16 + 10).
SHAPES = [(1000, 1000), (7, 13), (700, 333), (17, 1), (1, 40), (3, 1025), (5, 1050)]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("n", "k"), SHAPES)
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 15])
@pytest.mark.parametrize("threads", [1, 2])
def test_products_match_float64_torch(dtype, n, k, m, threads):
    generator = torch.Generator().manual_seed(n * k + m)
    w = torch.randn(n, k, generator=generator, dtype=dtype)
    x = torch.randn(m, k, generator=generator, dtype=dtype)  # X·Wᵀ: forward mode's rows
    g = torch.randn(m, n, generator=generator, dtype=dtype)  # G·W: reverse mode's rows
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        xw, gw = native.rows_times(x, w.T), native.rows_times(g, w)
    finally:
        torch.set_num_threads(before)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-13
    exact_xw = x.double() @ w.double().T
    exact_gw = g.double() @ w.double()
    assert xw.dtype == dtype and xw.shape == (m, n) and gw.shape == (m, k)
    assert (xw.double() - exact_xw).abs().max() <= tolerance * max(1.0, exact_xw.abs().max())
    assert (gw.double() - exact_gw).abs().max() <= tolerance * max(1.0, exact_gw.abs().max())


@needs_kernels
@pytest.mark.parametrize("forward", [True, False])
def test_narrow_product_runs_them_up_to_fifteen_rows(forward, monkeypatch):
    w = torch.randn(64, 48)
    matrix = w.T if forward else w
    ran = []
    real = native.rows_times

    def watched(*args):
        product = real(*args)
        ran.append(product is not None)
        return product

    monkeypatch.setattr(native, "rows_times", watched)
    for m in (1, 7, 15, 16):
        block = torch.randn(m, matrix.shape[0])
        got = narrow_product(block, matrix, forward, "native")
        assert got.shape == (m, matrix.shape[1])
        assert torch.allclose(got, block @ matrix, atol=1e-5)
    assert ran == [True, True, True, False]  # 16 rows: not a narrow block, split took them


@needs_kernels
def test_they_step_aside_for_whatever_watches_torch():
    w, x = torch.randn(8, 8), torch.randn(1, 8)
    assert native.fits(x, w) and native.fits(x, w.T)
    assert not native.fits(x.requires_grad_(), w)  # autograd would not see them
    x = x.detach()
    assert not native.fits(torch.randn(8, 2)[:, :1].T, w)  # the row is not contiguous
    assert not native.fits(x, torch.randn(8, 16)[:, ::2])  # neither W nor Wᵀ row-major
    assert native.fits(torch.randn(15, 8), w)
    assert not native.fits(torch.randn(16, 8), w)  # not a narrow block
    assert not native.fits(x.int(), w.int())
    assert not native.fits(x.double(), w)  # dtypes differ
    assert not native.fits(x, torch.randn(8)) and not native.fits(x, torch.randn(2, 8, 8))
    assert not native.fits(x, torch.randn(8, 0)) and not native.fits(x[:, :0], w[:0])
    with FlopCounterMode(display=False):  # would not count them
        assert not native.fits(x, w)
    seen = []
    torch.func.vmap(lambda v: seen.append(native.fits(v[None], w)) or v)(torch.randn(3, 8))
    assert seen == [False]


@needs_kernels
@pytest.mark.parametrize("routine", [jacobian_forward, jacobian_reverse])
def test_a_float64_jacobian_through_them_is_exact(routine):
    net = MLP.from_widths((1, 600, 600, 1), dtype=torch.float64)
    x = torch.randn(1, dtype=torch.float64)
    with tuning.use(forcing("native")):
        jac = routine(net, x)
    assert relative_error(jac, reference_jacobian(net, x)) < 1e-12


@pytest.fixture
def rebuild(monkeypatch, tmp_path):
    """The kernels looked for afresh, in an empty cache."""
    monkeypatch.setenv("JACBENCH_CACHE_DIR", str(tmp_path))
    native._library.cache_clear()
    yield tmp_path
    native._library.cache_clear()


def test_a_failed_build_is_one_line_and_products_fall_back(rebuild, monkeypatch):
    monkeypatch.setenv("CXX", "false")  # a "compiler" that fails at once
    assert not native.available()
    assert native.why_not() == "the C++ kernels did not build: false failed: 1"
    assert not list(rebuild.glob("native/*"))  # no half-built library left behind
    w, g = torch.randn(1024, 1024), torch.randn(1, 1024)
    assert torch.allclose(narrow_product(g, w, False, "native"), g @ w, atol=1e-4)


def test_no_compiler_says_so(rebuild, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    assert native.why_not() == "no C++ compiler (set CXX, or install g++ or clang++)"


@needs_kernels
def test_a_build_is_named_by_the_machine_and_reused(rebuild):
    assert native.available()
    built = list(rebuild.glob("native/narrow-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native._library.cache_clear()
    assert native.available()
    assert built[0].stat().st_mtime_ns == stamp  # loaded, not built again


# ------------------------------------------------------- the chains (one C++ call a Jacobian)
# Widths with tails (not multiples of the 16 lanes or the 4 and 8 rows a pass takes), layers
# narrower than the threads, one input, one output, and the most rows a chain takes.
CHAINS = [
    (1000, 1000, 1000, 1000, 1),  # the seed problem at L = 3
    (3, 600, 600, 600, 600),  # skinny forward mode
    (5, 37, 3),
    (13, 200, 61, 200, 15),
    (4, 9, 2),
    (14, 33, 17, 20),
    (1, 100, 100, 7),
    (2, 1, 1, 1, 1),
    (333, 301, 301, 1),  # one output through weights read as two streams, an odd row left
]


def _chain_reference(widths, bias, scale=1.0):
    net = MLP.from_widths(widths, bias=bias, seed=sum(widths))
    x = scale * torch.randn(widths[0], generator=torch.Generator().manual_seed(len(widths)))
    return net, x, reference_jacobian(net.to(dtype=torch.float64), x.double())


@needs_kernels
@pytest.mark.parametrize("widths", CHAINS)
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_both_chains_match_float64_torch_func(widths, bias, threads):
    net, x, reference = _chain_reference(widths, bias)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reverse = native.chain(net.weights, net.biases).reverse(x)
        forward = native.chain(net.weights, net.biases).forward(x)
    finally:
        torch.set_num_threads(before)
    d, p = widths[0], widths[-1]
    for jac, takes in ((reverse, p <= native.MAX_ROWS), (forward, d < native.MAX_ROWS)):
        if not takes:
            assert jac is None
            continue
        assert jac.shape == (p, d) and jac.dtype == torch.float32
        assert relative_error(jac, reference) < 1e-5


@needs_kernels
def test_the_chains_tanh_holds_where_units_saturate():
    """Inputs 30× larger drive most units to |z| > 8, where the rational tanh is clamped and
    σ' = 1 − h² is a difference of nearly equal numbers."""
    net, x, reference = _chain_reference((4, 64, 64, 3), bias=True, scale=30.0)
    made = native.chain(net.weights, net.biases)
    for jac in (made.reverse(x), made.forward(x)):
        assert (jac.double() - reference).abs().max() < 1e-5 * max(1.0, reference.abs().max())


def _reverse(weights, biases, x):
    """A chain made for these tensors, by reverse mode at x; None where either refuses."""
    made = native.chain(weights, biases)
    return None if made is None else made.reverse(x)


def _forward(weights, biases, x):
    made = native.chain(weights, biases)
    return None if made is None else made.forward(x)


@needs_kernels
def test_the_chains_refuse_what_they_cannot_take():
    net, x, _ = _chain_reference((4, 9, 9, 2), bias=False)
    w, b = list(net.weights), list(net.biases)
    assert _reverse(w, b, x) is not None
    assert _reverse(w, b, x.double()) is None  # float32 only
    assert _reverse(w, b, torch.randn(3, 4)) is None  # one input only
    assert _reverse(w, b, torch.randn(5)) is None  # x does not fit W_1
    assert _reverse(w, b, x.requires_grad_()) is None  # autograd would not see it
    x = x.detach()
    strided = [w[0].T.contiguous().T, *w[1:]]
    assert _reverse(strided, b, x) is None  # a weight not row-major
    partly = [torch.zeros(9), None]
    assert _reverse(w, partly, x) is None  # some layers biased, some not
    with FlopCounterMode(display=False):  # would not count it
        assert _reverse(w, b, x) is None
    wide = MLP.from_widths((15, 8, 16))
    assert _reverse(wide.weights, wide.biases, torch.randn(15)) is None  # P = 16
    assert _forward(wide.weights, wide.biases, torch.randn(15)) is None  # 16 rows


@needs_kernels
@pytest.mark.parametrize(
    ("routine", "chain", "widths"),
    [
        (jacobian_reverse, "reverse", (300, 300, 300, 300, 2)),
        (jacobian_forward, "forward", (3, 300, 300, 300, 300)),
    ],
)
def test_the_routines_take_a_chain_only_where_the_tuning_gave_it_every_product(
    routine, chain, widths, monkeypatch
):
    net, x, reference = _chain_reference(widths, bias=True)
    calls = []
    real = getattr(native.Chain, chain)
    monkeypatch.setattr(native.Chain, chain, lambda self, x: calls.append(1) or real(self, x))
    with tuning.use(forcing("native")):
        assert relative_error(routine(net, x), reference) < 1e-5
        assert relative_error(jacobian(net, x, "auto"), reference) < 1e-5
        assert len(calls) == 2  # the routine, and auto (which predicts its mode here)
        calls.clear()
        relu = MLP.from_widths(widths, activation="relu")
        assert relu.native_chain is None
        routine(relu, x)  # another activation: the per-product route
        assert net.to(dtype=torch.float64).native_chain is None
        routine(net.to(dtype=torch.float64), x.double())  # float64: the same
        routine(net, torch.stack([x, x]))  # a batch: the same
    with tuning.use(forcing("split")):  # the tuning chose another kernel
        assert relative_error(routine(net, x), reference) < 1e-5
    assert calls == []


@needs_kernels
def test_a_chain_made_once_sees_the_weights_change_in_place_and_their_tracking():
    net, x, _ = _chain_reference((6, 50, 50, 2), bias=True)
    made = net.native_chain
    assert made is net.native_chain  # made once per network
    with torch.no_grad():
        net.weights[1].mul_(-0.5)  # an update in place (an optimiser step)
    after = reference_jacobian(net.to(dtype=torch.float64), x.double())
    assert relative_error(made.reverse(x), after) < 1e-5
    net.weights[0].requires_grad_()  # tracked now: autograd would not see the kernel
    assert made.reverse(x) is None and made.forward(x) is None
    with torch.no_grad():
        assert made.reverse(x) is not None
    net.weights[0].requires_grad_(False)
    net.weights[2].data = torch.randn(2, 50)  # new memory: the old chain's pointers dangle
    assert (
        relative_error(
            jacobian_reverse(net, x), reference_jacobian(net.to(dtype=torch.float64), x.double())
        )
        < 1e-5
    )  # the call made the network's parts again, a new chain among them
    assert net.native_chain is not made and net.native_chain.tensors[2] is net.weights[2]


def _routes():
    """Every way one input's Jacobian can go: a small network by each of its routes, a
    larger one by the C++ chain or torch's products (which read the transposes' views)."""
    for route in tuning.SMALL_ROUTES:
        small = {"small forward": route, "small reverse": route}
        yield (4, 24, 24, 24, 6), dataclasses.replace(tuning.DEFAULTS, small=small)
    for kernel in ("native", "split"):
        yield (6, 200, 200, 2), forcing(kernel)


@needs_kernels
@pytest.mark.parametrize(
    "change",
    [
        lambda w: setattr(w, "data", torch.randn(w.shape)),  # new memory, the same shape
        lambda w: setattr(w, "data", w.data.t()),  # square: the same address and shape
        lambda w: setattr(w, "data", w.data.t().contiguous()),  # new memory, moved values
    ],
    ids=["new-memory", "transposed-view", "transposed-copy"],
)
@pytest.mark.parametrize("routine", [jacobian_forward, jacobian_reverse])
@pytest.mark.parametrize(("widths", "tuned"), list(_routes()))
def test_a_weight_given_new_memory_or_layout_is_read_as_it_is_now(change, routine, widths, tuned):
    net, x, _ = _chain_reference(widths, bias=False)
    with tuning.use(tuned):
        routine(net, x)  # every part this route reads made from the old tensor
        with torch.no_grad():
            change(net.weights[1])  # square in both networks
        reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
        assert relative_error(routine(net, x), reference) < 1e-5


@needs_kernels
def test_a_weight_that_no_longer_fits_its_neighbours_is_named_at_the_call():
    net, x, _ = _chain_reference((6, 50, 50, 2), bias=False)
    jacobian_reverse(net, x)
    with torch.no_grad():
        net.weights[1].resize_(40, 50)  # shrunk at the same address
    with pytest.raises(ValueError, match="weight 3 has 50 columns but weight 2 has 40 rows"):
        jacobian_reverse(net, x)


@needs_kernels
def test_the_cpp_tanh_is_within_4e7_of_tanh_everywhere():
    specials = torch.tensor([0.0, -0.0, 1e-5, -3.9e-4, 4.1e-4, 7.99, 8.0, 1e4, -1e30])
    z = torch.cat(
        [torch.linspace(-12, 12, 100_003), specials, torch.tensor([torch.inf, -torch.inf])]
    )
    exact = torch.tanh(z.double())
    for threads in (1, 2):  # 100k elements: shared between the threads, with a tail
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            got = native.tanh_(z.clone())
        finally:
            torch.set_num_threads(before)
        assert (got.double() - exact).abs().max() < 4e-7
    assert native.tanh_(torch.tensor([float("nan"), 1.0]))[0].isnan()
    small = torch.tensor([1e-5, -2e-4])
    assert torch.equal(native.tanh_(small.clone()), small)  # tanh(x) = x to float32 there


@needs_kernels
def test_the_cpp_tanh_is_exactly_one_where_float32s_tanh_is():
    z = torch.tensor([9.02, 9.5, 20.0, 1e30, torch.inf])
    z = torch.cat([z, -z])
    assert torch.equal(native.tanh_(z.clone()), torch.tanh(z))  # ±1: σ' = 1 − tanh² is 0
    assert torch.equal(torch.tanh(z).abs(), torch.ones_like(z))


@needs_kernels
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_a_saturated_network_has_a_zero_jacobian_by_the_chain(mode):
    # Every first-layer unit saturated: tanh' is 0 in float32 there, and J exactly 0 (the
    # rational tanh's 0.99999982, on the units past the last whole vector, made it 4.5e-8).
    net = MLP.from_widths((3, 70, 70, 2), seed=2)  # 70 = 4 vectors of 16 and 6
    x = torch.tensor([1e4, 0.5, -0.5])
    assert (net.weights[0][:, 0].abs() * 1e4 > 20).all()
    chain = net.native_chain
    assert chain is not None
    got = chain.forward(x) if mode == "forward" else chain.reverse(x)
    reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
    assert torch.equal(reference, torch.zeros_like(reference))
    assert torch.equal(got, torch.zeros_like(got))


@needs_kernels
def test_the_cpp_tanh_refuses_what_it_cannot_take():
    z = torch.randn(64, 64)
    assert native.tanh_(z.double()) is None
    assert native.tanh_(z.T) is None  # not contiguous
    tracked = z.clone().requires_grad_()
    assert native.tanh_(tracked) is None and torch.equal(tracked, z)
    with FlopCounterMode(display=False):
        assert native.tanh_(z) is None


def test_a_tensors_layout_tells_every_way_it_can_change_under_a_view():
    w = torch.randn(6, 6)
    before = eager.layout([w])
    for change in (
        lambda t: setattr(t, "data", t.data.t()),  # the same address and shape
        lambda t: setattr(t, "data", t.data.view(torch.int32)),  # the same bytes, read otherwise
        lambda t: t.requires_grad_(),  # views made before do not track
    ):
        t = w.clone()
        made = eager.layout([t])
        change(t)
        assert eager.layout([t]) != made
    assert eager.layout([w]) == before
