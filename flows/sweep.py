"""Sweep flow: train, evaluate and compare a grid of SAEs on stored activations.

`python -m flows.sweep` harvests SmolLM2-135M (cached after the first run) and sweeps a small grid.
"""

from __future__ import annotations

from prefect import flow, unmapped

from flows.harvest import harvest
from flows.preflight import PreflightError, preflight_in_flow
from flows.results import SweepResult
from flows.specs import SweepSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.storage import absolute_root
from infra.sweep.grid import SweepSpecError
from tasks.credentials import apply_storage_secret
from tasks.sweep import plan_sweep_task, report_task, track_task, train_group_task, write_results_task


class SweepPreflightError(PreflightError, SweepSpecError):
    """A preflight failure inside the sweep flow: catchable as either."""


@flow(name="sweep", log_prints=True)
def sweep(spec: SweepSpec = SweepSpec()) -> SweepResult:
    """Harvest (cached) -> plan grid -> train each group on Ray (mapped) -> results table -> report -> W&B."""
    apply_storage_secret(spec.storage_secret)
    preflight_in_flow(spec, SweepPreflightError)  # UI-triggered runs fail in milliseconds too, before any harvest or training
    values = spec.model_dump()
    values["root"] = absolute_root(spec.root)
    harvest_uri = spec.harvest or harvest(spec.harvest_spec.model_copy(update={"root": values["root"]})).harvest
    plan = plan_sweep_task(values, harvest_uri)
    # One task run per group: the UI shows each group's state, retries, duration and progress.
    indices = list(range(len(plan.groups)))
    train_group_task.map(unmapped(plan), indices, unmapped(spec.num_actors), unmapped(spec.ray_address)).result()
    results_uri = write_results_task(plan)
    report_uri = report_task(plan, results_uri)
    logged = track_task(plan, spec.wandb_project, spec.wandb_mode)
    print(f"sweep {plan.sweep_id}: {len(plan.points)} SAEs, "
          f"{logged} newly logged to W&B; results {results_uri}; report {report_uri}")
    return SweepResult(sweep_id=plan.sweep_id, report=report_uri, results=results_uri, saes=plan.saes_folder)


if __name__ == "__main__":
    sweep()
