"""A layer sweep's summary: the per-layer sweeps' results in one table, plots per layer, a report linking each layer's.

A layer sweep is one ordinary sweep per hookpoint, each with the ids a sweep of that hookpoint alone
would have (so each layer's work is found by, and serves, single-layer sweeps). This module only
reads their results tables and writes the summary to {root}/evals/layers-{hash of the sweep ids}/:
results.parquet (pandera-validated), plots/*.png and report.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from infra.figures import png_bytes
from infra.ids import spec_id
from infra.lm.hookpoint_names import Hookpoint
from infra.parquet_io import read_parquet, write_parquet_atomic
from infra.schema_errors import describe_schema_error
from infra.storage import join, write_bytes_atomic
from infra.sweep.plots import draw_tradeoff, series_labels
from infra.sweep.schemas import results_schema

LAYER_COLUMNS = ("hookpoint", "layer", "sweep_id", "point")
"""What the summary table adds in front of each layer's results columns."""
LINE_STYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class LayerSweep:
    """One layer of a layer sweep: its hookpoint and its own sweep's id, results table and report."""

    hookpoint: str
    sweep_id: str
    results: str
    report: str


@dataclass(frozen=True)
class LayerSummary:
    """Where the summary went, and the report's text (so the caller publishes it without reading it back)."""

    layers_id: str
    results: str
    report: str
    plots: dict[str, str]
    markdown: str = field(repr=False)


def layers_id(sweep_ids: list[str]) -> str:
    """'layers-{hash}' of the per-layer sweep ids, in any order: the same layers swept alike summarise to one place."""
    return spec_id("layers", sorted(sweep_ids))


def layer_of(hookpoint: str) -> int:
    """The block index of a hookpoint name (blocks.L.hook_*)."""
    return Hookpoint.parse(hookpoint).layer


def point_name(sae_id: str) -> str:
    """A point's readable label, its id without the hash (e.g. topk-128-k4-lr0-003-s0): one grid point, at every layer."""
    return sae_id.rsplit("-", 1)[0]


def layers_schema() -> pa.DataFrameSchema:
    """The results schema, plus hookpoint / layer / sweep_id / point and the rules that tie the layers together."""
    base = results_schema()
    columns = {
        **base.columns,
        "hookpoint": pa.Column(str),
        "layer": pa.Column("int64", pa.Check.ge(0)),
        "sweep_id": pa.Column(str),
        "point": pa.Column(str),
    }
    checks = [
        *base.checks,
        pa.Check(lambda df: df["layer"] == df["hookpoint"].map(layer_of), error="layer is the block index in hookpoint"),
        # Row-wise (so a failure names the rows): one sweep per hookpoint, each point at every layer, once.
        pa.Check(lambda df: df.groupby("hookpoint")["sweep_id"].transform("nunique").eq(1), error="one sweep per hookpoint"),
        pa.Check(lambda df: df.groupby("point")["hookpoint"].transform("nunique").eq(df["hookpoint"].nunique()),
                 error="every layer has the same grid points"),
        pa.Check(lambda df: ~df.duplicated(["hookpoint", "point"], keep=False), error="each grid point once per layer"),
    ]
    return pa.DataFrameSchema(columns, checks=checks, strict=False, name="layer sweep results")


def layers_frame(layers: list[LayerSweep]) -> pd.DataFrame:
    """Every layer's results rows, layer by layer, with LAYER_COLUMNS in front; pandera-validated."""
    frames = []
    for layer in layers:
        frame = read_parquet(layer.results).to_pandas()
        extra = {"hookpoint": layer.hookpoint, "layer": layer_of(layer.hookpoint), "sweep_id": layer.sweep_id,
                 "point": frame["sae_id"].map(point_name)}
        frames.append(pd.concat([pd.DataFrame(extra, index=frame.index), frame], axis=1))
    combined = pd.concat(frames, ignore_index=True).sort_values(["layer", "hookpoint"], kind="stable", ignore_index=True)
    combined["layer"] = combined["layer"].astype("int64")
    try:
        return layers_schema().validate(combined, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"layer sweep {layers_id([layer.sweep_id for layer in layers])}: results table "
                         f"{describe_schema_error(error)}") from error


def series_colours(frame: pd.DataFrame) -> dict[str, str]:
    """One colour per architecture (and kind), the same in every panel."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {label: cycle[i % len(cycle)] for i, label in enumerate(sorted(series_labels(frame).unique()))}


def frontier_panels_png(frame: pd.DataFrame, x: str, y: str, title: str) -> bytes:
    """Small multiples: the sweep's trade-off plot (points, frontiers, error bars) for each layer, on shared axes."""
    hookpoints = list(dict.fromkeys(frame["hookpoint"]))
    columns = min(len(hookpoints), 4)
    rows = math.ceil(len(hookpoints) / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows + 0.6), dpi=110, sharex=True, sharey=True,
                                squeeze=False)
    colours = series_colours(frame)
    legend = {}
    for axes, hookpoint in zip(grid.flat, hookpoints, strict=False):
        draw_tradeoff(axes, frame[frame["hookpoint"] == hookpoint], x, y, colours)
        axes.set_title(hookpoint, fontsize=9)
        legend.update(zip(*reversed(axes.get_legend_handles_labels()), strict=True))
    for axes in grid.flat[len(hookpoints):]:
        axes.set_visible(False)
    figure.suptitle(title)
    figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 4), fontsize=8)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return png_bytes(figure)


