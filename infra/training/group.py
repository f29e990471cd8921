"""Train a group of SAEs on one shared stream, with checkpoints and storage-level idempotency.

The unit of work a training actor runs: members already exported are skipped, the rest go
through the training loop (infra.training.loop: resume from checkpoints, train together, each
batch read once and fed to all), then are evaluated and exported in SAELens format with their
metrics, loss history and per-feature table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import torch

from infra.parquet_io import write_parquet_atomic
from infra.sae_store import CFG_FILE, save_sae
from infra.storage import exists, join, read_json, write_json_atomic
from infra.training.loop import TrainingJob, fit_jobs
from infra.training.schemas import validate_features
from sae_core import SaeConfig, SparseCoder, TrainConfig
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

    def job(self) -> TrainingJob:
        """What the training loop needs of this member."""
        return TrainingJob(self.sae_id, self.sae_config, self.train_config, self.checkpoint_uri)


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


def train_group(
    members: Sequence[GroupMember],
    stream_from: Callable[[int], Iterable[torch.Tensor]],
    eval_batches: Callable[[], Iterable[torch.Tensor]],
    checkpoint_every: int = 1000,
    device: torch.device | None = None,
    metadata: Callable[[GroupMember], dict[str, Any]] | None = None,
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
    pending = [m for m in members if not is_finished(m)]
    started = time.perf_counter()
    fitted = fit_jobs([m.job() for m in pending], stream_from, device, checkpoint_every, log_every, on_step)
    wall_seconds = time.perf_counter() - started
    for member, fit in zip(pending, fitted, strict=True):
        trainer, history = fit.trainer, fit.history
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
        save_sae(trainer.sae, member.sae_uri, metadata=metadata(member) if metadata else None, fire_count_F=stats.fire_count_F, num_tokens=stats.num_tokens)
        if member.features_uri:
            table = feature_table(stats)
            validate_features(table.to_pandas(), member.features_uri, len(stats.fire_count_F))
            write_parquet_atomic(member.features_uri, table)
        write_json_atomic(join(member.sae_uri, HISTORY_FILE), history)
        write_json_atomic(join(member.sae_uri, METRICS_FILE), metrics)  # last: marks the member finished
    return [member_record(m) for m in members]
