"""The steering stage's markdown report: both generations side by side, the next-token shift, the ablations."""

from __future__ import annotations

import math

import pandas as pd

from infra.steer.plan import SteerPlan
from infra.storage import join, write_bytes_atomic

REPORT_FILE = "report.md"


def cell(text: str, limit: int = 160) -> str:
    """Text fit for a markdown table cell: one line, pipes escaped, long text cut."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def number(value: float) -> str:
    """3 significant digits; n/a for NaN."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def generations_section(frame: pd.DataFrame) -> list[str]:
    """Per prompt and condition: baseline | steered | KL | promoted tokens."""
    header = "| prompt | condition | baseline | steered | KL(next) | promoted next tokens (probability change) |"
    lines = ["## Generations", "", header, "|---|---|---|---|---|---|"]
    for row in frame.itertuples():
        promoted = ", ".join(f"`{cell(t, 20)}` {d:+.3f}" for t, d in list(zip(row.promoted_tokens, row.promoted_deltas))[:5])
        lines.append(f"| {cell(row.prompt, 60)} | {row.condition}: {cell(row.description, 60)} | {cell(row.baseline_text)} | "
                     f"{cell(row.steered_text)} | {number(row.kl_next)} | {promoted} |")
    return lines + [""]


def caa_section(frame: pd.DataFrame, top: int = 10) -> list[str]:
    """The latents whose decoder directions are most aligned with the CAA vector."""
    best = frame.sort_values("rank").head(top)
    lines = ["## Contrastive vector vs the SAE's latents", "", "| rank | latent | cosine |", "|---|---|---|"]
    lines += [f"| {r.rank} | {r.latent} | {r.cosine:+.3f} |" for r in best.itertuples()]
    return lines + [""]


def hookpoint_section(frame: pd.DataFrame) -> list[str]:
    """CE per ablation baseline and the SAE's CE recovered against each."""
    lines = ["## Hookpoint ablation", "", "| mode | CE clean | CE ablated | KL | CE spliced (SAE) | CE recovered |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.mode} | {number(r.ce_clean)} | {number(r.ce_ablated)} | {number(r.kl_ablated)} | {number(r.ce_spliced)} | "
              f"{number(r.ce_loss_recovered)} |" for r in frame.itertuples()]
    return lines + [""]


def latent_section(frame: pd.DataFrame) -> list[str]:
    """Per latent and mode: mean loss change overall and where the latent fires, and the largest."""
    lines = ["## Latent ablation (next-token loss change)", "", "| latent | mode | mean delta | mean delta where active | max delta | active |",
             "|---|---|---|---|---|---|"]
    for (latent, mode), group in frame.groupby(["latent", "mode"], sort=True):
        active = group[group["activation"] > 0]
        lines.append(f"| {latent} | {mode} | {number(float(group['delta'].mean()))} | "
                     f"{number(float(active['delta'].mean())) if len(active) else 'n/a'} | {number(float(group['delta'].max()))} | "
                     f"{len(active)} of {len(group)} |")
    return lines + [""]


def write_report(plan: SteerPlan, tables: dict[str, pd.DataFrame], norm: float) -> str:
    """Write report.md from the stage's tables; returns its URI."""
    lines = [f"# Steering `{plan.steer_id}`", "", f"Model `{plan.model}`, hookpoint `{plan.hookpoint}`, typical norm {norm:.3g}"
             + (f", SAE `{plan.sae}`" if plan.sae else "") + ".", ""]
    sections = (("generations", generations_section), ("caa_cosines", caa_section), ("hookpoint_ablation", hookpoint_section),
                ("latent_ablation", latent_section))
    for name, section in sections:
        if name in tables:
            lines += section(tables[name])
    uri = join(plan.steer, REPORT_FILE)
    write_bytes_atomic(uri, "\n".join(lines).encode())
    return uri
