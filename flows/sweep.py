"""Sweep flow: train, evaluate and compare a grid of SAEs on stored activations.

`python -m flows.sweep` harvests SmolLM2-135M (cached after the first run) and sweeps a small grid.
With `hookpoints`, a layer sweep: the same grid at each hookpoint, summarised across layers (infra.sweep.layers).
"""

from __future__ import annotations

from prefect import flow, unmapped

from flows.harvest import harvest
from flows.preflight import PreflightError, preflight_in_flow
from flows.results import LayerSweepResult, SweepResult
from flows.specs import SweepSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.storage import absolute_root
from infra.sweep.grid import SweepSpecError
from tasks.credentials import apply_storage_secret
from tasks.sweep import layer_summary_task, plan_sweep_task, report_task, track_task, train_group_task, write_results_task


class SweepPreflightError(PreflightError, SweepSpecError):
    """A preflight failure inside the sweep flow: catchable as either."""


@flow(name="sweep", log_prints=True)
def sweep(spec: SweepSpec = SweepSpec()) -> SweepResult | LayerSweepResult:
    """Harvest (cached) -> plan grid -> train each group on Ray (mapped) -> results table -> report -> W&B.

    A layer sweep (spec.hookpoints) does that for each hookpoint, from one harvest, training every
    layer's groups in one map, then adds one results table, plots and report across the layers.
    """
    apply_storage_secret(spec.storage_secret)
    preflight_in_flow(spec, SweepPreflightError)  # UI-triggered runs fail in milliseconds too, before any harvest or training
    root = absolute_root(spec.root)
    harvest_uri = spec.harvest or harvest(spec.harvest_spec.model_copy(update={"root": root})).harvest
    # One plan per hookpoint, each exactly that of a sweep of the hookpoint alone (so ids, and finished work, are shared).
    plans = [plan_sweep_task({**layer.model_dump(), "root": root}, harvest_uri) for layer in spec.layer_specs()]
    # One task run per (layer, group): the UI shows each group's state, retries, duration and progress.
    jobs = [(plan, index) for plan in plans for index in range(len(plan.groups))]
    train = train_group_task.with_options(task_run_name="train-{plan.hookpoint}-group-{index}") if spec.hookpoints else train_group_task
    train.map([plan for plan, _ in jobs], [index for _, index in jobs], unmapped(spec.num_actors), unmapped(spec.ray_address),
              unmapped(len(jobs))).result()
    swept = {}
    for plan in plans:
        results_uri = write_results_task(plan)
        report_uri = report_task(plan, results_uri)
        logged = track_task(plan, spec.wandb_project, spec.wandb_mode)
        print(f"sweep {plan.sweep_id}: {len(plan.points)} SAEs, "
              f"{logged} newly logged to W&B; results {results_uri}; report {report_uri}")
        swept[plan.hookpoint] = SweepResult(sweep_id=plan.sweep_id, report=report_uri, results=results_uri, saes=plan.saes_folder)
    if not spec.hookpoints:
        return swept[spec.hookpoint]
    summary = layer_summary_task(plans, [s.results for s in swept.values()], [s.report for s in swept.values()])
    print(f"layer sweep {summary.layers_id}: {len(plans)} layers; results {summary.results}; report {summary.report}")
    return LayerSweepResult(layers_id=summary.layers_id, report=summary.report, results=summary.results, layers=swept)


if __name__ == "__main__":
    sweep()
