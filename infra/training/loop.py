"""The one training loop: dictionaries of any kind on one shared stream, resumable from checkpoints.

Restore each job from its last checkpoint (or build it fresh), train the jobs together with
sae_core.fit_many (each batch read once, fed to all), keep a loss history, checkpoint every
`checkpoint_every` batches. What happens to a trained dictionary (an SAE exported with its
metrics, a crosscoder's diff written) is the caller's: see infra.training.group and infra.diff.run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from infra.allocator import keep_freed_memory
from infra.sae_store import load_training_state, save_training_state
from sae_core import SaeTrainer, TrainConfig, build_dictionary, fit_many
from sae_core.config import DictionaryConfig

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """One dictionary to train: what it is and where its resumable state lives."""

    label: str
    """Names the job in logs (an sae_id, a diff_id)."""
    config: DictionaryConfig
    train_config: TrainConfig
    checkpoint_uri: str


@dataclass
class Fitted:
    """A job after the loop: its trainer (trainer.failure says if it diverged) and loss history."""

    job: TrainingJob
    trainer: SaeTrainer
    history: list[dict[str, float]] = field(default_factory=list)
    start_batch: int = 0
    """Stream position it resumed from (0 for a fresh start)."""


def restore_or_build(job: TrainingJob, device: torch.device) -> Fitted:
    """The job at its last checkpoint, or freshly built at batch 0."""
    restored = load_training_state(job.checkpoint_uri, device=device)
    if restored is None:
        return Fitted(job, SaeTrainer(build_dictionary(job.config).to(device), job.train_config))
    trainer, extra = restored
    log.info("%s: resuming from step %d", job.label, trainer.step)
    return Fitted(job, trainer, list(extra.get("history", [])), int(extra["batches_consumed"]))


def fit_jobs(
    jobs: Sequence[TrainingJob],
    stream_from: Callable[[int], Iterable[torch.Tensor]],
    device: torch.device,
    checkpoint_every: int = 1000,
    log_every: int = 50,
    on_step: Callable[[int, list[dict[str, torch.Tensor] | None]], None] | None = None,
) -> list[Fitted]:
    """Train every job to its planned steps (or failure); one Fitted per job, in order.

    `stream_from(i)` must yield the shared stream starting at batch i, so a resumed job continues
    exactly where its checkpoint stopped. `on_step(batches_consumed, metrics)` sees every step
    (progress reports); metrics hold tensors, so converting them is the caller's cost.
    """
    keep_freed_memory()  # training reallocates the same large tensors every step
    fitted = [restore_or_build(job, device) for job in jobs]
    # Jobs at one stream position train together. Jobs at different positions (a point that
    # joined a group of checkpointed ones, e.g. after the grid or the grouping changed) train in
    # turn, each from its own position: every job sees the batches a fresh run would, so
    # grouping never changes a result.
    for start_batch in sorted({f.start_batch for f in fitted}):
        cohort = [f for f in fitted if f.start_batch == start_batch]
        for report in fit_many([f.trainer for f in cohort], stream_from(start_batch)):
            consumed = start_batch + report.step + 1
            if on_step is not None:
                on_step(consumed, report.metrics)
            if consumed % log_every == 0:
                for f, metrics in zip(cohort, report.metrics, strict=True):
                    if metrics is not None:
                        f.history.append({"step": consumed, **{k: float(v) for k, v in metrics.items()}})
            if consumed % checkpoint_every == 0:
                for f in cohort:
                    save_training_state(f.trainer, f.job.checkpoint_uri, extra={"batches_consumed": consumed, "history": f.history})
    return fitted

