"""The sparse training path computes what the plain dense path computes (sae_core.sparse_ops)."""

from __future__ import annotations

import pytest
import torch

from sae_core import SaeTrainer, TrainConfig, fit_many, sparse_ops
from sae_core.metrics import l0_norm
from sae_core.sparse_ops import Active, PreActivations, decode_active
from tests.sae_core.helpers import D_IN, D_SAE, activation_batch, make_sae

SPARSE_ARCHITECTURES = ("topk", "batchtopk", "relu", "matryoshka_batchtopk")


@pytest.fixture(params=["sparse", "dense"])
def kernel(request, monkeypatch):
    """Run a test once with every product on the sparse kernels, once with the dense fallback."""
    monkeypatch.setattr(sparse_ops, "SPARSE_MAX_DENSITY", 1.0 if request.param == "sparse" else 0.0)
    return request.param


def double_inputs(batch: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(batch, 5, generator=generator), torch.randn(5, generator=generator),
               torch.randn(5, 7, generator=generator), torch.randn(7, generator=generator)]
    return [t.double().requires_grad_() for t in tensors]


def test_encode_entries_gradcheck(kernel):
    rows_N = torch.tensor([0, 0, 1, 3, 3, 5])
    cols_N = torch.tensor([1, 6, 0, 2, 3, 6])

    def entries(xs_BD, b_dec_D, W_enc_DF, b_enc_F):
        return PreActivations(xs_BD, b_dec_D, W_enc_DF, b_enc_F).at(rows_N, cols_N)

    assert torch.autograd.gradcheck(entries, double_inputs())


def test_dense_encode_gradcheck():
    assert torch.autograd.gradcheck(lambda *inputs: PreActivations(*inputs).dense(), double_inputs())


def test_decode_active_gradcheck(kernel):
    generator = torch.Generator().manual_seed(1)
    rows_N = torch.tensor([0, 0, 2, 2, 2, 3])  # row 1 has no active latent: an empty bag
    cols_N = torch.tensor([4, 1, 0, 5, 6, 2])
    vals_N = torch.rand(6, generator=generator, dtype=torch.double, requires_grad=True)
    W_dec_FD = torch.randn(7, 5, generator=generator, dtype=torch.double, requires_grad=True)

    def decoded(vals_N, W_dec_FD):
        return decode_active(Active(rows_N, cols_N, vals_N, 4, 7), W_dec_FD)

    assert torch.autograd.gradcheck(decoded, (vals_N, W_dec_FD))
    expected_BD = torch.zeros(4, 7, dtype=torch.double).index_put((rows_N, cols_N), vals_N) @ W_dec_FD
    assert torch.allclose(decoded(vals_N, W_dec_FD), expected_BD)


def test_sparse_decode_gradients_match_embedding_bag():
    """The decoder's own backward (sampled product, sparse product) gives embedding_bag's gradients."""
    generator = torch.Generator().manual_seed(2)
    batch, width, d_in, k = 64, 300, 24, 7
    cols_N = torch.rand(batch, width, generator=generator).topk(k, dim=-1, sorted=False).indices.reshape(-1)
    rows_N = torch.arange(batch).repeat_interleave(k)
    keep_N = torch.rand(batch * k, generator=generator) > 0.2  # uneven bags, some rows possibly empty
    rows_N, cols_N = rows_N[keep_N], cols_N[keep_N]
    vals_N = torch.rand(len(rows_N), generator=generator, requires_grad=True)
    W_dec_FD = torch.randn(width, d_in, generator=generator, requires_grad=True)
    grad_BD = torch.randn(batch, d_in, generator=generator)
    ours = torch.autograd.grad(decode_active(Active(rows_N, cols_N, vals_N, batch, width), W_dec_FD), (vals_N, W_dec_FD), grad_BD)
    counts_B = torch.bincount(rows_N, minlength=batch)
    theirs_BD = torch.nn.functional.embedding_bag(cols_N, W_dec_FD, torch.cumsum(counts_B, 0) - counts_B, mode="sum",
                                                  per_sample_weights=vals_N)
    for mine, reference in zip(ours, torch.autograd.grad(theirs_BD, (vals_N, W_dec_FD), grad_BD), strict=True):
        assert torch.allclose(mine, reference, rtol=1e-5, atol=1e-5)


