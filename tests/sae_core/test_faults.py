"""A non-finite loss marks only the affected SAE failed (with its step); the rest of the group trains on."""

from __future__ import annotations

import torch

from sae_core import SaeTrainer, TrainConfig, fit_many
from tests.sae_core.helpers import activation_batch, make_sae


def trainers(n: int = 2, steps: int = 10) -> list[SaeTrainer]:
    return [SaeTrainer(make_sae("topk"), TrainConfig(total_steps=steps, lr=1e-2)) for _ in range(n)]


def test_a_nan_batch_fails_the_group_at_that_step_and_leaves_weights_finite():
    group = trainers()
    batches = [activation_batch(seed=i) for i in range(10)]
    batches[4] = batches[4].clone()
    batches[4][7, 3] = float("nan")
    reports = list(fit_many(group, batches))
    assert len(reports) == 5, "the stream stops being read once every trainer has failed"
    for trainer in group:
        assert trainer.failure is not None and "non-finite loss at step 4" in trainer.failure
        assert trainer.step == 4
        assert all(torch.isfinite(p).all() for p in trainer.sae.parameters()), "the bad step never updated weights"


def test_one_diverging_sae_does_not_stop_the_others():
    healthy, poisoned = trainers()
    real_forward = poisoned.sae.forward

    def poisoned_forward(x_BD, sparsity_scale=1.0):
        out = real_forward(x_BD, sparsity_scale)
        if poisoned.step == 6:
            return out._replace(loss=out.loss * float("inf"))
        return out

    poisoned.sae.forward = poisoned_forward
    reports = list(fit_many([healthy, poisoned], (activation_batch(seed=i) for i in range(10))))
    assert healthy.step == 10 and healthy.failure is None
    assert poisoned.step == 6 and "step 6" in poisoned.failure
    assert reports[7].metrics[1] is None and reports[7].metrics[0] is not None
