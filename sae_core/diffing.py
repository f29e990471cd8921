"""Model diffing with a crosscoder's decoder: which latents are shared, and which belong to one source.

Lindsey et al. 2024 ("Sparse Crosscoders for Cross-Layer Features and Model Diffing") read the
relative decoder norm ||d_b|| / (||d_a|| + ||d_b||) of each latent: near 0 it writes only to
source a, near 1 only to source b, near 0.5 to both. Pure functions of tensors; no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

CLASSES = ("shared", "a_only", "b_only", "other")


def _check_sources(W_dec_FMD: Tensor, a: int, b: int) -> None:
    M = W_dec_FMD.shape[1] if W_dec_FMD.ndim == 3 else 0
    if not (0 <= a < M and 0 <= b < M) or a == b:
        raise ValueError(f"need W_dec [F, M, D] and two distinct sources in 0..{M - 1}, got shape {list(W_dec_FMD.shape)}, a={a}, b={b}")


@torch.no_grad()
def relative_decoder_norm(W_dec_FMD: Tensor, a: int = 0, b: int = 1) -> Tensor:
    """rel_F = ||d_b|| / (||d_a|| + ||d_b||); nan for a latent whose decoder is zero on both."""
    _check_sources(W_dec_FMD, a, b)
    norm_a_F = W_dec_FMD[:, a].float().norm(dim=-1)
    norm_b_F = W_dec_FMD[:, b].float().norm(dim=-1)
    total_F = norm_a_F + norm_b_F
    return torch.where(total_F > 0, norm_b_F / total_F.clamp_min(torch.finfo(total_F.dtype).tiny), torch.nan)


def classify_latents(
    rel_F: Tensor, shared_band: tuple[float, float] = (0.3, 0.7), exclusive_margin: float = 0.1
) -> list[str]:
    """Label each latent shared (rel in band), a_only (rel < margin), b_only (rel > 1 - margin) or other."""
    low, high = shared_band
    if not 0 <= exclusive_margin <= low <= high <= 1 - exclusive_margin:
        raise ValueError(
            f"classify_latents needs 0 <= exclusive_margin <= shared_band[0] <= shared_band[1] <= 1 - exclusive_margin "
            f"(classes must not overlap), got shared_band={shared_band}, exclusive_margin={exclusive_margin}"
        )
    labels = []
    for rel in rel_F.tolist():  # nan (a zero decoder) fails every comparison: "other"
        if rel < exclusive_margin:
            labels.append("a_only")
        elif rel > 1 - exclusive_margin:
            labels.append("b_only")
        elif low <= rel <= high:
            labels.append("shared")
        else:
            labels.append("other")
    return labels


@torch.no_grad()
def decoder_cosine(W_dec_FMD: Tensor, a: int = 0, b: int = 1) -> Tensor:
    """cos_F between each latent's decoder direction in source a and in source b (0 if either is zero)."""
    _check_sources(W_dec_FMD, a, b)
    return torch.nn.functional.cosine_similarity(W_dec_FMD[:, a].float(), W_dec_FMD[:, b].float(), dim=-1, eps=1e-12)


@torch.no_grad()
def per_source_explained_variance(x_BMD: Tensor, x_hat_BMD: Tensor) -> Tensor:
    """[M]: 1 - residual / total sum of squares (around the batch mean) of each source."""
    x_BMD, x_hat_BMD = x_BMD.float(), x_hat_BMD.float()
    residual_M = (x_BMD - x_hat_BMD).pow(2).sum(dim=(0, 2))
    total_M = (x_BMD - x_BMD.mean(dim=0, keepdim=True)).pow(2).sum(dim=(0, 2))
    return 1.0 - residual_M / total_M.clamp_min(torch.finfo(total_M.dtype).tiny)


class LatentFrequency(NamedTuple):
    """How often each latent fires, and how its decoder splits over sources."""

    density_F: Tensor
    """Fraction of tokens the latent fires on. A crosscoder latent fires once per token for ALL
    sources (one shared latent space), so there is no separate per-source firing; reported once."""
    norm_share_FM: Tensor
    """||W_dec[f, m]|| / sum_m ||W_dec[f, m]||: the share of the latent's output each source gets."""

    @property
    def attributed_density_FM(self) -> Tensor:
        """density_F * norm_share_FM: firing attributed to each source by its decoder-norm share."""
        return self.density_F[:, None] * self.norm_share_FM


@torch.no_grad()
def per_source_activation_frequency(acts_BF: Tensor, W_dec_FMD: Tensor) -> LatentFrequency:
    """Firing density of each latent over the batch plus its decoder-norm share per source."""
    density_F = (acts_BF > 0).float().mean(dim=0)
    norms_FM = W_dec_FMD.float().norm(dim=-1)
    share_FM = norms_FM / norms_FM.sum(dim=1, keepdim=True).clamp_min(torch.finfo(norms_FM.dtype).tiny)
    return LatentFrequency(density_F, share_FM)


@torch.no_grad()
def diff_summary(
    W_dec_FMD: Tensor,
    x_BMD: Tensor,
    x_hat_BMD: Tensor,
    acts_BF: Tensor,
    a: int = 0,
    b: int = 1,
    shared_band: tuple[float, float] = (0.3, 0.7),
    exclusive_margin: float = 0.1,
) -> dict[str, Any]:
    """Counts of live latents per class, dead count, per-source EV and the shared latents' decoder cosine.

    Only latents that fire on the given batch are classified: a dead latent's decoder ratio is
    whatever initialisation left, not a finding.
    """
    live_F = (acts_BF > 0).any(dim=0).cpu()
    labels = classify_latents(relative_decoder_norm(W_dec_FMD, a, b).cpu(), shared_band, exclusive_margin)
    live_labels = [label for label, live in zip(labels, live_F.tolist(), strict=True) if live]
    counts = {name: live_labels.count(name) for name in CLASSES}
    shared_F = torch.tensor([label == "shared" for label in labels]) & live_F
    cosine_F = decoder_cosine(W_dec_FMD, a, b).cpu()
    return {
        "counts": counts,
        "fractions": {name: count / max(len(live_labels), 1) for name, count in counts.items()},
        "live_latents": len(live_labels),
        "dead_latents": len(labels) - len(live_labels),
        "explained_variance_per_source": per_source_explained_variance(x_BMD, x_hat_BMD).tolist(),
        "shared_decoder_cosine_mean": float(cosine_F[shared_F].mean()) if bool(shared_F.any()) else float("nan"),
        "sources": [a, b],
        "shared_band": list(shared_band),
        "exclusive_margin": exclusive_margin,
    }


__all__ = [
    "CLASSES",
    "LatentFrequency",
    "classify_latents",
    "decoder_cosine",
    "diff_summary",
    "per_source_activation_frequency",
    "per_source_explained_variance",
    "relative_decoder_norm",
]
