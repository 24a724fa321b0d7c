import pytest
import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.ad import cost
from jacbench.runs.methods import METHODS, default_methods, get_method
from jacbench.runs.operators import OPERATORS


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("batch", [None, 3])
def test_every_method_matches_the_float64_reference(name, batch):
    if not METHODS[name].available():
        pytest.skip(f"{name} needs {METHODS[name].requirement}")
    method = METHODS[name]
    net = make_mlp(3, 6, 10, 4, dtype=torch.float64, bias=False)
    x = torch.randn((6,) if batch is None else (batch, 6), dtype=torch.float64)
    result = method.build(net, x)()
    # the operator's reference: torch.func's jacrev, or its hessian (trace, times v)
    ref = OPERATORS[method.operator].reference(net, x)
    assert tuple(result.shape) == tuple(ref.shape)
    if method.exact:
        assert relative_error(result, ref) < 1e-12
    else:  # Hutchinson's 64 directions: an estimate of the right size, not the value
        assert 0 < relative_error(result, ref) < 1


def test_second_order_methods_by_operator():
    assert default_methods("hessian")[:6] == (
        "hessian-fwd-over-rev",
        "hessian-rev-over-rev",
        "hessian-rev-over-fwd",
        "hessian-fwd-over-fwd",
        "hessian-structured",
        "hessian-auto",
    )
    assert {"func-hessian", "func-jacrev-jacrev", "func-jacfwd-jacfwd", "func-jacrev-jacfwd"} <= (
        set(default_methods("hessian"))
    )
    assert default_methods("laplacian")[:4] == (
        "forward-laplacian",
        "hessian-trace",
        "hutchinson",
        "func-hessian-trace",
    )
    assert default_methods("hvp")[:2] == ("hvp", "func-hvp")
    for method in METHODS.values():
        if method.operator == "hessian":
            assert method.mode in (*cost.SECOND_ORDER_MODES, "auto")
    assert [m.name for m in METHODS.values() if not m.exact] == ["hutchinson"]


def test_registry_names_match_the_design():
    jacobian = tuple(name for name, m in METHODS.items() if m.operator == "jacobian")
    assert jacobian == (
        "forward",
        "reverse",
        "mixed",
        "auto",
        "func-jacfwd",
        "func-jacrev",
        "autograd-forward",
        "autograd-reverse",
        "naive-forward",
        "naive-reverse",
        "auto-compiled",
        "auto-cudagraph",
        "fused",
        "jax-jacfwd",
        "jax-jacrev",
    )
    assert default_methods()[:4] == ("forward", "reverse", "mixed", "auto")
    opted = {"auto-compiled", "auto-cudagraph", "fused"}
    assert not opted & set(default_methods())  # opt-in only
    jacobians = [m for m in METHODS.values() if m.operator == "jacobian"]
    assert all(m.mode in ("forward", "reverse", "mixed", "auto") for m in jacobians)


def test_naive_methods_materialise_diagonals(monkeypatch):
    calls = []
    original = torch.diag
    monkeypatch.setattr(torch, "diag", lambda t: calls.append(t.shape) or original(t))
    net = make_mlp(2, 3, 5, 1)
    METHODS["naive-reverse"].build(net, torch.randn(4, 3))()
    assert len(calls) == 4 * 2  # one diag per layer, per sample


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'nope'; expected one of: forward"):
        get_method("nope")


def test_auto_compiled_compiles_every_point_before_it_is_timed():
    # Past eight networks torch.compile's cache for one function is full: each build starts
    # from empty caches (NOTE: [Compiled before timed] in jacbench.runs.methods).
    for width in range(2, 12):
        net = make_mlp(1, 3, width, 2)
        x = torch.randn(3)
        call = METHODS["auto-compiled"].build(net, x)
        assert call.compile_s > 0.01, width  # it compiled, and did not fall back to eager
        reference = reference_jacobian(net.to(dtype=torch.float64), x.double())
        assert relative_error(call(), reference) < 1e-5
