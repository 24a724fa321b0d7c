"""A run folder's plots (matplotlib, drawn off-screen): time against depth per method,
forward over reverse mode's time over (D, P), and each model's methods over its shapes. The
data are ``jacbench.runs.analysis``'."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from jacbench.runs import analysis
from jacbench.runs.methods import METHODS

# Colour tells a method apart, the line style its family (solid: jacbench's own).
FAMILY_STYLES: dict[str, str | tuple] = {
    "jacbench": "-",
    "torch.func": "--",
    "autograd": "-.",
    "naive": ":",
    "jax": (0, (5, 1)),
    "user": (0, (3, 1, 1, 1, 1, 1)),
}


def _method_lines(ax: Any, g: pd.DataFrame, x: Callable[[pd.DataFrame], Any]) -> None:
    """One line per method of ``g``'s rows on a log time axis, at ``x`` of each method's
    rows (in ``g``'s order): colour per method, line style per family."""
    import matplotlib.pyplot as plt

    tab20 = plt.get_cmap("tab20")
    for i, method in enumerate(analysis.method_order(g["method"].unique(), None)):
        m = g[g["method"] == method]
        family = METHODS[method].family if method in METHODS else "user"
        ax.plot(
            x(m),
            m["median_s"] * 1e3,
            marker="o",
            label=method,
            color=tab20(i % tab20.N),
            linestyle=FAMILY_STYLES.get(family, "-"),
        )
    ax.set_yscale("log")
    ax.set_ylabel("median time per Jacobian (ms)")
    ax.grid(True, which="both", alpha=0.3)


def _places(at: dict[str, int], rows: pd.DataFrame) -> list[int]:
    return [at[shape] for shape in rows["shape"]]


def plot_time_vs_depth(frame: pd.DataFrame, path: Path) -> Path | None:
    """Median time against depth, one line per method, one panel per other-dimensions group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = analysis.depth_series(frame)
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups) + 1.8, 4.2), squeeze=False)
    for ax, (key, g) in zip(axes[0], groups):
        d, k, p, b, dtype, device = key
        _method_lines(ax, g.sort_values("depth"), lambda m: m["depth"])
        ax.set_xlabel("depth L")
        ax.set_title(f"D={d} K={k} P={p} B={b} {dtype} {device}", fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ratio_map(frame: pd.DataFrame, path: Path) -> Path | None:
    """forward/reverse time ratio over (D, P): red where reverse wins, blue where forward wins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grids = analysis.ratio_grids(frame)
    if not grids:
        return None
    fig, axes = plt.subplots(1, len(grids), figsize=(5.5 * len(grids), 4.5), squeeze=False)
    for ax, (key, ratio) in zip(axes[0], grids):
        depth, k, b, dtype, device = key
        values = np.log2(ratio.to_numpy(dtype=float))
        limit = max(1.0, float(np.nanmax(np.abs(values))))
        image = ax.imshow(values, cmap="coolwarm", vmin=-limit, vmax=limit, origin="lower")
        ax.set_xticks(range(len(ratio.columns)), [str(c) for c in ratio.columns])
        ax.set_yticks(range(len(ratio.index)), [str(i) for i in ratio.index])
        ax.set_xlabel("input dimension D")
        ax.set_ylabel("output dimension P")
        ax.set_title(f"forward / reverse time, L={depth} K={k} B={b} {dtype}", fontsize=10)
        for (i, j), r in np.ndenumerate(ratio.to_numpy(dtype=float)):
            if np.isfinite(r):
                ax.text(j, i, f"{r:.2g}", ha="center", va="center", fontsize=8)
        fig.colorbar(image, ax=ax, label="log2 ratio (>0: reverse faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_models(frame: pd.DataFrame, path: Path) -> Path | None:
    """Each model's median time per method over its shapes, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = analysis.model_series(frame)
    if not groups:
        return None
    columns = min(len(groups), 3)
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(5.5 * columns + 1.8, 4.2 * rows), squeeze=False
    )
    for ax, (model, g) in zip(axes.flat, groups):
        shapes = list(dict.fromkeys(g["shape"]))
        at = {shape: i for i, shape in enumerate(shapes)}  # each shape's place on the axis
        _method_lines(ax, g, functools.partial(_places, at))
        ax.set_xticks(range(len(shapes)), shapes, rotation=30, ha="right", fontsize=8)
        ax.set_title(model, fontsize=10)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
