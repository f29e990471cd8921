"""The steering and ablation math on known inputs: clamps move only one decoder direction, CAA is a mean difference."""

from __future__ import annotations

import pytest
import torch

from sae_core import SaeConfig, build_sae
from sae_core.steering import (
    ablate,
    add_vector,
    clamp_latents,
    contrastive_vector,
    decoder_cosines,
    latent_directions,
    latent_replacement,
    next_token_shift,
    set_latents,
    steering_vector,
)


@pytest.fixture(params=["relu", "topk", "jumprelu"])
def sae(request):
    cfg = SaeConfig(architecture=request.param, d_in=16, d_sae=48, k=6, seed=3)
    model = build_sae(cfg).eval()
    with torch.no_grad():
        x_ND = torch.randn(256, 16, generator=torch.Generator().manual_seed(0)) * 3 + 1
        model.init_from_data(x_ND)  # a non-trivial input_scale and b_dec, as a trained SAE has
        model.b_enc.add_(0.5)  # make latents fire on random inputs
    return model


@torch.no_grad()
def test_clamping_with_the_error_added_back_moves_x_only_along_the_latents_decoder_direction(sae):
    x_BSD = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1)) * 3
    acts_NF = sae.encode(x_BSD.reshape(-1, 16))
    latent = int(acts_NF.sum(0).argmax())
    clamped_BSD = clamp_latents(sae, x_BSD, [latent], torch.tensor([7.5]))
    delta_N1 = 7.5 - acts_NF[:, latent : latent + 1]
    expected_ND = x_BSD.reshape(-1, 16) + delta_N1 * latent_directions(sae, [latent])
    torch.testing.assert_close(clamped_BSD.reshape(-1, 16), expected_ND, atol=1e-4, rtol=1e-5)


@torch.no_grad()
def test_clamping_a_latent_to_its_own_activation_returns_x(sae):
    x_ND = torch.randn(10, 16, generator=torch.Generator().manual_seed(2)) * 3
    own_NK = sae.encode(x_ND)[:, [4, 9]]
    torch.testing.assert_close(set_latents(sae, x_ND, [4, 9], own_NK), x_ND, atol=1e-5, rtol=1e-5)


def test_kept_positions_are_left_clean(sae):
    x_BSD = torch.randn(1, 4, 16)
    keep_BS = torch.tensor([[True, False, False, False]])
    with torch.no_grad():
        clamped = clamp_latents(sae, x_BSD, [0], torch.tensor([50.0]), keep_BS)
    added = add_vector(x_BSD, torch.ones(16), keep_BS)
    assert torch.equal(clamped[0, 0], x_BSD[0, 0]) and torch.equal(added[0, 0], x_BSD[0, 0])
    assert not torch.allclose(clamped[0, 1], x_BSD[0, 1]) and torch.allclose(added[0, 1], x_BSD[0, 1] + 1)


def test_steering_vector_is_scale_times_norm_times_unit_directions():
    d_KD = torch.tensor([[3.0, 0, 0], [0, 0, -2.0]])
    v_D = steering_vector(d_KD, torch.tensor([2.0, 0.5]), norm=10.0)
    torch.testing.assert_close(v_D, torch.tensor([20.0, 0.0, -5.0]))


def test_contrastive_vector_equals_the_difference_of_the_mean_activations():
    g = torch.Generator().manual_seed(4)
    pos_ND, neg_ND = torch.randn(7, 16, generator=g) + 2, torch.randn(7, 16, generator=g)
    torch.testing.assert_close(contrastive_vector(pos_ND, neg_ND), pos_ND.mean(0) - neg_ND.mean(0))
    with pytest.raises(ValueError, match="one negative per positive"):
        contrastive_vector(pos_ND, neg_ND[:6])


def test_decoder_cosines_find_the_latent_a_vector_was_built_from(sae):
    cos_F = decoder_cosines(3.0 * sae.W_dec[11].detach(), sae.W_dec.detach())
    assert int(cos_F.argmax()) == 11 and cos_F[11] == pytest.approx(1.0, abs=1e-5)


def test_mean_ablation_replaces_x_by_the_stored_mean_and_resample_draws_rows_of_the_pool():
    x_BSD = torch.randn(2, 3, 4)
    mean_D = torch.arange(4.0)
    assert torch.equal(ablate(x_BSD, "mean", mean_D=mean_D), mean_D.expand(2, 3, 4))
    assert torch.equal(ablate(x_BSD, "zero"), torch.zeros(2, 3, 4))
    pool_MD = torch.arange(20.0).reshape(5, 4)
    resampled = ablate(x_BSD, "resample", pool_MD=pool_MD, generator=torch.Generator().manual_seed(0))
    assert all(any(torch.equal(row, p) for p in pool_MD) for row in resampled.reshape(-1, 4))
    again = ablate(x_BSD, "resample", pool_MD=pool_MD, generator=torch.Generator().manual_seed(0))
    assert torch.equal(resampled, again)
    with pytest.raises(ValueError, match="needs mean_D"):
        ablate(x_BSD, "mean")


def test_latent_replacements():
    assert torch.equal(latent_replacement("zero", 3), torch.zeros(3))
    assert torch.equal(latent_replacement("mean", 2, latent_mean=1.5), torch.tensor([1.5, 1.5]))
    drawn = latent_replacement("resample", 50, pool_M=torch.tensor([1.0, 2.0]), generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1.0, 2.0}


def test_next_token_shift_names_the_promoted_token():
    base_V = torch.zeros(10)
    steered_V = base_V.clone()
    steered_V[7] = 5.0
    shift = next_token_shift(base_V, steered_V, k=3)
    assert shift["promoted_ids"][0] == 7 and shift["top_steered"] == 7 and shift["kl"] > 0
    assert next_token_shift(base_V, base_V, k=3)["kl"] == pytest.approx(0.0, abs=1e-7)
