from pathlib import Path

import pytest
import torch

from jacbench import make_mlp, reference_jacobian, relative_error
from jacbench.runs.methods import get_method
from jacbench.runs.routines import (
    LIBRARY,
    TEXTBOOK,
    RoutineError,
    from_callable,
    is_spec,
    load,
    resolve,
    resolve_all,
)

from . import user_routines

SPEC = str(Path(__file__).with_name("user_routines.py"))


def test_load_a_textbook_routine_from_a_file():
    routine = load(f"{SPEC}:textbook_reverse")
    assert routine.name == f"{SPEC}:textbook_reverse"
    assert routine.source == f"{SPEC}:textbook_reverse"
    assert (routine.convention, routine.batched) == (TEXTBOOK, False)
    assert routine.calling == "fn(x, L, param_dict), one sample at a time"


def test_a_file_named_twice_runs_once():
    here = {"isolated": False}
    assert (
        load(f"{SPEC}:textbook_reverse", **here).fn
        is load(f"{SPEC}:transposed", **here).fn.__globals__["textbook_reverse"]
    )


def test_a_loaded_routine_lives_in_a_worker_and_is_never_called_here():
    routine = load(f"{SPEC}:library_batched")
    assert routine.fn is None and routine.ref == f"{SPEC}:library_batched"
    assert (routine.convention, routine.batched) == (LIBRARY, True)  # probed there
    with pytest.raises(RoutineError, match="runs in a worker process"):
        routine.bind(make_mlp(2, 3, 4, 2), torch.ones(3))


def test_load_from_a_module(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "jac.py").write_text("def mine(net, x):\n    return net(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    routine = load("mypkg.jac:mine")
    assert (routine.source, routine.convention) == ("mypkg.jac:mine", LIBRARY)


@pytest.mark.parametrize(
    ("fn", "batched"), [(user_routines.library_batched, True), (user_routines.raises, False)]
)
def test_library_routines_are_probed_for_batches(fn, batched):
    assert from_callable(fn).batched is batched


@pytest.mark.parametrize(
    "fn",
    [user_routines.library_batched, user_routines.library_one_sample, user_routines.transposed],
)
@pytest.mark.parametrize("batch", [None, 3])
def test_bind_calls_each_convention_right(fn, batch):
    routine = from_callable(fn, isolated=False)
    net = make_mlp(3, 4, 6, 2, dtype=torch.float64)
    x = torch.randn((4,) if batch is None else (batch, 4), dtype=torch.float64)
    jac = routine.bind(net, x)()
    expected = reference_jacobian(net, x)
    if fn is user_routines.transposed:
        expected = expected.transpose(-1, -2)
    assert jac.shape == expected.shape
    assert relative_error(jac, expected) < 1e-12


def test_textbook_routine_gets_the_param_dict_and_depth():
    seen = []

    def spy(x, L, param_dict):
        seen.append((tuple(x.shape), L, sorted(param_dict)))
        return torch.zeros(2, 4)

    net = make_mlp(3, 4, 6, 2)
    out = from_callable(spy).bind(net, torch.zeros(5, 4))()
    assert out.shape == (5, 2, 4)
    assert seen == [((4,), 3, ["W1", "W2", "W3", "WF"])] * 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.py:f", "nowhere.py:f: no such file"),
        (f"{SPEC}:missing", f"{SPEC}:missing: {SPEC} has no function 'missing'"),
        (f"{SPEC}:torch", "torch is a module, not a function"),
        (f"{SPEC}:three_arguments_too_many", "takes (a, b, c, d); a routine takes (net, x)"),
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        ("justaname", "does not name a routine"),
        ("file.py:", "does not name a routine"),
    ],
)
def test_load_errors_are_one_line(spec, message):
    with pytest.raises(RoutineError) as raised:
        load(spec)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(net, x)\n    return x\n", "broken.py:1: SyntaxError"),
        ("import no_such_module_xyz\n", "raised ModuleNotFoundError: No module named"),
        ("raise RuntimeError('top level')\n", "raised RuntimeError: top level"),
    ],
)
def test_a_broken_file_is_one_line(tmp_path, source, message):
    path = tmp_path / "broken.py"
    path.write_text(source)
    with pytest.raises(RoutineError, match=message):
        load(f"{path}:f")


def test_resolve_takes_names_specs_and_callables():
    assert resolve("reverse") is get_method("reverse")
    spec = resolve(f"{SPEC}:textbook_reverse")
    assert (spec.name, spec.family, spec.mode) == (f"{SPEC}:textbook_reverse", "user", "")
    fn = resolve(user_routines.library_batched)
    assert fn.name == "library_batched"
    assert fn.source == "tests.user_routines:library_batched"
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        resolve("nope")
    with pytest.raises(ValueError, match="two methods are named 'library_batched'"):
        resolve_all([user_routines.library_batched, user_routines.library_batched])


def test_is_spec():
    assert is_spec("a/b.py:f") and is_spec("pkg.mod:f")
    assert not is_spec("func-jacrev") and not is_spec("x:")
