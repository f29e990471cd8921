"""Evaluate a trained SAE over a stream of held-out batches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.base import SparseCoder
from sae_core.metrics import FiringWindow, evaluate_reconstruction
from sae_core.trainer import Batch, batch_for


@dataclass
class FeatureStats:
    """Per-latent statistics over the evaluation tokens."""

    fire_count_F: Tensor
    """Tokens each latent fired on."""
    act_sum_F: Tensor
    """Sum of each latent's activation over those tokens."""
    act_max_F: Tensor
    """Largest activation of each latent."""
    num_tokens: int

    @property
    def density_F(self) -> Tensor:
        """Fraction of tokens each latent fired on."""
        return self.fire_count_F.double() / max(self.num_tokens, 1)

    @property
    def mean_act_F(self) -> Tensor:
        """Mean activation of each latent when it fires (0 for latents that never fire)."""
        return self.act_sum_F.double() / self.fire_count_F.clamp_min(1).double()


def training_dead_fraction(sae: SparseCoder, trained_tokens: int) -> dict[str, float]:
    """Latents silent over the last min(dead window, trained_tokens) training tokens, and that token count.

    The training stream sees far more tokens than the held-out evaluation (2k tokens in the demo:
    there, a latent firing once per 5k tokens looks dead), and the window is what AuxK calls dead.
    """
    window = max(1, min(int(sae.cfg.dead_after_tokens), int(trained_tokens)))
    return {"dead_fraction": float((sae.tokens_since_fired >= window).float().mean()), "dead_fraction_tokens": float(window)}


@torch.no_grad()
def evaluate_sae(
    sae: SparseCoder, batches: Iterable[Batch], density_threshold: float = 0.1, trained_tokens: int | None = None
) -> tuple[dict[str, float], FeatureStats]:
    """(token-weighted mean of every reconstruction metric + dead/dense fractions, per-latent stats).

    On (input, target) batches a transcoder is scored on its prediction of the target (an SAE on
    its reconstruction of the target, as it trained): explained_variance is then 1 - FVU of y.
    dead_fraction counts latents silent over the last dead_fraction_tokens tokens: the training
    window (training_dead_fraction) when trained_tokens is given, else the evaluation tokens;
    dead_fraction_eval is always the evaluation tokens' figure.
    """
    sae.eval()
    device = sae.W_dec.device
    window = FiringWindow(sae.cfg.d_sae, device=device)
    act_sum_F = torch.zeros(sae.cfg.d_sae, dtype=torch.float64, device=device)
    act_max_F = torch.zeros(sae.cfg.d_sae, dtype=torch.float32, device=device)
    totals: dict[str, float] = {}
    for batch in batches:
        x_BD, y_BO = batch_for(sae, batch)
        x_BD = x_BD.to(device)
        acts_BF = sae.encode(x_BD)
        if y_BO is None:
            batch_metrics = evaluate_reconstruction(x_BD, sae.decode(acts_BF), acts_BF)
        else:
            batch_metrics = evaluate_reconstruction(y_BO.to(device), sae.predict(x_BD), acts_BF)
        for name, value in batch_metrics.items():
            totals[name] = totals.get(name, 0.0) + value * x_BD.shape[0]
        window.update(acts_BF)
        act_sum_F += acts_BF.double().sum(dim=0)
        act_max_F = torch.maximum(act_max_F, acts_BF.float().amax(dim=0))
    if window.num_tokens == 0:
        raise ValueError("evaluate_sae got no evaluation batches")
    result = {name: total / window.num_tokens for name, total in totals.items()}
    result.update(window.summary(density_threshold))
    result["eval_tokens"] = float(window.num_tokens)
    result["dead_fraction_eval"] = result["dead_fraction"]
    result["dead_fraction_tokens"] = float(window.num_tokens)
    if trained_tokens:
        result.update(training_dead_fraction(sae, trained_tokens))
    return result, FeatureStats(window.counts_F.cpu(), act_sum_F.cpu(), act_max_F.cpu(), window.num_tokens)
