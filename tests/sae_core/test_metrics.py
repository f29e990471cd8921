"""Metrics on inputs whose answers are known by construction."""

from __future__ import annotations

import pytest
import torch

from sae_core import metrics
from sae_core.config import scaled_dead_window
from sae_core.evaluate import evaluate_sae
from tests.sae_core.helpers import D_SAE, activation_batch, make_sae


@pytest.fixture
def x_BD():
    return torch.randn(256, 8, generator=torch.Generator().manual_seed(0)) + 3.0


def test_perfect_reconstruction(x_BD):
    acts_BF = torch.zeros(256, 4)
    result = metrics.evaluate_reconstruction(x_BD, x_BD.clone(), acts_BF)
    assert result["mse"] == 0.0
    assert result["explained_variance"] == pytest.approx(1.0)
    assert result["cosine_similarity"] == pytest.approx(1.0)
    assert result["l2_ratio"] == pytest.approx(1.0)
    assert result["relative_reconstruction_bias"] == pytest.approx(1.0)


def test_mean_reconstruction_explains_no_variance(x_BD):
    mean_BD = x_BD.mean(dim=0, keepdim=True).expand_as(x_BD)
    assert float(metrics.explained_variance(x_BD, mean_BD)) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics.fraction_variance_unexplained(x_BD, mean_BD)) == pytest.approx(1.0, abs=1e-6)


def test_shrinkage_is_measured(x_BD):
    half_BD = 0.5 * x_BD
    assert float(metrics.l2_ratio(x_BD, half_BD)) == pytest.approx(0.5)
    assert float(metrics.relative_reconstruction_bias(x_BD, half_BD)) == pytest.approx(0.5)
    assert float(metrics.mse(x_BD, half_BD)) == pytest.approx(float((0.25 * x_BD.pow(2)).sum(dim=1).mean()))


def test_sparsity_counts():
    acts_BF = torch.tensor([[0.0, 2.0, 0.0, -1.0], [0.0, 1.0, 0.0, 0.0]])
    assert float(metrics.l0_norm(acts_BF)) == 1.5
    assert float(metrics.l1_norm(acts_BF)) == 2.0
    assert metrics.firing_counts(acts_BF).tolist() == [0, 2, 0, 0]


def test_firing_window_dead_and_dense():
    window = metrics.FiringWindow(d_sae=4)
    window.update(torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 9 + [[1.0, 1.0, 0.0, 0.0]]))
    summary = window.summary(density_threshold=0.5)
    assert summary["dead_fraction"] == 0.5  # latents 2 and 3 never fired
    assert summary["dense_fraction"] == 0.25  # latent 0 fired on every token
    assert metrics.feature_density(window.counts_F, window.num_tokens).tolist() == [1.0, 0.1, 0.0, 0.0]


def test_dead_fraction_is_measured_over_the_training_window_and_says_on_how_many_tokens():
    sae = make_sae("topk", dead_after_tokens=1000)
    sae.tokens_since_fired[: D_SAE // 4] = 1000  # silent for the whole window
    sae.tokens_since_fired[D_SAE // 4 : D_SAE // 2] = 999  # fired just inside it
    result, _ = evaluate_sae(sae, [activation_batch(64)], trained_tokens=50_000)
    assert result["dead_fraction"] == 0.25 and result["dead_fraction_tokens"] == 1000.0
    assert result["eval_tokens"] == 64.0 and "dead_fraction_eval" in result
    short, _ = evaluate_sae(sae, [activation_batch(64)], trained_tokens=999)
    assert short["dead_fraction_tokens"] == 999.0 and short["dead_fraction"] == 0.5, "a run shorter than the window: its whole length"
    untrained, _ = evaluate_sae(sae, [activation_batch(64)])
    assert untrained["dead_fraction_tokens"] == 64.0 and untrained["dead_fraction"] == untrained["dead_fraction_eval"]


@pytest.mark.parametrize(("train_tokens", "window"), [(131_072, 13_107), (2_000_000, 200_000), (100_000_000, 10_000_000), (10**10, 10_000_000), (5, 1)])
def test_the_dead_window_scales_with_the_run_up_to_the_papers_ten_million(train_tokens, window):
    assert scaled_dead_window(train_tokens) == window
