"""Prefect tasks of the steering stage: plan (checks before compute), run (a Ray actor, resumable), publish."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.context import TaskRunContext

from infra.report_links import link_from_sweep_report
from infra.steer.plan import SteerPlan, SteerSettings, plan_steer
from infra.steer.run import MANIFEST_FILE, run_steer
from infra.storage import exists, join, read_bytes
from tasks.retry import STORAGE_RETRY, retry_unless_bad_input


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def plan_steer_task(spec: dict[str, Any]) -> SteerPlan:
    """Check the model, SAE, latents and harvest against each other and fix the steer id; returns the plan."""
    plan = plan_steer(spec["model"], spec["prompts"], spec["root"], hookpoint=spec["hookpoint"], sae=spec["sae"], harvest=spec["harvest"],
                      settings=SteerSettings(**spec["settings"]))
    return plan


def steer_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The steer id, but only once its manifest exists (storage stays the source of truth)."""
    plan = parameters["plan"]
    return f"steer:{plan.steer_id}" if exists(join(plan.steer, MANIFEST_FILE)) else None


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input, cache_key_fn=steer_cache_key, persist_result=True)
def run_steer_task(plan: SteerPlan, ray_address: str | None = None) -> dict[str, Any]:
    """Generate baseline vs steered, compute the CAA vector and the ablations on a Ray actor, then commit the stage."""
    from infra.ray_pool import ensure_ray

    if not exists(join(plan.steer, MANIFEST_FILE)):
        ensure_ray(ray_address)
    return run_steer(plan)


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def publish_steer_task(plan: SteerPlan, result: dict[str, Any]) -> str:
    """Link the report from the sweep report (when the SAE is a saeflow sweep's) and publish it as a Prefect artifact."""
    markdown = read_bytes(result["report"]).decode()
    if plan.sae is not None:
        s = plan.settings
        used = [f"{what} {', '.join(map(str, latents))}" for what, latents in
                (("steered", s.latents), ("clamped", s.clamp_latents), ("ablated", s.ablation_latents)) if latents]
        summary = ", ".join([f"SAE `{plan.sae.rstrip('/').rsplit('/', 1)[-1]}`", *used, f"{len(plan.prompts)} prompts"])
        linked = link_from_sweep_report([plan.sae], "Steering runs", plan.steer_id, result["report"], summary)
        if linked:
            markdown += f"\n\nLinked from the sweep report `{linked}`."
    create_markdown_artifact(markdown=markdown, key="steer", description=f"Steering {plan.steer_id}")
    return result["report"]


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def pick_feature_task(features: str, sae_index: int = 0) -> dict[str, Any]:
    """A latent of a committed features stage to steer with (infra.steer.pick)."""
    from infra.steer.pick import pick_feature

    return pick_feature(features, sae_index)


@task
def steer_pairs_task(plan: SteerPlan) -> list[dict[str, Any]]:
    """Small records of the generations table (prompt, condition, baseline, steered, KL) for printing."""
    from infra.parquet_io import read_parquet

    uri = join(plan.steer, "generations.parquet")
    if not exists(uri):
        return []
    frame = read_parquet(uri).to_pandas()
    return frame[["prompt", "condition", "description", "baseline_text", "steered_text", "kl_next"]].to_dict("records")
