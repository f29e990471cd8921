"""Bootstrap confidence intervals over contexts for metrics built from per-context sums.

Tokens of one context are not independent (one document, one topic), so the unit resampled is
the context: each resample draws N contexts with replacement, adds their sums, and recomputes
the metric from the totals, exactly as the point estimate is computed from all contexts. The
interval is the percentile interval of those recomputed metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

BOOTSTRAP_RESAMPLES = 2000
"""Resamples per interval: the percentile endpoints move by well under 1% of the width at this count."""
CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_SEED = 0
"""Fixed, so an interval is a pure function of the per-context sums (and an id can name it)."""

Statistic = Callable[[dict[str, Tensor]], Tensor]
"""Maps totals (each [R, ...] over R resamples, or [...] for the point estimate) to a metric [R]."""


def resample_counts(num_contexts: int, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Tensor:
    """[resamples, num_contexts] float64: how often each context is drawn in each resample."""
    generator = torch.Generator().manual_seed(seed)
    draws_RN = torch.randint(num_contexts, (resamples, num_contexts), generator=generator)
    counts_RN = torch.zeros(resamples, num_contexts, dtype=torch.float64)
    return counts_RN.scatter_add_(1, draws_RN, torch.ones_like(draws_RN, dtype=torch.float64))


def bootstrap_interval(
    sums: dict[str, Tensor],
    statistic: Statistic,
    level: float = CONFIDENCE_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """(low, high) percentile interval of statistic over context resamples; sums are [N, ...] per context."""
    sizes = {int(value.shape[0]) for value in sums.values()}
    if len(sizes) != 1:
        raise ValueError(f"bootstrap_interval: per-context sums have different context counts {sorted(sizes)}")
    (num_contexts,) = sizes
    if num_contexts < 2:
        # One context cannot say how much the metric moves between contexts.
        return float("nan"), float("nan")
    counts_RN = resample_counts(num_contexts, resamples, seed)
    totals = {name: torch.tensordot(counts_RN, value.double(), dims=([1], [0])) for name, value in sums.items()}
    values_R = statistic(totals)
    values_R = values_R[torch.isfinite(values_R)]
    if values_R.numel() == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2
    low, high = torch.quantile(values_R, torch.tensor([tail, 1.0 - tail], dtype=values_R.dtype))
    return float(low), float(high)


def point_estimate(sums: dict[str, Tensor], statistic: Statistic) -> float:
    """The statistic on the totals over every context (what the interval brackets)."""
    totals = {name: value.double().sum(dim=0, keepdim=True) for name, value in sums.items()}
    return float(statistic(totals)[0])


def ratio_statistic(numerator: str, denominator: str) -> Statistic:
    """sum(numerator) / sum(denominator): a token-weighted mean from per-context sums and counts."""
    return lambda totals: totals[numerator] / totals[denominator]


def recovered_statistic(clean: str, run: str, ablated: str) -> Statistic:
    """(ablated - run) / (ablated - clean) on totals: CE loss recovered and its KL analogue (clean = 0)."""

    def statistic(totals: dict[str, Tensor]) -> Tensor:
        base_R = totals[clean] if clean else torch.zeros_like(totals[ablated])
        return (totals[ablated] - totals[run]) / (totals[ablated] - base_R)

    return statistic


def explained_variance_statistic(totals: dict[str, Tensor]) -> Tensor:
    """1 - residual SS / total SS around the pooled mean, from sums of x, ||x||^2, residual SS and counts."""
    mean_RD = totals["sum_x"] / totals["count"].unsqueeze(-1)
    total_ss_R = totals["sum_x2"] - totals["count"] * mean_RD.pow(2).sum(dim=-1)
    return 1.0 - totals["residual_ss"] / total_ss_R
