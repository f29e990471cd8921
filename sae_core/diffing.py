"""Model diffing with a crosscoder's decoder: which latents are shared, and which belong to one source.

Lindsey et al. 2024 ("Sparse Crosscoders for Cross-Layer Features and Model Diffing") read the
relative decoder norm ||d_b|| / (||d_a|| + ||d_b||) of each latent: near 0 it writes only to
source a, near 1 only to source b, near 0.5 to both. A latent the norms call exclusive is then
checked by latent scaling (sae_core/latent_scaling.py, Minder et al. 2025) before it is reported
exclusive. Pure functions of tensors; no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from sae_core.latent_scaling import EXCLUSIVE_CLASSES, latent_betas, scaled_class

CLASSES = ("shared", "a_only", "b_only", "spurious", "other")
"""Final classes of live latents; spurious = exclusive by decoder norm, but latent scaling finds the
concept reconstructed in the other source by other latents."""
NORM_CLASSES = ("shared", "a_only", "b_only", "other")


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


class LatentClasses(NamedTuple):
    """Each latent's class by decoder norms, its final class after latent scaling, and the ratios."""

    norm_class: list[str]
    """shared / a_only / b_only / other by relative norm; dead for a latent that never fired."""
    final_class: list[str]
    """norm_class, except that an a_only / b_only latent becomes shared or spurious unless both ratios are low."""
    ratio_reconstruction_F: Tensor
    """nu_r of each latent examined (norm-exclusive and live); nan elsewhere."""
    ratio_error_F: Tensor
    """nu_eps of each latent examined; nan elsewhere."""


@torch.no_grad()
def classify_with_scaling(
    xs_BMD: Tensor, acts_BF: Tensor, W_dec_FMD: Tensor, b_dec_MD: Tensor, a: int, b: int,
    shared_band: tuple[float, float], exclusive_margin: float, exclusive_ratio: float,
) -> LatentClasses:
    """Classify by relative norm (a vs b), then latent-scale every live latent called exclusive.

    xs_BMD are inputs in the crosscoder's scaled units (Crosscoder.scale_inputs), where every
    source has comparable variance, so beta ratios compare like with like.
    """
    live = (acts_BF > 0).any(dim=0).cpu().tolist()
    norm_class = [label if alive else "dead" for label, alive in
                  zip(classify_latents(relative_decoder_norm(W_dec_FMD, a, b).cpu(), shared_band, exclusive_margin), live, strict=True)]
    examined = [f for f, label in enumerate(norm_class) if label in EXCLUSIVE_CLASSES]
    ratio_r_F = torch.full((W_dec_FMD.shape[0],), torch.nan)
    ratio_e_F = ratio_r_F.clone()
    final = list(norm_class)
    if examined:
        own = [a if EXCLUSIVE_CLASSES[norm_class[f]] == 0 else b for f in examined]
        other = [b if o == a else a for o in own]
        device = W_dec_FMD.device
        betas = latent_betas(xs_BMD, acts_BF, W_dec_FMD, b_dec_MD, torch.tensor(examined, device=device),
                             torch.tensor(own, device=device), torch.tensor(other, device=device))
        ratio_r_F[examined] = betas.ratio_reconstruction_L.cpu()
        ratio_e_F[examined] = betas.ratio_error_L.cpu()
        for f in examined:
            final[f] = scaled_class(norm_class[f], float(ratio_r_F[f]), float(ratio_e_F[f]), exclusive_ratio)
    return LatentClasses(norm_class, final, ratio_r_F, ratio_e_F)


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


@torch.no_grad()
def first_present_source(W_dec_FMD: Tensor, presence_fraction: float = 0.3) -> Tensor:
    """[F] int: the first source whose decoder norm is >= presence_fraction of the latent's largest (-1 if all zero).

    For sources ordered as a training trajectory this is the checkpoint where a feature appears.
    """
    norms_FM = W_dec_FMD.float().norm(dim=-1)
    present_FM = (norms_FM >= presence_fraction * norms_FM.max(dim=1, keepdim=True).values) & (norms_FM > 0)
    first_F = present_FM.int().argmax(dim=1)
    return torch.where(present_FM.any(dim=1), first_F, torch.full_like(first_F, -1))


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
    classes: LatentClasses | None = None,
) -> dict[str, Any]:
    """Counts of live latents per class (final and by norm alone), dead count, per-source EV, shared cosine.

    Only latents that fire on the given batch are classified: a dead latent's decoder ratio is
    whatever initialisation left, not a finding. Without `classes` (no latent scaling) the final
    class is the norm class.
    """
    if classes is None:
        live = (acts_BF > 0).any(dim=0).cpu().tolist()
        labels = classify_latents(relative_decoder_norm(W_dec_FMD, a, b).cpu(), shared_band, exclusive_margin)
        norm_labels = [label if alive else "dead" for label, alive in zip(labels, live, strict=True)]
        classes = LatentClasses(norm_labels, norm_labels, torch.empty(0), torch.empty(0))
    live_labels = [label for label in classes.final_class if label != "dead"]
    counts = {name: live_labels.count(name) for name in CLASSES}
    shared_F = torch.tensor([label == "shared" for label in classes.final_class])
    cosine_F = decoder_cosine(W_dec_FMD, a, b).cpu()
    return {
        "counts": counts,
        "norm_counts": {name: classes.norm_class.count(name) for name in NORM_CLASSES},
        "fractions": {name: count / max(len(live_labels), 1) for name, count in counts.items()},
        "live_latents": len(live_labels),
        "dead_latents": len(classes.final_class) - len(live_labels),
        "explained_variance_per_source": per_source_explained_variance(x_BMD, x_hat_BMD).tolist(),
        "shared_decoder_cosine_mean": float(cosine_F[shared_F].mean()) if bool(shared_F.any()) else float("nan"),
        "sources": [a, b],
        "shared_band": list(shared_band),
        "exclusive_margin": exclusive_margin,
    }


__all__ = [
    "CLASSES",
    "NORM_CLASSES",
    "LatentClasses",
    "LatentFrequency",
    "classify_with_scaling",
    "classify_latents",
    "decoder_cosine",
    "diff_summary",
    "first_present_source",
    "per_source_activation_frequency",
    "per_source_explained_variance",
    "relative_decoder_norm",
]
