"""Run a sweep's groups on Ray actors and gather the results table.

A TrainGroupWorker is one actor (one GPU where there are GPUs): it trains the groups it is
handed, each group sharing ONE shuffled activation stream, evaluates every SAE on held-out
tokens (reconstruction metrics, and CE loss recovered / KL by splicing into the model), and
exports them. Finished points are skipped, interrupted ones resume from their checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any

import pandas as pd
import torch

from infra.activations.store import leading_rows, read_manifest, read_tokens_table
from infra.activations.stream import SeqSelection, StreamSpec, iter_batches, split_eval
from infra.cost import device_label, record_rate
from infra.lm.models import load_model, model_provenance
from infra.lm.splice_eval import AblationBaselines, splice_metrics
from infra.lm.tokens import TokenSet, tokens_from_table
from infra.parquet_io import read_parquet, write_parquet_atomic
from infra.progress import ItemReporter, PoolProgress
from infra.ray_pool import run_pool
from infra.storage import join
from infra.sweep.context_eval import explained_variance_interval
from infra.sweep.grid import K_ARCHITECTURES, SweepPlan
from infra.sweep.schemas import validate_results
from infra.training.group import GroupMember, member_record, train_group
from sae_core import SparseCoder
from sae_core.devices import pick_device

BASELINE_ROWS = 16_384
"""Training rows the mean / resample ablation baselines are drawn from (the mean's standard error is ~1% of the spread)."""

class TrainGroupWorker:
    """Trains groups of a sweep plan; loads the model once, lazily, for splice evaluation."""

    def __init__(self, plan: SweepPlan, groups: list[list[str]], num_threads: int | None = None) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        # Every setting comes from the plan, whose ids hash the same fields (SweepPlan.conditions).
        self.plan = plan
        self.groups = groups
        self.device = pick_device()
        self.manifest = read_manifest(self.plan.harvest)
        self.train_range, self.eval_range = split_eval(self.plan.harvest, self.plan.eval_contexts)
        self._model: torch.nn.Module | None = None
        self._ablation_baselines: AblationBaselines | None = None

    def _stream(self, seqs: SeqSelection, training: bool, seed: int) -> StreamSpec:
        # Evaluation reads every held-out row once, unshuffled; training loops, shuffled, in full batches.
        return StreamSpec(
            harvest=self.plan.harvest,
            hookpoint=self.plan.hookpoint,
            batch_size=self.plan.batch_size,
            seed=seed,
            seqs=seqs,
            loop=training,
            drop_last=training,
            shuffle_buffer=self.plan.shuffle_buffer if training else 0,
            target_hookpoint=self.plan.target_hookpoint,  # paired sweeps: (x, y) batches (transcoders)
        )

    def _extra_eval(self, sae: SparseCoder) -> dict[str, float]:
        # explained_variance_pooled is explained_variance over the same rows with one pooled mean
        # (the stream's figure averages per-batch values); the interval brackets the pooled one.
        metrics = explained_variance_interval(sae, self.plan.harvest, self.plan.hookpoint, self.eval_range, self.plan.target_hookpoint)
        if self.plan.splice_contexts > 0:
            metrics.update(self._splice_eval(sae))
        return metrics

    def _splice_eval(self, sae: SparseCoder) -> dict[str, float]:
        if self._model is None:
            self._model, _ = load_model(self.manifest["model"], device=self.device)
        tokens = self._tokens
        rows = list(self.eval_range.ids[: self.plan.splice_contexts])  # a random sample of the held-out contexts
        # Paired sweeps splice every point at the target (a transcoder from the input: in place of the MLP).
        spliced, source = self.plan.target_hookpoint or self.plan.hookpoint, self.plan.hookpoint if sae.paired else None
        return splice_metrics(
            self._model, spliced, sae.to(self.device), tokens.token_ids_NS[rows], tokens.special_NS[rows],
            target_ci_width=self.plan.splice_ci_width, source_hookpoint=source, baselines=self._baselines(spliced),
        )

    @cached_property
    def _tokens(self) -> TokenSet:
        """The harvest's packed contexts, read once per actor (every SAE of every group splices the same ones)."""
        return tokens_from_table(read_tokens_table(self.plan.harvest))

    def _baselines(self, spliced: str) -> AblationBaselines | None:
        """The sweep's mean / resample ablation baselines at the spliced hookpoint, from training rows (once per actor)."""
        if not self.plan.splice_baselines:
            return None
        if self._ablation_baselines is None:
            rows_MD = torch.from_numpy(leading_rows(self.plan.harvest, spliced, BASELINE_ROWS, self.eval_range.ids)).to(self.device)
            self._ablation_baselines = AblationBaselines(
                mean_D=rows_MD.mean(dim=0) if "mean" in self.plan.splice_baselines else None,
                resample_MD=rows_MD if "resample" in self.plan.splice_baselines else None,
                seed=self.plan.stream_seed + 1,
            )
        return self._ablation_baselines

    def train(self, group_index: int) -> list[dict[str, Any]]:
        """Train, evaluate and export one group; returns its records."""
        members = self.plan.members(self.groups[group_index])
        seed = self.plan.stream_seed
        reporter = ItemReporter(group_index)

        def on_step(consumed: int, metrics: list[dict[str, torch.Tensor] | None]) -> None:
            # Tokens of the shared stream (each member sees every batch) and the members' mean loss.
            if reporter.due():
                losses = [float(m["loss"]) for m in metrics if m is not None]
                reporter.send(consumed * self.plan.batch_size, **({"loss": sum(losses) / len(losses)} if losses else {}))

        records = train_group(
            members,
            stream_from=lambda start: iter_batches(self._stream(self.train_range, training=True, seed=seed), start_batch=start),
            eval_batches=lambda: iter_batches(self._stream(self.eval_range, training=False, seed=seed)),
            checkpoint_every=self.plan.checkpoint_every,
            device=self.device,
            metadata=self._export_metadata,
            extra_eval=self._extra_eval,
            on_step=on_step,
        )
        self._record_throughput(members, records)
        return records

    def _export_metadata(self, member: GroupMember) -> dict[str, Any]:
        """cfg.json metadata: model_name etc. name the real model (the hub id behind a saeflow alias) so
        other tools can load it; hook_name is the activation the member reads (an SAE of a paired sweep
        learns the target, a transcoder reads the input and writes hook_name_out)."""
        target = self.plan.target_hookpoint
        paired = target is not None and member.sae_config.kind != "sae"
        hooks = {"hook_name": self.plan.hookpoint, "hook_name_out": target} if paired else {"hook_name": target or self.plan.hookpoint}
        return {**hooks, **model_provenance(self.manifest["model"]), "dataset_path": self.plan.harvest}

    def _record_throughput(self, members: list[GroupMember], records: list[dict[str, Any]]) -> None:
        """This device's training rate (token*d_in*d_sae per device second), for later cost plans."""
        shapes = {m.sae_id: m.sae_config.d_in * m.sae_config.d_sae for m in members}
        timed = [r for r in records if r.get("device_seconds") and r.get("train_tokens")]
        work = sum(r["train_tokens"] * shapes[r["sae_id"]] for r in timed)
        seconds = sum(r["device_seconds"] for r in timed)
        record_rate(self.plan.root, "sweep", "sae", device_label(self.device), work, seconds, f"sweep {self.plan.sweep_id}")


def run_groups(
    plan: SweepPlan,
    groups: list[list[str]],
    num_actors: int,
    labels: list[str] | None = None,
    sink: Callable[[float, str], None] | None = None,
    cpu_share: int | None = None,
) -> None:
    """Train every group on a pool of TrainGroupWorker actors, drawing tokens trained per group.

    labels name each group's progress bar (default "group i"); sink(percent, description)
    receives the overall progress every few seconds and 100 at the end of a finished run.
    """
    labels = labels or [f"group {i}" for i in range(len(groups))]
    items = list(range(len(groups)))
    progress = PoolProgress({i: plan.total_steps * plan.batch_size for i in items}, dict(zip(items, labels, strict=True)), "tok", sink)
    prefix = f"sweep-{plan.sweep_id}" if len(labels) > 1 else f"sweep-{plan.sweep_id}-{labels[0].replace(' ', '')}"
    run_pool(
        TrainGroupWorker, (plan, groups), "train", items, num_actors, name_prefix=prefix, progress=progress, cpu_share=cpu_share
    )


RESULT_CONFIG_COLUMNS = ("kind", "architecture", "d_sae", "expansion_factor", "k", "sparsity_coefficient", "seed")


def results_frame(plan: SweepPlan) -> pd.DataFrame:
    """One row per grid point: config, status, metrics (NaN for a failed point), compute cost, URIs.

    k is null for penalty architectures and sparsity_coefficient for k architectures: the
    architecture ignores them, so a value there would only suggest a knob that did nothing.
    epochs says how often the point saw each training row (the stream loops over the harvest).
    """
    rows = []
    for point in plan.points:
        record = member_record(point)
        record.pop("history", None)
        config = {key: getattr(point.sae_config, key) for key in RESULT_CONFIG_COLUMNS}
        uses_k = config["architecture"] in K_ARCHITECTURES
        config["k" if not uses_k else "sparsity_coefficient"] = None
        tokens = record.get("train_tokens")
        rows.append(
            {
                **record,
                **config,
                "lr": point.train_config.lr,
                "epochs": plan.epochs(tokens) if tokens is not None else None,
                "features_uri": point.features_uri,
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("d_sae", "seed"):
        frame[column] = frame[column].astype("int64")
    for column in ("k", "steps", "train_tokens"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")  # nullable: failed points have none, relu points no k
    for column in ("sparsity_coefficient", "epochs"):
        frame[column] = frame[column].astype("float64")  # None -> NaN
    return frame


def write_results(plan: SweepPlan) -> str:
    """Validate and write results.parquet for the whole grid; returns its URI."""
    frame = validate_results(results_frame(plan), source=f"sweep {plan.sweep_id}")
    uri = join(plan.root, "evals", plan.sweep_id, "results.parquet")
    write_parquet_atomic(uri, frame)
    return uri


def read_results(uri: str) -> pd.DataFrame:
    """A results table back as pandas."""
    return read_parquet(uri).to_pandas()


__all__ = ["TrainGroupWorker", "read_results", "results_frame", "run_groups", "write_results"]
