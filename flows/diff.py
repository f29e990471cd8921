"""Diff flow: which features two (or more) checkpoints share, and which are new or gone.

Each checkpoint is harvested on IDENTICAL tokens (the harvest flow, cached), the harvests are
checked row-aligned, a crosscoder is trained on them (each source scaled to one centred variance),
latents are classified by the relative norm of their per-source decoders (Lindsey et al. 2024)
and every latent called exclusive is checked by latent scaling (Minder et al. 2025).
"""

from __future__ import annotations

from prefect import flow

from flows.harvest import HarvestSpec, harvest
from flows.preflight import PreflightError, preflight_in_flow
from flows.results import DiffResult
from flows.specs import DiffSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.diff.plan import DiffSpecError
from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.diff import check_alignment_task, check_models_task, diff_report_task, plan_diff_task, train_crosscoder_task


class DiffPreflightError(PreflightError, DiffSpecError):
    """A preflight failure inside the diff flow: catchable as either."""


@flow(name="diff", log_prints=True)
def diff(spec: DiffSpec) -> DiffResult:
    """Check models -> harvest each on identical tokens -> check alignment -> crosscoder -> report.

    With hookpoints: one model, harvested once at every hookpoint; its layers are the sources.
    """
    apply_storage_secret(spec.storage_secret)
    preflight_in_flow(spec, DiffPreflightError)  # UI-triggered runs fail in milliseconds too, before any harvest or training
    values = spec.model_dump()
    values["root"] = absolute_root(spec.root)
    layers = spec.hookpoints  # a cross-layer diff: the sources are hookpoints of one model, read from its one harvest
    d_model = check_models_task(spec.models, layers or [spec.hookpoint])
    harvests = [
        harvest(HarvestSpec(model=model, tokenizer=spec.models[0], hookpoints=layers or [spec.hookpoint], source=spec.source,
                            context_length=spec.context_length, num_tokens=spec.num_tokens, seed=spec.seed,
                            text_column=spec.text_column, dtype=spec.dtype, root=values["root"], num_actors=spec.num_actors,
                            ray_address=spec.ray_address)).harvest
        for model in spec.models
    ]
    if not layers:  # one harvest's hookpoints are row-aligned by construction
        check_alignment_task(harvests, spec.hookpoint)
    plan = plan_diff_task(values, harvests, d_model)
    summary = train_crosscoder_task(plan, spec.ray_address)
    report = diff_report_task(plan, summary, spec.wandb_project, spec.wandb_mode)
    counts = summary["counts"]
    ev = ", ".join(f"{v:.2f}" for v in summary["explained_variance_per_source"])
    print(f"diff {plan.diff_id}: {counts['shared']} shared, {counts['a_only']} A-only, {counts['b_only']} B-only, "
          f"{counts.get('spurious', 0)} spurious latents; explained variance per source {ev}; report {report}")
    return DiffResult(diff_id=plan.diff_id, report=report, latents=plan.uri("latents.parquet"))
