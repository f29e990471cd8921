"""Training one SAE with each library's own trainer, timed: what the comparison benches share.

saeflow: `SaeTrainer` driven by `fit_many`; SAELens: its `SAETrainer.fit()` on an iterator of
in-memory batches (no model, no network). Each returns the wall seconds of training alone
(construction and the final evaluation are outside the timed span).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from typing import Any
from unittest.mock import patch

import torch


def fit_saeflow(sae_config, train_config, batches: Iterable[torch.Tensor]):
    """(seconds, the trained SAE in eval mode) for one saeflow SAE on the given batches."""
    from sae_core import SaeTrainer, build_sae, fit_many

    trainer = SaeTrainer(build_sae(sae_config), train_config)
    started = time.perf_counter()
    for _ in fit_many([trainer], batches):
        pass
    return time.perf_counter() - started, trainer.sae.eval()


def fit_saelens(sae, batches: Iterator[torch.Tensor], batch: int, steps: int, lr: float, progress_bar: bool = True,
                **trainer_fields: Any) -> float:
    """Seconds for SAELens's own trainer to train `sae` in place: constant lr, Adam, its fixed
    gradient clipping at 1, no W&B; trainer_fields go to SAETrainerConfig (autocast, dead window...)."""
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    cfg = SAETrainerConfig(total_training_samples=batch * steps, train_batch_size_samples=batch, lr=lr, lr_end=lr,
                           logger=LoggingConfig(log_to_wandb=False), **trainer_fields)
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches)
    with nullcontext() if progress_bar else saelens_bars_off():
        started = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - started


@contextmanager
def saelens_bars_off() -> Iterator[None]:
    """SAELens's progress bars off (trainer and normalisation estimate): SAETrainer has no switch for
    them, and TQDM_DISABLE is read only when tqdm is first imported (torch imports it)."""
    from sae_lens.training import activation_scaler, sae_trainer

    with ExitStack() as stack:
        for module in (sae_trainer, activation_scaler):
            stack.enter_context(patch.object(module, "tqdm", partial(module.tqdm, disable=True)))
        yield


def in_subprocess(function: Callable[..., dict], *args: Any) -> dict:
    """function(*args) in a fresh spawned process, so a run inherits no warm caches or allocator state."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)
