"""Training: one SaeTrainer per SAE, and fit_many to drive a group of them on one stream."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.config import TrainConfig
from sae_core.dictionary import Dictionary
from sae_core.geometry import remove_parallel_gradient_
from sae_core.metrics import fraction_variance_unexplained, l0_norm
from sae_core.optim import build_optimizers, lr_at, sparsity_scale_at

Batch = Tensor | tuple[Tensor, Tensor]
"""What fit_many streams: activations x_BD, or row-aligned (input x_BD, target y_BO) pairs."""


def batch_for(sae: Dictionary, batch: Batch) -> tuple[Tensor, Tensor | None]:
    """(x, y) a model trains on: a transcoder needs a pair; an SAE reconstructs the pair's TARGET.

    So SAEs and transcoders sharing one paired stream (a sweep over kinds) are judged on the same
    activation: the one the transcoders predict and the splice replaces.
    """
    if not isinstance(batch, tuple):
        if sae.paired:
            raise ValueError(f"{sae.cfg.kind} ({sae.architecture}) trains on (input, target) pairs, got one tensor: "
                             "stream a target hookpoint too")  # fmt: skip
        return batch, None
    if len(batch) != 2:
        raise ValueError(f"a paired batch is (input, target), got a tuple of {len(batch)}")
    return batch if sae.paired else (batch[1], None)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss; the step and the loss terms are in the message."""


class SaeTrainer:
    """Owns one dictionary (an SAE or a crosscoder), its optimiser(s) and its position in the schedule."""

    def __init__(self, sae: Dictionary, cfg: TrainConfig) -> None:
        self.sae = sae
        self.cfg = cfg
        self.optimizers = build_optimizers(sae, cfg)
        self.step = 0
        """Optimiser steps taken so far."""
        self.tokens_seen = 0
        """Training tokens consumed so far."""
        self.failure: str | None = None
        """Why training stopped early (a non-finite loss, with its step), or None."""
        self._device_seconds = 0.0
        self._pending_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def device_seconds(self) -> float:
        """Seconds of device time spent in this SAE's steps (CUDA events on GPU, wall time on CPU).

        Lets architectures trained in one group be compared by the compute each actually used.
        """
        if self._pending_events:
            self._pending_events[-1][1].synchronize()
            self._device_seconds += sum(start.elapsed_time(end) for start, end in self._pending_events) / 1000.0
            self._pending_events.clear()
        return self._device_seconds

    @device_seconds.setter
    def device_seconds(self, value: float) -> None:
        self.device_seconds  # noqa: B018 - resolve pending events before overwriting
        self._device_seconds = value

    @property
    def done(self) -> bool:
        """True once the planned number of steps has been taken, or training failed."""
        return self.failure is not None or self.step >= self.cfg.total_steps

    @property
    def device(self) -> torch.device:
        """Device the SAE's parameters live on."""
        return self.sae.W_dec.device

    def train_step(self, batch: Batch) -> dict[str, Tensor]:
        """One optimiser step on a batch (see Batch); returns detached per-step metrics (no host sync)."""
        x_BD, y_BO = batch_for(self.sae, batch)
        if x_BD.is_cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            metrics = self._step(x_BD, y_BO)
            end.record()
            self._pending_events.append((start, end))
            if len(self._pending_events) >= 256:
                _ = self.device_seconds  # bound the event list; one sync per 256 steps
            return metrics
        started = time.perf_counter()
        metrics = self._step(x_BD, y_BO)
        self._device_seconds += time.perf_counter() - started
        return metrics

    def _step(self, x_BD: Tensor, y_BO: Tensor | None = None) -> dict[str, Tensor]:
        sae = self.sae
        sae.train()
        # A transcoder's loss compares its prediction with y; an SAE's its reconstruction with x.
        paired, target_BO = y_BO is not None, x_BD if y_BO is None else y_BO
        if not bool(sae.initialized):
            sae.init_from_data(x_BD, y_BO) if paired else sae.init_from_data(x_BD)
        lr = lr_at(self.step, self.cfg)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        sparsity_scale = sparsity_scale_at(self.step, sae.cfg, self.cfg)
        # bf16 autocast: matmuls in bf16, parameters and optimiser state in fp32.
        autocast = self.cfg.autocast_bf16 == "always" or (self.cfg.autocast_bf16 == "cuda" and x_BD.is_cuda)
        with torch.autocast(x_BD.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = sae(x_BD, y_BO, sparsity_scale=sparsity_scale) if paired else sae(x_BD, sparsity_scale=sparsity_scale)
        if not torch.isfinite(out.loss):
            # Raise before the optimiser touches the weights, so the last checkpoint stays good.
            terms = {name: float(term.detach()) for name, term in out.losses.items()}
            raise NonFiniteLossError(f"{sae.architecture} SAE: non-finite loss at step {self.step}: {terms}")
        out.loss.backward()
        if sae.unit_norm_decoder:
            remove_parallel_gradient_(sae.W_dec)
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(sae.parameters(), self.cfg.max_grad_norm)
        for optimizer in self.optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sae.apply_constraints()
        self.step += 1
        self.tokens_seen += x_BD.shape[0]
        with torch.no_grad():
            metrics = {name: term.detach() for name, term in out.losses.items()}
            metrics["loss"] = out.loss.detach()
            metrics["l0"] = l0_norm(out.acts_BF)
            metrics["fvu"] = fraction_variance_unexplained(target_BO.float(), out.x_hat_BD.float())
            metrics["lr"] = torch.tensor(lr)
        return metrics


@dataclass
class StepReport:
    """Metrics of one shared batch, one dict per trainer (None for a trainer already done)."""

    step: int
    """Index of the batch in the stream this call consumed (0-based)."""
    metrics: list[dict[str, Tensor] | None]


def fit_many(trainers: Sequence[SaeTrainer], batches: Iterable[Batch]) -> Iterator[StepReport]:
    """Train several SAEs on ONE stream: each batch is read once and fed to every unfinished SAE.

    Batches are tensors, or (input, target) pairs for transcoders (an SAE in the same group
    reconstructs the target, see batch_for).

    Stops when every trainer has taken its planned steps (or failed: a non-finite loss sets
    trainer.failure and drops it from the group) or the stream ends. Resuming is the
    caller's business on the data side: restore the trainers, then pass the stream from the
    batch after the last one they saw.
    """
    if not trainers:
        raise ValueError("fit_many needs at least one trainer")
    for index, batch in enumerate(batches):
        if all(trainer.done for trainer in trainers):
            return
        on_device: dict[torch.device, Batch] = {}
        metrics: list[dict[str, Tensor] | None] = []
        for trainer in trainers:
            if trainer.done:
                metrics.append(None)
                continue
            if trainer.device not in on_device:
                on_device[trainer.device] = _to_device(batch, trainer.device)
            try:
                metrics.append(trainer.train_step(on_device[trainer.device]))
            except NonFiniteLossError as error:
                # One diverging SAE must not stop the others sharing the stream: it is marked
                # failed (weights left at the last finite step) and the rest train on.
                trainer.failure = str(error)
                metrics.append(None)
        yield StepReport(step=index, metrics=metrics)


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, tuple):
        return tuple(part.to(device, non_blocking=True) for part in batch)
    return batch.to(device, non_blocking=True)
