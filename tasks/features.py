"""Prefect tasks of the features stage: plan (checks before compute), run (Ray, resumable), publish."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.context import TaskRunContext

from infra.features.plan import FeatureSettings, FeaturesPlan, plan_features
from infra.features.run import MANIFEST_FILE, run_features
from infra.report_links import link_from_sweep_report
from infra.storage import exists, join, read_json
from tasks.retry import STORAGE_RETRY, retry_unless_bad_input

SETTING_KEYS = tuple(FeatureSettings.__dataclass_fields__)


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def plan_features_task(spec: dict[str, Any]) -> FeaturesPlan:
    """Check every SAE against the harvest (d_in, hookpoint, model) and lay out the stage; returns the plan."""
    settings = FeatureSettings(**{key: spec[key] for key in SETTING_KEYS})
    plan = plan_features(spec["saes"], spec["harvest"], spec["root"], hookpoint=spec["hookpoint"], contexts=spec["contexts"],
                         exclude_special=spec["exclude_special"], encode_batch=spec["encode_batch"], settings=settings)
    return plan


def features_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The features id, but only once its manifest exists (storage stays the source of truth)."""
    plan = parameters["plan"]
    return f"features:{plan.features_id}" if exists(join(plan.features, MANIFEST_FILE)) else None


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input, cache_key_fn=features_cache_key, persist_result=True)
def run_features_task(plan: FeaturesPlan, num_actors: int = 1, ray_address: str | None = None) -> dict[str, Any]:
    """Encode shards and describe SAEs on Ray actors (skipping committed work), then commit the stage."""
    from infra.ray_pool import ensure_ray

    manifest = join(plan.features, MANIFEST_FILE)
    if not exists(manifest):
        ensure_ray(ray_address)
    return run_features(plan, num_actors=num_actors)


@task
def publish_features_task(plan: FeaturesPlan, result: dict[str, Any]) -> str:
    """Link the browser from the sweep report (when the SAEs are a saeflow sweep's) and as Prefect artifacts."""
    manifest = read_json(result["manifest"])
    linked = link_from_sweep_report([s["uri"] for s in plan.saes], "Feature browsers", plan.features_id, result["browser"],
                                    f"{len(plan.saes)} SAEs on {plan.contexts} contexts")
    lines = [f"# Features `{plan.features_id}`", "", f"Browser: `{result['browser']}`", ""]
    lines += [f"- `{s['name']}`: {s['details']['live_latents']} of {s['d_sae']} latents fire on {manifest['tokens']} tokens"
              for s in manifest["saes"]]
    if linked:
        lines.append(f"\nLinked from the sweep report `{linked}`.")
    create_markdown_artifact(markdown="\n".join(lines), key="features", description=f"Features {plan.features_id}")
    if "://" not in result["browser"]:
        create_link_artifact(link=f"file://{result['browser']}", link_text="feature browser", key="feature-browser")
    return result["browser"]