def metric_by_layer_png(frame: pd.DataFrame, y: str, title: str) -> bytes:
    """y against depth: one line per grid point (the same SAE settings at each layer), coloured by architecture."""
    hookpoints = list(dict.fromkeys(frame["hookpoint"]))
    kinds = {Hookpoint.parse(h).kind for h in hookpoints}
    # At its depth when there is one hookpoint per layer; otherwise side by side, in depth order, each tick naming its kind.
    position = {h: layer_of(h) if len(kinds) == 1 else i for i, h in enumerate(hookpoints)}
    ticks = [str(layer_of(h)) if len(kinds) == 1 else f"{layer_of(h)}\n{Hookpoint.parse(h).kind}" for h in hookpoints]
    colours, labels = series_colours(frame), series_labels(frame)
    drawn: dict[str, int] = {}
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for point, rows in frame.dropna(subset=[y]).groupby("point", sort=True):
        series = labels[rows.index[0]]
        style = LINE_STYLES[drawn.get(series, 0) % len(LINE_STYLES)]
        drawn[series] = drawn.get(series, 0) + 1
        xs = rows["hookpoint"].map(position)
        axes.plot(xs, rows[y], marker="o", linestyle=style, color=colours[series], label=point, alpha=0.85)
    axes.set_xticks([position[h] for h in hookpoints], ticks)
    axes.set_xlabel(f"layer (hook_{next(iter(kinds))})" if len(kinds) == 1 else "layer")
    axes.set_ylabel(y)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return png_bytes(figure)


def layer_plots(frame: pd.DataFrame) -> dict[str, bytes]:
    """The layer sweep's plots, by file name: frontiers per layer and metrics against depth."""
    metrics = [("explained_variance", "reconstruction")]
    if "ce_loss_recovered" in frame and frame["ce_loss_recovered"].notna().any():
        metrics.append(("ce_loss_recovered", "downstream fidelity"))
    plots = {}
    for metric, what in metrics:
        plots[f"l0_vs_{metric}_by_layer.png"] = frontier_panels_png(frame, "l0", metric, f"Sparsity vs {what}, per layer")
    for metric, what in [*metrics, ("l0", "sparsity")]:
        plots[f"{metric}_vs_layer.png"] = metric_by_layer_png(frame, metric, f"{metric} by layer ({what})")
    return plots


def layers_markdown(summary_id: str, harvest: str, layers: list[LayerSweep], frame: pd.DataFrame, plots: list[str],
                    results_uri: str) -> str:
    """The summary report: each layer's best scores and a link to its own report, metrics per point and layer, the plots."""
    rows = []
    for layer in sorted(layers, key=lambda item: (layer_of(item.hookpoint), item.hookpoint)):
        mine = frame[frame["hookpoint"] == layer.hookpoint]
        row = {"layer": layer_of(layer.hookpoint), "hookpoint": layer.hookpoint, "sweep": f"`{layer.sweep_id}`",
               "SAEs": len(mine), "finished": int((mine["status"] == "finished").sum()),
               "best explained_variance": mine["explained_variance"].max()}
        if "ce_loss_recovered" in mine:
            row["best ce_loss_recovered"] = mine["ce_loss_recovered"].max()
        row["report"] = f"[report](../{layer.sweep_id}/report.md)"
        rows.append(row)
    markdown = (f"# Layer sweep `{summary_id}`\n\nThe same grid at {len(layers)} hookpoints of harvest `{harvest}`; each layer is "
                f"its own sweep (the ids a sweep of that hookpoint alone has), with its own report.\n\n"
                f"{pd.DataFrame(rows).round(4).to_markdown(index=False)}\n")
    order = list(dict.fromkeys(frame["hookpoint"]))
    for metric in ("explained_variance", "ce_loss_recovered", "l0"):
        if metric in frame and frame[metric].notna().any():
            table = frame.pivot(index="point", columns="hookpoint", values=metric)[order].round(4)
            markdown += f"\n## {metric} per grid point and layer\n\n{table.to_markdown()}\n"
    markdown += "\n" + "\n".join(f"![{name[:-4]}](plots/{name})" for name in plots)
    return markdown + f"\n\nResults table across layers: `{results_uri}`\n"


def write_layer_summary(root: str, harvest: str, layers: list[LayerSweep]) -> LayerSummary:
    """Tabulate, plot and report a layer sweep under {root}/evals/{layers_id}/; returns where each output went."""
    summary_id = layers_id([layer.sweep_id for layer in layers])
    folder = join(root, "evals", summary_id)
    frame = layers_frame(layers)
    results_uri = join(folder, "results.parquet")
    write_parquet_atomic(results_uri, frame)
    plots = {}
    for name, png in layer_plots(frame).items():
        plots[name] = join(folder, "plots", name)
        write_bytes_atomic(plots[name], png)
    report_uri = join(folder, "report.md")
    markdown = layers_markdown(summary_id, harvest, layers, frame, list(plots), results_uri)
    write_bytes_atomic(report_uri, markdown.encode())
    return LayerSummary(layers_id=summary_id, results=results_uri, report=report_uri, plots=plots, markdown=markdown)
