"""From per-context loss sums of the splice runs to the reported scores and their intervals.

Conventions (checked against sae-lens's own run_evals in tests/infra/test_saelens_metrics.py):

- ``ce_loss_recovered`` is SAELens's ``ce_loss_score``: (CE_zero - CE_sae) / (CE_zero - CE_clean)
  where the zero ablation zeroes the hookpoint at EVERY position (BOS/special included), the SAE
  replaces every position but the special ones, and CE averages next-token losses predicted
  from non-special positions.
- ``kl_div_score`` is SAELens's: (KL_zero - KL_sae) / KL_zero, KL(clean || run) averaged over
  every non-special position, the last one included (it has a distribution, if no target).
- ``*_special_kept`` are saeflow's earlier figures: the zero ablation leaves special positions
  clean too. Zeroing the BOS position wrecks most models (it is an attention sink), so the
  special-kept ablation is the milder baseline and its "recovered" the stricter score: it says
  how much of the damage done by removing the CONTENT the SAE undoes. Not comparable with
  published numbers; kept for that reading.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_core.bootstrap import bootstrap_interval, point_estimate, ratio_statistic, recovered_statistic

RUNS = ("spliced", "zero_ablation", "zero_ablation_special_kept", "random_perturbation")
"""The interventions of every splice evaluation; each is compared with the clean run."""
OPTIONAL_RUNS = ("mean_ablation", "resample_ablation")
"""Baselines run only when asked for (splice_eval.AblationBaselines)."""
CI_METRIC = "ce_loss_recovered"
"""The interval a target width (splice_ci_width) is measured on."""

_RECOVERED = {
    "ce_loss_recovered": recovered_statistic("ce_clean", "ce_spliced", "ce_zero_ablation"),
    "ce_loss_recovered_special_kept": recovered_statistic("ce_clean", "ce_spliced", "ce_zero_ablation_special_kept"),
    "ce_loss_recovered_random": recovered_statistic("ce_clean", "ce_random_perturbation", "ce_zero_ablation"),
    "kl_div_score": recovered_statistic("", "kl_spliced", "kl_zero_ablation"),
    "kl_div_score_special_kept": recovered_statistic("", "kl_spliced", "kl_zero_ablation_special_kept"),
    **{f"ce_loss_recovered_{name}": recovered_statistic("ce_clean", "ce_spliced", f"ce_{name}") for name in OPTIONAL_RUNS},
}
_MEANS = {
    **{f"ce_{name}": ("ce_" + name, "n_ce") for name in ("clean", *RUNS, *OPTIONAL_RUNS)},
    **{f"kl_{name}": ("kl_" + name, "n_kl") for name in (*RUNS, *OPTIONAL_RUNS)},
}


def _run_missing(name: str, sums_N: dict[str, Tensor]) -> bool:
    """Whether a score needs an optional run that was not asked for."""
    return any(name.endswith(run) and f"ce_{run}" not in sums_N for run in OPTIONAL_RUNS)
WITH_INTERVAL = ("ce_loss_recovered", "kl_div_score", "kl_spliced")
"""Scores reported with a bootstrap confidence interval over contexts (columns NAME_ci_low / NAME_ci_high)."""


def _statistic(name: str):
    if name in _RECOVERED:
        return _RECOVERED[name]
    return ratio_statistic(*_MEANS[name])


def score_interval(sums_N: dict[str, Tensor], name: str) -> tuple[float, float]:
    """Bootstrap interval over contexts of one score."""
    return bootstrap_interval(sums_N, _statistic(name))


def summarize(sums_N: dict[str, Tensor]) -> dict[str, float]:
    """Every score, its intervals and the counts, from per-context sums ([N] each)."""
    n_ce, n_kl = float(sums_N["n_ce"].sum()), float(sums_N["n_kl"].sum())
    if n_ce == 0:
        raise ValueError("splice_metrics: every prediction comes from a special position; nothing to score")
    result = {name: point_estimate(sums_N, ratio_statistic(*fields)) for name, fields in _MEANS.items() if not _run_missing(name, sums_N)}
    for name, statistic in _RECOVERED.items():
        if _run_missing(name, sums_N):
            continue
        # An ablation that does not change the loss leaves nothing to recover: nan, not +-inf.
        with torch.no_grad():
            value = point_estimate(sums_N, statistic)
        result[name] = value if abs(value) != float("inf") else float("nan")
    for name in WITH_INTERVAL:
        result[f"{name}_ci_low"], result[f"{name}_ci_high"] = score_interval(sums_N, name)
    result.update(n_predictions=n_ce, n_kl_positions=n_kl, splice_contexts_used=float(sums_N["n_ce"].shape[0]))
    return result
