"""Evaluate a trained SAE over a stream of held-out batches."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from sae_core.base import SparseCoder
from sae_core.metrics import FiringWindow, evaluate_reconstruction


@torch.no_grad()
def evaluate_sae(sae: SparseCoder, batches: Iterable[Tensor], density_threshold: float = 0.1) -> tuple[dict[str, float], Tensor]:
    """(token-weighted mean of every reconstruction metric + dead/dense fractions, firing counts [F])."""
    sae.eval()
    window = FiringWindow(sae.cfg.d_sae, device=sae.W_dec.device)
    totals: dict[str, float] = {}
    for x_BD in batches:
        x_BD = x_BD.to(sae.W_dec.device)
        acts_BF = sae.encode(x_BD)
        batch_metrics = evaluate_reconstruction(x_BD, sae.decode(acts_BF), acts_BF)
        for name, value in batch_metrics.items():
            totals[name] = totals.get(name, 0.0) + value * x_BD.shape[0]
        window.update(acts_BF)
    if window.num_tokens == 0:
        raise ValueError("evaluate_sae got no evaluation batches")
    result = {name: total / window.num_tokens for name, total in totals.items()}
    result.update(window.summary(density_threshold))
    result["eval_tokens"] = float(window.num_tokens)
    return result, window.counts_F
