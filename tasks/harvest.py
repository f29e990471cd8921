"""Prefect tasks of the harvest stage: plan, harvest on Ray, validate. Each returns references."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from infra.activations.schemas import validate_harvest
from infra.activations.store import MANIFEST_FILE, read_manifest
from infra.cost import harvest_cost
from infra.harvest.plan import plan_harvest, run_harvest
from infra.harvest.worker import HarvestJob
from infra.lm.tokens import TokenSpec
from infra.storage import exists, join
from tasks.progress import progress_artifact
from tasks.retry import STORAGE_RETRY, retry_unless_bad_input


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def plan_harvest_task(spec: dict[str, Any]) -> HarvestJob:
    """Validate the spec against the model's config and write the packed tokens; returns the job."""
    token_spec = TokenSpec(
        source=spec["source"],
        tokenizer=spec["tokenizer"] or spec["model"],
        context_length=spec["context_length"],
        num_tokens=spec["num_tokens"],
        seed=spec["seed"],
        text_column=spec["text_column"],
    )
    job = plan_harvest(
        model=spec["model"],
        hookpoints=spec["hookpoints"],
        token_spec=token_spec,
        root=spec["root"],
        dtype=spec["dtype"],
        contexts_per_shard=spec["contexts_per_shard"],
        batch_contexts=spec["batch_contexts"],
    )
    if not exists(join(job.harvest, MANIFEST_FILE)):
        d_model = model_width(job)
        cost = harvest_cost(spec["root"], job.model, job.num_contexts * job.context_length, d_model, len(job.hookpoints), job.dtype)
        get_run_logger().info("cost plan of harvest %s:\n%s", job.harvest_id, "\n".join(cost.lines()))
    return job


def model_width(job: HarvestJob) -> int | None:
    """The model's width from its config (no weights loaded)."""
    from infra.lm.models import load_model_config, model_facts

    return model_facts(load_model_config(job.model)).d_model


def harvest_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """The harvest id, but only once its manifest exists: Prefect then caches committed harvests only.

    Storage stays the source of truth: an unfinished or deleted harvest gets no key (no stale
    cache hit), and run_harvest itself returns a committed manifest without running the model.
    """
    job: HarvestJob = parameters["job"]
    return f"harvest:{job.harvest_id}" if exists(join(job.harvest, MANIFEST_FILE)) else None


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input, cache_key_fn=harvest_cache_key, persist_result=True)
def harvest_task(job: HarvestJob, num_actors: int = 1, ray_address: str | None = None) -> dict[str, Any]:
    """Harvest every missing shard with a pool of Ray actors and commit the manifest (progress as an artifact)."""
    if exists(join(job.harvest, MANIFEST_FILE)):
        return run_harvest(job)  # committed: no pool, no progress to show
    sink = progress_artifact(f"harvest {job.harvest_id}: tokens harvested")
    return run_harvest(job, num_actors=num_actors, ray_address=ray_address, sink=sink)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)
def validate_harvest_task(harvest: str) -> dict[str, Any]:
    """Check every shard against the pandera schema and the manifest's counts."""
    return validate_harvest(harvest, read_manifest(harvest))
