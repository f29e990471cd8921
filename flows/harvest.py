"""Harvest flow: run a language model over text and store its activations at chosen hookpoints.

`python -m flows.harvest` harvests the packaged SmolLM2-135M on Python's own docs, offline.
"""

from __future__ import annotations

from prefect import flow

from flows.preflight import preflight
from flows.results import HarvestResult
from flows.specs import HarvestSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.harvest import harvest_task, plan_harvest_task, validate_harvest_task


@flow(name="harvest", log_prints=True)
def harvest(spec: HarvestSpec = HarvestSpec()) -> HarvestResult:
    """Plan (validate + tokens) -> harvest on Ray -> validate; returns the harvest."""
    apply_storage_secret(spec.storage_secret)
    preflight(spec)  # UI-triggered runs fail in milliseconds too, not after the model loads
    values = spec.model_dump()
    values["model"] = spec.model_ref()
    values["root"] = absolute_root(values["root"])
    job = plan_harvest_task(values)
    summary = harvest_task(job, num_actors=spec.num_actors, ray_address=spec.ray_address)
    checked = validate_harvest_task(job.harvest)
    print(f"harvest {job.harvest_id}: {checked['rows']} rows x {len(checked['hookpoints'])} hookpoints, "
          f"{checked['shards']} shards ({'cached' if summary['cached'] else 'harvested'}) -> {job.harvest}")
    return HarvestResult(harvest_id=job.harvest_id, harvest=job.harvest)


if __name__ == "__main__":
    harvest()
