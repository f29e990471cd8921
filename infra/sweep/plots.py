"""Sweep plots as PNG bytes: sparsity/fidelity trade-offs with each architecture's Pareto frontier and error bars."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd  # noqa: E402

from infra.figures import png_bytes  # noqa: E402


def pareto_frontier(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not dominated by another with lower-or-equal x and higher-or-equal y (sorted by x)."""
    best_y = float("-inf")
    keep = []
    for index, row in frame.sort_values([x, y], ascending=[True, False]).iterrows():
        if row[y] > best_y:
            keep.append(index)
            best_y = row[y]
    return frame.loc[keep]


def series_labels(frame: pd.DataFrame) -> pd.Series:
    """What each point is plotted as: its architecture, prefixed by its kind when a sweep mixes kinds
    (an SAE, a transcoder and a skip transcoder with the same sparsity are different curves)."""
    if "kind" not in frame or frame["kind"].dropna().eq("sae").all():
        return frame["architecture"]
    return frame["kind"].fillna("sae") + " " + frame["architecture"]


def tradeoff_png(frame: pd.DataFrame, x: str, y: str, title: str, log_x: bool = False) -> bytes:
    """Scatter of every grid point, one colour per architecture (and kind), its Pareto frontier as a line."""
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    draw_tradeoff(axes, frame, x, y)
    axes.set_title(title)
    if log_x:
        axes.set_xscale("log")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return png_bytes(figure)


def draw_tradeoff(axes: plt.Axes, frame: pd.DataFrame, x: str, y: str, colours: dict[str, str] | None = None) -> None:
    """tradeoff_png's scatter, error bars and frontiers on one axes (colours: a fixed colour per series, e.g. across panels)."""
    for architecture, rows in frame.groupby(series_labels(frame)):
        rows = rows.dropna(subset=[x, y])
        if rows.empty:
            continue
        colour = (colours or {}).get(architecture)
        points = axes.scatter(rows[x], rows[y], alpha=0.45, label=None, color=colour)
        low, high = f"{y}_ci_low", f"{y}_ci_high"
        if low in rows and high in rows and rows[[low, high]].notna().all(axis=None):
            # 95% bootstrap interval over held-out contexts; clipped at 0 where the reported value
            # (e.g. explained_variance's per-batch mean) sits just outside its pooled interval.
            below, above = (rows[y] - rows[low]).clip(lower=0), (rows[high] - rows[y]).clip(lower=0)
            axes.errorbar(rows[x], rows[y], yerr=[below, above], fmt="none", ecolor=points.get_facecolor()[0][:3], alpha=0.6)
        front = pareto_frontier(rows, x, y)
        axes.plot(front[x], front[y], marker="o", color=points.get_facecolor()[0][:3], label=f"{architecture} (frontier)")
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.grid(alpha=0.3)


def sweep_plots(frame: pd.DataFrame) -> dict[str, bytes]:
    """The standard sweep plots, by file name."""
    plots = {
        "l0_vs_explained_variance.png": tradeoff_png(frame, "l0", "explained_variance", "Sparsity vs reconstruction"),
        "explained_variance_vs_device_seconds.png": tradeoff_png(
            frame, "device_seconds", "explained_variance", "Quality vs compute", log_x=True
        ),
    }
    if "ce_loss_recovered" in frame.columns and frame["ce_loss_recovered"].notna().any():
        plots["l0_vs_ce_loss_recovered.png"] = tradeoff_png(frame, "l0", "ce_loss_recovered", "Sparsity vs downstream fidelity")
    return plots
