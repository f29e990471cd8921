"""The BatchTopK crosscoder's sparse training path (the SAEs' kernels over the concatenated sources)
gives the dense path's losses, reconstructions, activations, gradients and, after training, weights."""

from __future__ import annotations

import pytest
import torch

from sae_core import SaeTrainer, TrainConfig, fit_many
from tests.sae_core.test_crosscoder import F, M, make_crosscoder, paired_batch


def loss_and_grads(crosscoder, x_BMD: torch.Tensor, sparse: bool):
    crosscoder.use_sparse_kernels = sparse
    crosscoder.zero_grad(set_to_none=True)
    out = crosscoder(x_BMD)
    out.loss.backward()
    return out, {name: param.grad.clone() for name, param in crosscoder.named_parameters()}


@pytest.mark.parametrize("k", [4, 16], ids=["sparse-kernels", "dense-fallback"])  # 16 of 64 latents: above the density limit
@pytest.mark.parametrize("dead", [False, True], ids=["all-alive", "dead-latents"])
def test_sparse_path_matches_the_dense_path(k, dead):
    crosscoder = make_crosscoder("batchtopk", k=k, pre_act_std_coefficient=0.1).train()
    x_BMD = paired_batch(96, seed=3)
    crosscoder.init_from_data(x_BMD)
    if dead:  # half the latents count as dead: AuxK is on
        crosscoder.tokens_since_fired[: F // 2] = crosscoder.cfg.dead_after_tokens
    firing_before = crosscoder.tokens_since_fired.clone()
    dense, dense_grads = loss_and_grads(crosscoder, x_BMD, sparse=False)
    threshold = crosscoder.threshold.clone()
    crosscoder.tokens_since_fired.copy_(firing_before)
    crosscoder.threshold_seen.fill_(False)
    fast, fast_grads = loss_and_grads(crosscoder, x_BMD, sparse=True)
    assert set(fast.losses) == set(dense.losses) and (not dead or dense.losses["aux"] > 0)
    for name in dense.losses:
        assert torch.allclose(fast.losses[name], dense.losses[name], rtol=1e-5, atol=1e-6), name
    assert fast.x_hat_BD.shape == (96, M, x_BMD.shape[-1])
    assert torch.allclose(fast.x_hat_BD, dense.x_hat_BD, atol=1e-5)
    # The same latents kept; values equal up to summation order (one [B, M*D] product vs a per-source einsum).
    fast_acts_BF = fast.acts_BF.to_dense()  # the sparse path hands out CSR activations (for firing and L0)
    assert torch.equal(fast_acts_BF > 0, dense.acts_BF > 0)
    assert torch.allclose(fast_acts_BF, dense.acts_BF.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(crosscoder.threshold, threshold)
    for name, grad in dense_grads.items():
        assert torch.allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_training_on_the_sparse_path_ends_at_the_dense_paths_weights():
    """Twenty optimiser steps each way end at the same weights."""
    weights = {}
    for sparse in (False, True):
        crosscoder = make_crosscoder("batchtopk", k=4)
        crosscoder.use_sparse_kernels = sparse
        trainer = SaeTrainer(crosscoder, TrainConfig(total_steps=20, lr=1e-3))
        for _ in fit_many([trainer], (paired_batch(64, seed=i) for i in range(20))):
            pass
        weights[sparse] = {name: p.detach().clone() for name, p in crosscoder.named_parameters()}
    for name, dense in weights[False].items():
        assert torch.allclose(weights[True][name], dense, atol=1e-4), name
