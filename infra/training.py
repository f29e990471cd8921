"""Train a group of SAEs on one shared stream, with checkpoints and storage-level idempotency.

The unit of work a training actor runs: members already exported are skipped, the rest resume
from their last group checkpoint, train together (each batch read once, fed to all), then are
evaluated and exported in SAELens format with their metrics beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infra.sae_store import CFG_FILE, load_training_state, save_sae, save_training_state
from infra.storage import exists, join, read_json, write_json_atomic
from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.evaluate import evaluate_sae

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


@dataclass
class GroupMember:
    """One grid point of a group: its configs and where its artifacts go."""

    sae_id: str
    sae_config: SaeConfig
    train_config: TrainConfig
    sae_uri: str
    """Directory of the exported SAE (SAELens format + metrics.json)."""
    checkpoint_uri: str
    """Directory of its resumable training state."""


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _finished(member: GroupMember) -> bool:
    return exists(join(member.sae_uri, CFG_FILE)) and exists(join(member.sae_uri, METRICS_FILE))


def train_group(
    members: Sequence[GroupMember],
    stream_from: Callable[[int], Iterable[torch.Tensor]],
    eval_batches: Callable[[], Iterable[torch.Tensor]],
    checkpoint_every: int = 1000,
    device: torch.device | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train, evaluate and export every unfinished member; returns one record per member.

    `stream_from(i)` must yield the shared stream starting at batch i, so a resumed group
    continues exactly where its checkpoint stopped.
    """
    device = device or pick_device()
    pending = [m for m in members if not _finished(m)]
    trainers: list[SaeTrainer] = []
    start_batch = 0
    for member in pending:
        restored = load_training_state(member.checkpoint_uri, device=device)
        if restored is None:
            trainers.append(SaeTrainer(build_sae(member.sae_config).to(device), member.train_config))
            continue
        trainer, extra = restored
        log.info("%s: resuming from step %d", member.sae_id, trainer.step)
        trainers.append(trainer)
        start_batch = max(start_batch, int(extra["batches_consumed"]))
    # Members checkpoint together, so a restored one sits exactly at the group's position;
    # a member with no checkpoint yet simply joins the stream there.
    if any(t.step not in (0, start_batch) for t in trainers):
        raise RuntimeError(f"group checkpoints disagree on the stream position: {[t.step for t in trainers]}")
    started = time.perf_counter()
    if trainers:
        for report in fit_many(trainers, stream_from(start_batch)):
            consumed = start_batch + report.step + 1
            if consumed % checkpoint_every == 0:
                for member, trainer in zip(pending, trainers):
                    save_training_state(trainer, member.checkpoint_uri, extra={"batches_consumed": consumed})
    train_seconds = time.perf_counter() - started
    for member, trainer in zip(pending, trainers):
        metrics, fire_count_F = evaluate_sae(trainer.sae, eval_batches())
        metrics.update(train_seconds=train_seconds, train_tokens=trainer.tokens_seen, steps=trainer.step)
        save_sae(trainer.sae, member.sae_uri, metadata=metadata, fire_count_F=fire_count_F, num_tokens=int(metrics["eval_tokens"]))
        write_json_atomic(join(member.sae_uri, METRICS_FILE), metrics)
    return [{"sae_id": m.sae_id, "sae_uri": m.sae_uri, **read_json(join(m.sae_uri, METRICS_FILE))} for m in members]
