"""Prefect tasks of the diff stage: check models, check alignment, train the crosscoder, report."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

from infra.activations.alignment import check_aligned
from infra.diff.plan import DiffPlan, check_models, plan_diff
from infra.diff.run import SUMMARY_FILE, CrosscoderWorker, diff_done, read_latents
from infra.storage import read_json, write_bytes_atomic
from infra.tracking import MARKER_FILE, log_once, run_files_dir
from tasks.retry import STORAGE_RETRY, retry_unless_bad_input


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def check_models_task(models: list[str], hookpoints: list[str]) -> int:
    """Two+ models with the hookpoint (or one model with two+ hookpoints), one d_model, one tokenizer; returns d_model."""
    return check_models(models, hookpoints)


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def check_alignment_task(harvests: list[str], hookpoint: str) -> dict[str, int]:
    """Every harvest has the same (seq_id, pos, token_id) rows in every shard."""
    return check_aligned(harvests, hookpoint)


@task(retry_condition_fn=retry_unless_bad_input)
def plan_diff_task(spec: dict[str, Any], harvests: list[str], d_model: int) -> DiffPlan:
    """Validated crosscoder + training configs and the diff's storage layout."""
    return plan_diff(spec, harvests, d_model)


def diff_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The diff id once its summary exists (storage decides; Prefect then skips the task)."""
    plan = parameters["plan"]
    return f"diff:{plan.diff_id}" if diff_done(plan) else None


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input, cache_key_fn=diff_cache_key, persist_result=True)
def train_crosscoder_task(plan: DiffPlan, ray_address: str | None = None) -> dict[str, Any]:
    """Train (or resume) the crosscoder in a Ray actor and write the diff; returns its summary."""
    from infra.ray_pool import ensure_ray, run_pool

    if diff_done(plan):  # storage says finished: no actor, no model, no training
        return read_json(plan.uri(SUMMARY_FILE))
    ensure_ray(ray_address)
    return run_pool(CrosscoderWorker, (plan,), "run", [0], 1, name_prefix=f"diff-{plan.diff_id}")[0]


def sources_line(plan: DiffPlan) -> str:
    """What A and B are: two checkpoints at one hookpoint, or two layers of one model (a cross-layer diff)."""
    if plan.hookpoints:
        return (f"Cross-layer: model `{plan.models[0]}`, A = `{plan.sources[0]}`, B = `{plan.sources[-1]}` "
                f"({len(plan.sources)} layers: which features persist across layers, which appear or vanish).")
    return f"A = `{plan.models[0]}`, B = `{plan.models[-1]}`, hookpoint `{plan.hookpoint}`."


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def diff_report_task(plan: DiffPlan, summary: dict[str, Any], wandb_project: str, wandb_mode: str | None) -> str:
    """report.md + Prefect artifacts (summary, top exclusive latents) + a W&B run; returns the report URI."""
    latents = read_latents(plan)
    counts, norm = summary["counts"], summary.get("norm_counts", summary["counts"])
    ev = ", ".join(f"`{m}`: {v:.3f}" for m, v in zip(plan.sources, summary["explained_variance_per_source"]))
    exclusive = latents[latents["class"].isin(["a_only", "b_only"])].sort_values("frequency", ascending=False).head(20)
    medians = summary.get("beta_ratio_median", {})
    trajectory = ""
    if len(plan.sources) > 2:
        firsts = ", ".join(f"`{m}`: {summary['first_present_counts'][str(i)]}" for i, m in enumerate(plan.sources))
        where = "layer" if plan.hookpoints else "checkpoint"
        trajectory = f"Live latents by the first {where} where they are present: {firsts}.\n\n![first present](first_present.png)\n\n"
    markdown = (
        f"# Crosscoder diff `{plan.diff_id}`\n\n{sources_line(plan)}\n\n"
        f"Explained variance per source: {ev}. A diff is only as good as its worst source: a source the crosscoder does not "
        f"reconstruct cannot show what it shares.\n\n"
        f"| | shared | A-only | B-only | spurious | other | dead |\n|---|---|---|---|---|---|---|\n"
        f"| by decoder norm | {norm['shared']} | {norm['a_only']} | {norm['b_only']} | | {norm['other']} | {summary['dead_latents']} |\n"
        f"| after latent scaling | {counts['shared']} | {counts['a_only']} | {counts['b_only']} | {counts.get('spurious', 0)} | "
        f"{counts['other']} | {summary['dead_latents']} |\n\n"
        f"Latent scaling (Minder et al. 2025): a latent the decoder norms call A- or B-only is fitted, along its decoder, to the "
        f"other source's reconstruction and reconstruction error; it stays exclusive only when both ratios beta(other) / beta(own) "
        f"are below {summary.get('exclusive_ratio', 0.3)}. Otherwise it is shared (the concept is in the other source's error: "
        f"shrunk out of its decoder) or spurious (other latents reconstruct it there). Median ratios of the norm-exclusive latents: "
        f"reconstruction {_fmt(medians.get('reconstruction'))}, error {_fmt(medians.get('error'))}.\n\n"
        f"![latent scaling](latent_scaling.png)\n\n"
        f"Mean decoder cosine of shared latents: {summary['shared_decoder_cosine_mean']:.3f}.\n\n"
        f"![relative decoder norms](relative_norms.png)\n\n{trajectory}"
        f"Most frequent exclusive latents (after latent scaling):\n\n{exclusive.round(4).to_markdown(index=False)}\n"
    )
    uri = plan.uri("report.md")
    write_bytes_atomic(uri, markdown.encode())
    create_markdown_artifact(markdown=markdown, key="diff-report", description=f"Diff {plan.diff_id}")
    create_table_artifact(table=exclusive.round(4).to_dict(orient="records"), key="diff-exclusive-latents")
    history = read_json(plan.uri("history.json"))
    log_once(plan.uri(MARKER_FILE), wandb_project, f"diff-{plan.diff_id}", plan.diff_id, asdict(plan), history,
             summary.get("fractions", {}), wandb_mode, run_files_dir(plan.root))
    return uri
