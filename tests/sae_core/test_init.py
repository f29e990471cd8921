"""JumpReLU and Gated SAEs start sparse and with a sane reconstruction on the harder synthetic toy."""

from __future__ import annotations

import pytest
import torch

from sae_core import SaeConfig, build_sae
from sae_core.synthetic import fraction_recovered
from sae_core.synthetic_hard import HardSyntheticFeatures

D, NUM_FEATURES = 32, 128


@pytest.mark.parametrize("architecture", ["jumprelu", "gated"])
def test_step_zero_is_sparse_and_reconstructs_within_the_variance(architecture):
    truth = HardSyntheticFeatures(d=D, num_features=NUM_FEATURES, mean_active=4.0, seed=0)
    x_ND = truth.sample(2048, torch.Generator().manual_seed(1))
    sae = build_sae(SaeConfig(architecture=architecture, d_in=D, d_sae=2 * NUM_FEATURES, sparsity_coefficient=1.0))
    # Filled in, so it is in the id. JumpReLU's decoder starts at norm 0.1 (free norms), so its transpose is already small.
    assert sae.cfg.encoder_init_scale == pytest.approx(D / (2 * NUM_FEATURES) if architecture == "gated" else 1.0)
    assert sae.W_enc.norm(dim=0).max() <= 0.13
    sae.init_from_data(x_ND[:1024])
    with torch.no_grad():
        acts_NF = sae.encode(x_ND[1024:])
        fvu = float((sae.decode(acts_NF) - x_ND[1024:]).pow(2).sum() / (x_ND[1024:] - x_ND[1024:].mean(0)).pow(2).sum())
    l0 = float((acts_NF != 0).sum(dim=-1).float().mean())
    # Before: ~half the latents on (L0 ~115-125 of 256) and FVU ~19 at step 0.
    assert l0 == pytest.approx(sae.cfg.init_firing_fraction * sae.cfg.d_sae, rel=0.5)
    assert fvu < 1.5


def test_topk_keeps_the_plain_transpose_and_bad_init_settings_are_refused():
    assert SaeConfig(architecture="topk", d_in=D, d_sae=256).encoder_init_scale == 1.0
    with pytest.raises(ValueError, match="init_firing_fraction"):
        SaeConfig(architecture="jumprelu", d_in=D, init_firing_fraction=1.5)
    with pytest.raises(ValueError, match="encoder_init_scale"):
        SaeConfig(architecture="gated", d_in=D, encoder_init_scale=0.0)


def test_hard_toy_has_power_law_frequencies_pairs_and_a_recovery_metric():
    truth = HardSyntheticFeatures(d=D, num_features=NUM_FEATURES, mean_active=4.0, seed=0)
    assert truth.frequency_N[0] > 20 * truth.frequency_N[-1]
    # Pairs add partners on top of the independent draws, never more than pair_probability of them.
    assert truth.mean_active < truth.mean_l0 < truth.mean_active * (1 + truth.pair_probability)
    x_ND = truth.sample(4096, torch.Generator().manual_seed(2))
    assert x_ND.shape == (4096, D) and torch.isfinite(x_ND).all()
    assert fraction_recovered(truth.directions_ND, truth.directions_ND) == 1.0
    assert fraction_recovered(truth.directions_ND, torch.randn(256, D, generator=torch.Generator().manual_seed(3))) < 0.05
