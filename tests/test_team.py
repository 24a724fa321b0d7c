"""One thread for a call, for the calling Python thread only (NOTE: [One thread for this call
only]): a thread that starts meanwhile keeps the process's count."""

from __future__ import annotations

import threading

import pytest
import torch

from jacbench import make_mlp
from jacbench.ad import jacobians
from jacbench.kernels import team


def count_in_a_new_thread() -> int:
    """torch's count as a Python thread started now first reads it."""
    found = []
    started = threading.Thread(target=lambda: found.append(torch.get_num_threads()))
    started.start()
    started.join()
    return found[0]


@pytest.mark.parametrize("own_setters", [True, False])
def test_one_thread_is_this_threads_own_and_is_put_back(two_threads, monkeypatch, own_setters):
    if not own_setters:  # a torch whose runtime shows no per-thread setters
        monkeypatch.setattr(team, "_thread_setters", lambda: None)
    with team.one_thread():
        assert torch.get_num_threads() == 1
        if own_setters:
            assert count_in_a_new_thread() == 2
    assert torch.get_num_threads() == 2
    assert count_in_a_new_thread() == 2
    with pytest.raises(RuntimeError), team.one_thread():
        raise RuntimeError("the routine failed")
    assert torch.get_num_threads() == 2


def test_one_thread_leaves_one_thread_as_it_was():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with team.one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_runtimes_setters_are_found_where_torch_has_openmp():
    if not torch.backends.openmp.is_available():
        pytest.skip("torch without OpenMP: the fallback is torch.set_num_threads")
    setters = team._thread_setters()
    assert setters is not None
    assert (setters[1] is not None) == torch.backends.mkl.is_available()


def test_a_thread_started_during_a_small_jacobian_keeps_the_process_count(two_threads):
    # A batch of a small network: the torch route, on one thread for the call. A Python
    # thread that begins its torch work meanwhile is the one the old way left on one.
    net = make_mlp(2, 3, 4, 2)
    x = torch.randn(5, 3)
    seen = {}

    def compute(net, x, chunk_size):
        seen["inside"] = torch.get_num_threads()
        seen["new thread"] = count_in_a_new_thread()
        return jacobians._reverse(net, x, chunk_size)

    assert jacobians._is_small(net.widths, 5)
    result = jacobians._run_checked(compute, net, x, None)
    assert seen == {"inside": 1, "new thread": 2}
    assert torch.get_num_threads() == 2
    expected = torch.func.vmap(torch.func.jacrev(net))(x)
    assert torch.allclose(result, expected, atol=1e-6)
