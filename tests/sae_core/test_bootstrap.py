"""Bootstrap intervals over contexts: coverage on a known mean, determinism, and the degenerate cases."""

from __future__ import annotations

import math

import pytest
import torch

from sae_core.bootstrap import bootstrap_interval, explained_variance_statistic, point_estimate, ratio_statistic


def test_interval_covers_the_true_mean_at_about_the_stated_rate():
    generator = torch.Generator().manual_seed(0)
    covered, trials = 0, 200
    for _ in range(trials):
        counts_N = torch.randint(5, 30, (40,), generator=generator).double()
        values_N = torch.randn(40, generator=generator, dtype=torch.float64) + 2.0  # per-token mean 2
        sums = {"loss": values_N * counts_N, "count": counts_N}
        low, high = bootstrap_interval(sums, ratio_statistic("loss", "count"), resamples=400, seed=1)
        covered += low <= 2.0 <= high
    assert 0.88 <= covered / trials <= 0.99  # a 95% percentile interval, approximately


def test_interval_is_deterministic_and_narrows_with_more_contexts():
    generator = torch.Generator().manual_seed(1)
    values_N = torch.randn(400, generator=generator, dtype=torch.float64)
    statistic = ratio_statistic("loss", "count")
    few = {"loss": values_N[:25], "count": torch.ones(25, dtype=torch.float64)}
    many = {"loss": values_N, "count": torch.ones(400, dtype=torch.float64)}
    assert bootstrap_interval(few, statistic) == bootstrap_interval(few, statistic)
    low_few, high_few = bootstrap_interval(few, statistic)
    low_many, high_many = bootstrap_interval(many, statistic)
    assert high_many - low_many < 0.5 * (high_few - low_few)  # ~1/sqrt(16) as wide
    assert low_many <= point_estimate(many, statistic) <= high_many


def test_one_context_has_no_interval_and_mismatched_sums_are_refused():
    statistic = ratio_statistic("loss", "count")
    assert all(math.isnan(v) for v in bootstrap_interval({"loss": torch.ones(1), "count": torch.ones(1)}, statistic))
    with pytest.raises(ValueError, match="different context counts"):
        bootstrap_interval({"loss": torch.ones(3), "count": torch.ones(4)}, statistic)


def test_explained_variance_from_per_context_sums_equals_the_pooled_formula():
    generator = torch.Generator().manual_seed(2)
    x_ND = torch.randn(60, 5, generator=generator, dtype=torch.float64) + 3.0
    x_hat_ND = x_ND + 0.3 * torch.randn(60, 5, generator=generator, dtype=torch.float64)
    context_N = torch.arange(60) // 10  # six contexts of ten tokens
    sums = {
        "sum_x": torch.stack([x_ND[context_N == c].sum(0) for c in range(6)]),
        "sum_x2": torch.stack([x_ND[context_N == c].pow(2).sum() for c in range(6)]),
        "residual_ss": torch.stack([(x_ND - x_hat_ND)[context_N == c].pow(2).sum() for c in range(6)]),
        "count": torch.full((6,), 10.0, dtype=torch.float64),
    }
    pooled = 1 - (x_ND - x_hat_ND).pow(2).sum() / (x_ND - x_ND.mean(0)).pow(2).sum()
    assert point_estimate(sums, explained_variance_statistic) == pytest.approx(float(pooled), abs=1e-12)
