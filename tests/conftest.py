import os
import tempfile

import pytest
import torch

from jacbench import make_mlp


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture
def small_net():
    return make_mlp(depth=3, d_in=5, width=7, d_out=3, dtype=torch.float64)


@pytest.fixture
def two_threads():
    """torch on two threads for the test, as many as before after it."""
    kept = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(kept)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# The suite's runs use the default kernels: measuring them (tests/test_tuning.py does) takes
# seconds per process, and on a busy machine, where tuning refuses to cache, every process
# measured again. Whatever is cached goes to a folder of the session's own, never the user's.
os.environ.setdefault("JACBENCH_TUNING", "defaults")
os.environ.setdefault("JACBENCH_CACHE_DIR", tempfile.mkdtemp(prefix="jacbench-test-cache-"))
# Timing takes a machine-wide lock per core (jacbench.measure.device_lock): the suite's runs take
# theirs in a folder of the session's own, so a user's run on the machine never waits on them.
os.environ.setdefault("JACBENCH_LOCK_DIR", tempfile.mkdtemp(prefix="jacbench-test-locks-"))
