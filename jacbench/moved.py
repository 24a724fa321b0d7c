"""Old module paths, kept working for one minor version with a ``DeprecationWarning``.

jacbench's modules moved into layers (``jacbench.cost`` is now ``jacbench.ad.cost``), and a
few were renamed. ``import jacbench.cost``, ``from jacbench import cost`` and ``from
jacbench.cost import plan`` still work: each gives the module at its new path and warns
once, naming it. ``install`` puts the finder that does this on ``sys.meta_path``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# Old module path → where it lives now. Removed in jacbench 0.4.
MOVED: dict[str, str] = {
    **{
        f"jacbench.{name}": f"jacbench.{layer}.{name}"
        for layer, names in {
            "kernels": ("activations",),
            "measure": ("device_lock", "peaks", "rows", "stats", "timing", "tuning"),
            "ad": ("cost", "fused", "fused_kernel", "graphs", "hessians", "jacobians", "networks"),
            "runs": (
                "grid",
                "harness",
                "methods",
                "operators",
                "processes",
                "results",
                "routines",
                "shards",
            ),
            "cluster": ("merging", "submission"),
            "faces": ("cli", "grading", "pytest_plugin", "report"),
        }.items()
        for name in names
    },
    "jacbench.ad.models": "jacbench.ad.builtin_models",
}
# Names renamed in a moved module: old name → new name.
RENAMED: dict[str, dict[str, str]] = {"jacbench.ad.models": {"FAMILIES": "BUILTIN_MODELS"}}
REMOVED_IN = "0.4"


def moved_module(old: str) -> ModuleType:
    """The module that lives at ``old``'s new path, with a DeprecationWarning naming it."""
    new = MOVED[old]
    warnings.warn(
        f"{old} moved to {new}; the old path goes in jacbench {REMOVED_IN}",
        DeprecationWarning,
        stacklevel=3,
    )
    return importlib.import_module(new)


class _Alias(ModuleType):
    """The old path's module: every name is the new module's."""

    def __init__(self, name: str, target: ModuleType) -> None:
        super().__init__(name, target.__doc__)
        self.__dict__["_target"] = target

    def __getattr__(self, name: str) -> object:
        name = RENAMED.get(self.__name__, {}).get(name, name)
        return getattr(self.__dict__["_target"], name)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as an alias of the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 (importlib's API)
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return _Alias(spec.name, moved_module(spec.name))

    def exec_module(self, module: ModuleType) -> None:
        """The module at the new path is already executed."""


def install() -> None:
    """Put the finder of old paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.append(_Finder())
