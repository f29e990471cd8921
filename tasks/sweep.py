"""Prefect tasks of the sweep stage: plan the grid, train each group on Ray (one task run each), tabulate, report, track."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import TaskRunContext

from infra.cost import sweep_cost
from infra.features.mcs import mcs_section
from infra.ids import spec_hash
from infra.report_links import carried_links
from infra.storage import join, read_json, write_bytes_atomic
from infra.sweep.grid import ARCHITECTURE_KNOBS, K_ARCHITECTURES, SweepPlan, group_points, memory_budget_bytes, plan_sweep
from infra.sweep.layers import LayerSummary, LayerSweep, write_layer_summary
from infra.sweep.plots import sweep_plots
from infra.sweep.report import below_random_note, data_note
from infra.sweep.run import read_results, run_groups, write_results
from infra.tracking import MARKER_FILE, log_once, run_files_dir
from infra.training.group import HISTORY_FILE, is_finished, member_record
from tasks.progress import progress_artifact
from tasks.retry import STORAGE_RETRY, retry_unless_bad_input


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def plan_sweep_task(spec: dict[str, Any], harvest: str) -> SweepPlan:
    """Validate the grid against the harvest, lay out storage and group the points; returns the plan."""
    plan = plan_from_spec(spec, harvest)
    epochs = plan.epochs(plan.total_steps * plan.batch_size)
    if epochs > 1:
        # The training stream loops: past one epoch every point sees the same rows again.
        get_run_logger().warning(
            "sweep %s: each of the %d SAEs trains on %d tokens but the harvest holds %d training rows, so it sees its data "
            "%.1f times; harvest more tokens (or train fewer) for single-pass training",
            plan.sweep_id, len(plan.points), plan.total_steps * plan.batch_size, plan.train_rows, epochs,
        )
    # Grouping is outside the ids: it only decides which points share a stream (see infra.sweep.grid.NOT_IN_IDS).
    plan.groups = group_points(plan.points, plan.batch_size, memory_budget_bytes(), spec["max_group_size"])
    finished = sum(is_finished(p) for p in plan.points)
    note = [f"{finished} of {len(plan.points)} points already finished (not trained again)"] if finished else []
    shapes = [(p.sae_config.d_in, p.sae_config.d_sae) for p in plan.points if not is_finished(p)]
    cost = sweep_cost(plan.root, shapes, plan.total_steps * plan.batch_size, plan.batch_size, len(plan.groups), note)
    get_run_logger().info("cost plan of sweep %s:\n%s", plan.sweep_id, "\n".join(cost.lines()))
    return plan


def plan_from_spec(spec: dict[str, Any], harvest: str) -> SweepPlan:
    """infra.sweep.grid.plan_sweep of a single-hookpoint SweepSpec's values (its root made absolute); groups not yet packed."""
    axes = {key: spec[key] for key in ("architectures", "expansion_factors", "ks", "sparsity_coefficients", "lrs", "seeds")}
    axes.update({key: spec[key] for key in ARCHITECTURE_KNOBS if key in spec})
    axes["kinds"] = spec["kinds"]  # sae / transcoder / skip_transcoder, crossed with the architectures
    stage = {key: spec[key] for key in ("eval_contexts", "splice_contexts", "shuffle_buffer", "stream_seed", "checkpoint_every")}
    stage["splice_ci_width"] = spec["splice_ci_width"]
    stage["splice_baselines"] = spec["splice_baselines"]
    stage["target_hookpoint"] = spec["target_hookpoint"]
    return plan_sweep(
        spec["name"], spec["root"], harvest, spec["hookpoint"], axes, spec["train_tokens"], spec["batch_size"],
        spec["warmup_steps"], spec["autocast_bf16"], **stage,
    )