def loss_and_grads(sae, x_BD: torch.Tensor, sparse: bool):
    sae.use_sparse_kernels = sparse
    sae.zero_grad(set_to_none=True)
    out = sae(x_BD)
    out.loss.backward()
    grads = {name: param.grad.clone() for name, param in sae.named_parameters()}
    return out, grads


@pytest.mark.parametrize("architecture", SPARSE_ARCHITECTURES)
@pytest.mark.parametrize("dead", [False, True], ids=["all-alive", "dead-latents"])
def test_sparse_path_matches_plain_path(architecture, dead, kernel):
    sae = make_sae(architecture, pre_act_std_coefficient=0.1)
    sae.train()
    x_BD = activation_batch(96, seed=3)
    sae.init_from_data(x_BD)
    if dead:  # half the latents count as dead: AuxK is active for topk / batchtopk
        sae.tokens_since_fired[: D_SAE // 2] = sae.cfg.dead_after_tokens
    firing_before = sae.tokens_since_fired.clone()
    plain, plain_grads = loss_and_grads(sae, x_BD, sparse=False)
    firing_plain = sae.tokens_since_fired.clone()
    sae.tokens_since_fired.copy_(firing_before)
    if hasattr(sae, "threshold_seen"):  # batchtopk, matryoshka_batchtopk
        sae.threshold_seen.fill_(False)
    fast, fast_grads = loss_and_grads(sae, x_BD, sparse=True)
    assert set(fast.losses) == set(plain.losses)
    for name in plain.losses:
        assert torch.allclose(fast.losses[name], plain.losses[name], rtol=1e-5, atol=1e-6), name
    assert torch.allclose(fast.x_hat_BD, plain.x_hat_BD, atol=1e-5)
    fast_acts_BF = fast.acts_BF.to_dense() if fast.acts_BF.layout == torch.sparse_csr else fast.acts_BF
    assert torch.equal(fast_acts_BF, plain.acts_BF.detach())
    assert torch.equal(l0_norm(fast.acts_BF), l0_norm(plain.acts_BF))  # read from the CSR entries
    assert torch.equal(sae.tokens_since_fired, firing_plain)  # firing tracked from the entries too
    for name, grad in plain_grads.items():
        assert torch.allclose(fast_grads[name], grad, rtol=1e-4, atol=1e-6), name
    if dead and architecture != "relu":
        assert plain.losses["aux"] > 0
    if architecture == "matryoshka_batchtopk":
        assert plain.losses["matryoshka_mse"] > plain.losses["mse"]  # two inner levels, each worse than the whole


@pytest.mark.parametrize("architecture", SPARSE_ARCHITECTURES)
def test_training_on_the_sparse_path_matches_the_plain_path(architecture):
    """Twenty optimiser steps each way end at the same weights."""
    weights = {}
    for sparse in (False, True):
        sae = make_sae(architecture)
        sae.use_sparse_kernels = sparse
        trainer = SaeTrainer(sae, TrainConfig(total_steps=20, lr=1e-3))
        for _ in fit_many([trainer], (activation_batch(64, seed=i) for i in range(20))):
            pass
        weights[sparse] = {name: p.detach().clone() for name, p in sae.named_parameters()}
    for name, plain in weights[False].items():
        assert torch.allclose(weights[True][name], plain, atol=1e-4), name


def test_eval_mode_uses_the_plain_path():
    sae = make_sae("topk").eval()
    x_BD = activation_batch(8)
    out = sae(x_BD)
    assert out.acts_BF.requires_grad  # the dense path: activations carry the graph
    assert out.x_hat_BD.shape == (8, D_IN)


def test_bf16_autocast_on_cpu_trains_like_fp32():
    """autocast_bf16="always" runs the products in bfloat16 on a CPU; training ends where fp32 does."""
    final = {}
    for mode in ("never", "always"):
        sae = make_sae("topk")
        trainer = SaeTrainer(sae, TrainConfig(total_steps=40, lr=3e-3, autocast_bf16=mode))
        for report in fit_many([trainer], (activation_batch(128, seed=i % 8) for i in range(40))):
            last = report.metrics[0]
        final[mode] = float(last["fvu"])
        assert all(p.dtype == torch.float32 for p in sae.parameters())
    assert final["always"] == pytest.approx(final["never"], abs=0.03)
    assert final["always"] < 0.5
