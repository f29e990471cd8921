"""Train a group of SAEs on one shared stream, with checkpoints and storage-level idempotency.

The unit of work a training actor runs: members already exported are skipped, the rest resume
from their last group checkpoint, train together (each batch read once, fed to all), then are
evaluated and exported in SAELens format with their metrics, loss history and per-feature table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from infra.allocator import keep_freed_memory
from infra.parquet_io import write_parquet_atomic
from infra.sae_store import CFG_FILE, load_training_state, save_sae, save_training_state
from infra.storage import exists, join, read_json, write_json_atomic
from infra.training.schemas import validate_features
from sae_core import SaeConfig, SaeTrainer, SparseCoder, TrainConfig, build_sae, fit_many
from sae_core.devices import pick_device
from sae_core.evaluate import FeatureStats, evaluate_sae

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
FAILED_FILE = "failed.json"
"""Written instead of an export when training failed: {step, reason}. Delete it to retry the point."""


@dataclass
class GroupMember:
    """One grid point of a group: its configs and where its artifacts go."""

    sae_id: str
    sae_config: SaeConfig
    train_config: TrainConfig
    sae_uri: str
    """Directory of the exported SAE (SAELens format + metrics.json + history.json)."""
    checkpoint_uri: str
    """Directory of its resumable training state."""
    features_uri: str | None = None
    """Parquet file for its per-feature statistics (density, mean and max activation)."""


def is_finished(member: GroupMember) -> bool:
    """Exported with metrics, or recorded as failed: nothing left to do for this member."""
    if exists(join(member.sae_uri, FAILED_FILE)):
        return True
    return exists(join(member.sae_uri, CFG_FILE)) and exists(join(member.sae_uri, METRICS_FILE))


def member_record(member: GroupMember) -> dict[str, Any]:
    """{sae_id, sae_uri, status, metrics...} of a member that is finished or failed."""
    failed_uri = join(member.sae_uri, FAILED_FILE)
    if exists(failed_uri):
        return {"sae_id": member.sae_id, "sae_uri": member.sae_uri, "status": "failed", **read_json(failed_uri)}
    return {"sae_id": member.sae_id, "sae_uri": member.sae_uri, "status": "finished", **read_json(join(member.sae_uri, METRICS_FILE))}


def feature_table(stats: FeatureStats) -> pa.Table:
    """One row per latent: density, mean activation when firing, max activation."""
    return pa.table(
        {
            "latent": pa.array(range(len(stats.fire_count_F)), pa.int32()),
            "fire_count": pa.array(stats.fire_count_F.numpy(), pa.int64()),
            "density": pa.array(stats.density_F.numpy(), pa.float64()),
            "mean_activation": pa.array(stats.mean_act_F.numpy(), pa.float64()),
            "max_activation": pa.array(stats.act_max_F.numpy(), pa.float32()),
        }
    )


def _restore(pending: Sequence[GroupMember], device: torch.device) -> tuple[list[SaeTrainer], list[int], list[list[dict]]]:
    """(trainers, stream position of each, histories): a member without a checkpoint starts at batch 0."""
    trainers, positions, histories = [], [], []
    for member in pending:
        restored = load_training_state(member.checkpoint_uri, device=device)
        if restored is None:
            trainers.append(SaeTrainer(build_sae(member.sae_config).to(device), member.train_config))
            positions.append(0)
            histories.append([])
            continue
        trainer, extra = restored
        log.info("%s: resuming from step %d", member.sae_id, trainer.step)
        trainers.append(trainer)
        positions.append(int(extra["batches_consumed"]))
        histories.append(list(extra.get("history", [])))
    return trainers, positions, histories


def train_group(
    members: Sequence[GroupMember],
    stream_from: Callable[[int], Iterable[torch.Tensor]],
    eval_batches: Callable[[], Iterable[torch.Tensor]],
    checkpoint_every: int = 1000,
    device: torch.device | None = None,
    metadata: dict[str, Any] | None = None,
    log_every: int = 50,
    extra_eval: Callable[[SparseCoder], dict[str, float]] | None = None,
    on_step: Callable[[int, list[dict[str, torch.Tensor] | None]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train, evaluate and export every unfinished member; returns one record per member.

    `stream_from(i)` must yield the shared stream starting at batch i, so a resumed group
    continues exactly where its checkpoint stopped. `extra_eval(sae)` adds metrics (e.g. CE
    loss recovered by splicing into the model). `on_step(batches_consumed, metrics)` sees every
    step (progress reports); metrics hold tensors, so converting them is the caller's cost.
    """
    device = device or pick_device()
    keep_freed_memory()  # training reallocates the same large tensors every step
    pending = [m for m in members if not is_finished(m)]
    trainers, positions, histories = _restore(pending, device)
    started = time.perf_counter()
    # Members at one stream position train together. Members at different positions (a point that
    # joined a group of checkpointed ones, e.g. after the grid or the grouping changed) train in
    # turn, each from its own position: every member sees the batches a fresh run would, so
    # grouping never changes a result.
    for start_batch in sorted(set(positions)):
        cohort = [i for i, position in enumerate(positions) if position == start_batch]
        for report in fit_many([trainers[i] for i in cohort], stream_from(start_batch)):
            consumed = start_batch + report.step + 1
            if on_step is not None:
                on_step(consumed, report.metrics)
            if consumed % log_every == 0:
                for i, metrics in zip(cohort, report.metrics):
                    if metrics is not None:
                        histories[i].append({"step": consumed, **{k: float(v) for k, v in metrics.items()}})
            if consumed % checkpoint_every == 0:
                for i in cohort:
                    save_training_state(trainers[i], pending[i].checkpoint_uri, extra={"batches_consumed": consumed, "history": histories[i]})
    wall_seconds = time.perf_counter() - started
    for member, trainer, history in zip(pending, trainers, histories):
        if trainer.failure is not None:
            # Never exported: a diverged SAE's weights must not be mistaken for a result.
            log.warning("%s failed: %s", member.sae_id, trainer.failure)
            write_json_atomic(join(member.sae_uri, FAILED_FILE), {"failed_step": trainer.step, "reason": trainer.failure, "history": history})
            continue
        metrics, stats = evaluate_sae(trainer.sae, eval_batches(), trained_tokens=trainer.tokens_seen)
        if extra_eval is not None:
            metrics.update(extra_eval(trainer.sae))
        metrics.update(
            group_wall_seconds=wall_seconds, device_seconds=trainer.device_seconds, train_tokens=trainer.tokens_seen, steps=trainer.step
        )
        save_sae(trainer.sae, member.sae_uri, metadata=metadata, fire_count_F=stats.fire_count_F, num_tokens=stats.num_tokens)
        if member.features_uri:
            table = feature_table(stats)
            validate_features(table.to_pandas(), member.features_uri, len(stats.fire_count_F))
            write_parquet_atomic(member.features_uri, table)
        write_json_atomic(join(member.sae_uri, HISTORY_FILE), history)
        write_json_atomic(join(member.sae_uri, METRICS_FILE), metrics)  # last: marks the member finished
    return [member_record(m) for m in members]