def group_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Key on the group's point ids, but only once every one of them is finished in storage.

    The ids hash every setting that changes a result (SweepPlan.conditions), so a finished
    group is never reused under other settings; storage, not Prefect's cache, says what is done.
    """
    plan: SweepPlan = parameters["plan"]
    sae_ids = plan.groups[parameters["index"]]
    if not all(is_finished(member) for member in plan.members(sae_ids)):
        return None
    return f"sweep-group:{plan.sweep_id}:{spec_hash(sorted(sae_ids))}"


@task(
    **STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input, cache_key_fn=group_cache_key, persist_result=True,
    task_run_name="train-group-{index}",
)
def train_group_task(
    plan: SweepPlan, index: int, num_actors: int, ray_address: str | None, groups_in_run: int | None = None
) -> list[str]:
    """Train one group's unfinished points on one Ray actor (mapped: one task run per group); returns their SAE URIs.

    Groups run side by side as far as Ray's resources allow: each actor asks for 1/num_actors of
    the cluster's CPUs (or one GPU), so num_actors groups train at once and the rest queue in Ray.
    groups_in_run: the groups mapped in this flow run (a layer sweep maps every layer's), default the plan's.
    """
    from infra.ray_pool import ensure_ray

    members = plan.members(plan.groups[index])
    todo = [m.sae_id for m in members if not is_finished(m)]
    if todo:
        ensure_ray(ray_address)
        label = f"group {index}"
        sink = progress_artifact(f"sweep {plan.sweep_id} {label}: tokens trained")
        run_groups(plan, [todo], 1, labels=[label], sink=sink, cpu_share=min(num_actors, groups_in_run or len(plan.groups)))
    return [m.sae_uri for m in members]


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def write_results_task(plan: SweepPlan) -> str:
    """results.parquet (pandera-validated) for the whole grid; returns its URI."""
    uri = write_results(plan)
    frame = read_results(uri)
    for row in frame[frame["epochs"] > 1].itertuples():
        get_run_logger().warning(
            "%s saw its %d training rows %.1f times (train_tokens %d)", row.sae_id, plan.train_rows, row.epochs, row.train_tokens
        )
    return uri


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def report_task(plan: SweepPlan, results_uri: str) -> str:
    """Plots + markdown report on storage and as Prefect artifacts; returns the report URI."""
    frame = read_results(results_uri)
    folder = join(plan.root, "evals", plan.sweep_id)
    plot_uris = {}
    for name, png in sweep_plots(frame).items():
        plot_uris[name] = join(folder, "plots", name)
        write_bytes_atomic(plot_uris[name], png)
    kind = ("kind",) if plan.target_hookpoint else ()  # a paired sweep mixes SAEs and transcoders
    columns = [c for c in ("sae_id", "status", *kind, "architecture", "d_sae", "k", "sparsity_coefficient", "lr", "l0", "explained_variance",
                           "ce_loss_recovered", "ce_loss_recovered_ci_low", "ce_loss_recovered_ci_high",
                           "kl_div_score", "kl_spliced", "ce_loss_recovered_random",
                           "ce_loss_recovered_mean_ablation", "ce_loss_recovered_resample_ablation", "splice_contexts_used",
                           "dead_fraction", "dead_fraction_tokens", "epochs", "device_seconds")
               if c in frame]
    table = frame[columns].round(4).astype(object)
    # k only means something for topk/batchtopk, the coefficient only for the others (both null in results).
    uses_k = table["architecture"].isin(K_ARCHITECTURES)
    table.loc[~uses_k, "k"] = "-"
    table.loc[uses_k, "sparsity_coefficient"] = "-"
    markdown = (
        f"# Sweep `{plan.sweep_id}`\n\nHarvest `{plan.harvest}`, hookpoint `{plan.hookpoint}`{target_note(plan)}, "
        f"{plan.total_steps} steps x {plan.batch_size} tokens per SAE.\n\n{data_note(plan)}{below_random_note(frame)}"
        f"{table.to_markdown(index=False)}\n\n"
        + "\n".join(f"![{name[:-4]}](plots/{name})" for name in plot_uris)
        + f"\n\nResults table: `{results_uri}`\n"
    )
    # Decoder similarity between the finished SAEs (across dictionary sizes especially): which features persist, which split.
    finished = frame[frame["status"] == "finished"]
    markdown += mcs_section(folder, dict(zip(finished["sae_id"], finished["sae_uri"], strict=True)))
    report_uri = join(folder, "report.md")
    markdown += carried_links(report_uri)  # a re-run keeps the links later stages added (feature browsers, steering runs)
    write_bytes_atomic(report_uri, markdown.encode())
    create_table_artifact(table=table.to_dict(orient="records"), key="sweep-results", description=f"Sweep {plan.sweep_id}")
    create_markdown_artifact(markdown=markdown, key="sweep-report", description=f"Sweep {plan.sweep_id}")
    return report_uri


def target_note(plan: SweepPlan) -> str:
    """What a paired sweep's points are scored on (empty for a plain sweep)."""
    if not plan.target_hookpoint:
        return ""
    return (f" -> target `{plan.target_hookpoint}` (transcoders predict it from the hookpoint and are spliced in place of what "
            f"computes it, against zero-ablating that; the SAEs of this sweep learn the target itself)")


@task(**STORAGE_RETRY, retry_condition_fn=retry_unless_bad_input)
def layer_summary_task(plans: list[SweepPlan], results: list[str], reports: list[str]) -> LayerSummary:
    """A layer sweep's table across layers, plots per layer and summary report (each layer's sweep already reported)."""
    layers = [LayerSweep(plan.hookpoint, plan.sweep_id, results_uri, report_uri)
              for plan, results_uri, report_uri in zip(plans, results, reports, strict=True)]
    summary = write_layer_summary(plans[0].root, plans[0].harvest, layers)
    create_markdown_artifact(markdown=summary.markdown, key="layer-sweep-report", description=f"Layer sweep {summary.layers_id}")
    return summary


@task
def track_task(plan: SweepPlan, project: str, mode: str | None) -> int:
    """One W&B run per grid point (config, loss curves, metrics), each logged once; returns how many were logged now."""
    directory = run_files_dir(plan.root)
    logged = 0
    for point in plan.points:
        if member_record(point)["status"] != "finished":
            continue  # a failed point has no metrics to log; results.parquet records why
        history = read_json(join(point.sae_uri, HISTORY_FILE))
        metrics = read_json(join(point.sae_uri, "metrics.json"))
        config = {"sae": point.sae_config.to_dict(), "train": point.train_config.to_dict(), "conditions": plan.conditions(),
                  "harvest": plan.harvest}
        marker = join(point.sae_uri, MARKER_FILE)
        logged += log_once(marker, project, plan.sweep_id, point.sae_id, config, history, metrics, mode, directory) is not None
    return logged
