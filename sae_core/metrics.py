"""Evaluation metrics as pure functions of inputs x_BD, reconstructions x_hat_BD and latents acts_BF."""

from __future__ import annotations

import torch
from torch import Tensor


def mse(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """Mean over tokens of the squared reconstruction error summed over dimensions."""
    return (x_hat_BD - x_BD).pow(2).sum(dim=-1).mean()


def fraction_variance_unexplained(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """Residual sum of squares over total sum of squares around the batch mean (FVU)."""
    residual = (x_BD - x_hat_BD).pow(2).sum()
    total = (x_BD - x_BD.mean(dim=0, keepdim=True)).pow(2).sum()
    return residual / total.clamp_min(torch.finfo(total.dtype).tiny)


def explained_variance(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """1 - FVU."""
    return 1.0 - fraction_variance_unexplained(x_BD, x_hat_BD)


def l0_norm(acts_BF: Tensor) -> Tensor:
    """Mean number of active latents per token."""
    if acts_BF.layout == torch.sparse_csr:  # the sparse training path's activations
        return (acts_BF.values() != 0).sum().float() / acts_BF.shape[0]
    return (acts_BF != 0).sum(dim=-1).float().mean()


def l1_norm(acts_BF: Tensor) -> Tensor:
    """Mean absolute latent activation summed over latents."""
    return acts_BF.abs().sum(dim=-1).float().mean()


def cosine_similarity(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """Mean cosine similarity between each input and its reconstruction."""
    return torch.nn.functional.cosine_similarity(x_BD, x_hat_BD, dim=-1).mean()


def l2_ratio(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """Mean of ||x_hat|| / ||x||: below 1 means the SAE shrinks its reconstructions."""
    return (x_hat_BD.norm(dim=-1) / x_BD.norm(dim=-1).clamp_min(1e-8)).mean()


def relative_reconstruction_bias(x_BD: Tensor, x_hat_BD: Tensor) -> Tensor:
    """gamma = E||x_hat||^2 / E[x . x_hat]; gamma < 1 means shrinkage (Wright & Sharkey 2024)."""
    return x_hat_BD.pow(2).sum() / (x_BD * x_hat_BD).sum().clamp_min(1e-12)


def firing_counts(acts_BF: Tensor) -> Tensor:
    """How many tokens of the batch each latent fired on, [F] int64."""
    return (acts_BF > 0).sum(dim=0)


def feature_density(fire_count_F: Tensor, num_tokens: int) -> Tensor:
    """Fraction of tokens on which each latent fired."""
    return fire_count_F.double() / max(num_tokens, 1)


def dead_fraction(fire_count_F: Tensor) -> float:
    """Fraction of latents that never fired over the window the counts cover."""
    return float((fire_count_F == 0).float().mean())


def dense_fraction(fire_count_F: Tensor, num_tokens: int, density_threshold: float = 0.1) -> float:
    """Fraction of latents firing on more than density_threshold of the window's tokens."""
    return float((feature_density(fire_count_F, num_tokens) > density_threshold).float().mean())


class FiringWindow:
    """Accumulates firing counts over a window of tokens for dead / dense / density metrics."""

    def __init__(self, d_sae: int, device: torch.device | str = "cpu") -> None:
        self.counts_F = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.num_tokens = 0

    def update(self, acts_BF: Tensor) -> None:
        """Add a batch's firings."""
        self.counts_F += firing_counts(acts_BF).to(self.counts_F.device)
        self.num_tokens += acts_BF.shape[0]

    def summary(self, density_threshold: float = 0.1) -> dict[str, float]:
        """Dead and dense fractions over the window."""
        return {
            "dead_fraction": dead_fraction(self.counts_F),
            "dense_fraction": dense_fraction(self.counts_F, self.num_tokens, density_threshold),
        }


@torch.no_grad()
def evaluate_reconstruction(x_BD: Tensor, x_hat_BD: Tensor, acts_BF: Tensor) -> dict[str, float]:
    """Every per-batch metric at once, as floats."""
    x_BD, x_hat_BD = x_BD.float(), x_hat_BD.float()
    return {
        "mse": float(mse(x_BD, x_hat_BD)),
        "explained_variance": float(explained_variance(x_BD, x_hat_BD)),
        "l0": float(l0_norm(acts_BF)),
        "l1": float(l1_norm(acts_BF)),
        "cosine_similarity": float(cosine_similarity(x_BD, x_hat_BD)),
        "l2_ratio": float(l2_ratio(x_BD, x_hat_BD)),
        "relative_reconstruction_bias": float(relative_reconstruction_bias(x_BD, x_hat_BD)),
    }


def ce_loss_recovered(ce_clean: float, ce_spliced: float, ce_ablated: float) -> float:
    """(ce_ablated - ce_spliced) / (ce_ablated - ce_clean): 1 = clean, 0 = as bad as the ablation."""
    denominator = ce_ablated - ce_clean
    # An ablation that does not change the loss leaves nothing to recover: report nan, not +-inf.
    return (ce_ablated - ce_spliced) / denominator if denominator != 0 else float("nan")
