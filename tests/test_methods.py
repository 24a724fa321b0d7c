import pytest
import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.methods import METHODS, default_methods, get_method


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("batch", [None, 3])
def test_every_method_matches_the_float64_reference(name, batch):
    if not METHODS[name].available():
        pytest.skip(f"{name} needs {METHODS[name].requirement}")
    net = make_mlp(3, 6, 10, 4, dtype=torch.float64, bias=False)
    x = torch.randn((6,) if batch is None else (batch, 6), dtype=torch.float64)
    jac = METHODS[name].build(net, x)()
    ref = reference_jacobian(net, x, "jacfwd")
    assert jac.shape == ref.shape
    assert relative_error(jac, ref) < 1e-12


def test_registry_names_match_the_design():
    assert tuple(METHODS) == (
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
        "jax-jacfwd",
        "jax-jacrev",
    )
    assert default_methods()[:4] == ("forward", "reverse", "mixed", "auto")
    assert not {"auto-compiled", "auto-cudagraph"} & set(default_methods())  # opt-in only
    assert all(m.mode in ("forward", "reverse", "mixed", "auto") for m in METHODS.values())


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
