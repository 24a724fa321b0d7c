"""Old module paths still import, warn, and give the objects of the new ones."""

import importlib
import sys

import pytest

from jacbench import moved


@pytest.mark.parametrize("old", ["jacbench.cost", "jacbench.harness", "jacbench.ad.models"])
def test_an_old_path_imports_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {moved.MOVED[old]}"):
        module = importlib.import_module(old)
    new = importlib.import_module(moved.MOVED[old])
    assert all(getattr(module, name) is getattr(new, name) for name in dir(new) if name[0] != "_")


def test_from_the_package_and_a_renamed_name(monkeypatch):
    import jacbench

    monkeypatch.delattr(jacbench, "cost", raising=False)  # an earlier import sets it
    with pytest.warns(DeprecationWarning, match="jacbench.cost moved to jacbench.ad.cost"):
        from jacbench import cost
    from jacbench.ad import builtin_models

    assert cost.plan((3, 4, 1)).mode in ("forward", "reverse")
    sys.modules.pop("jacbench.ad.models", None)
    with pytest.warns(DeprecationWarning):
        from jacbench.ad.models import FAMILIES
    assert FAMILIES is builtin_models.BUILTIN_MODELS


def test_a_name_that_never_existed_is_still_an_error():
    with pytest.raises(ImportError):
        from jacbench import nonexistent  # noqa: F401
