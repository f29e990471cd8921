"""Latent scaling (Minder et al. 2025, "Robustly identifying concepts introduced during chat fine-tuning
using crosscoders"): is a latent the decoder norms call exclusive really absent from the other source?

A crosscoder can zero a latent's decoder in one source although the concept is there: the
sparsity loss shrinks a weaker copy away ("complete shrinkage": the concept sits in that source's
reconstruction ERROR), or other latents write it there ("latent decoupling": it sits in that
source's RECONSTRUCTION). For latent j exclusive to source e, with its decoder d = W_dec[j, e] and
activation f_j, the closed-form least-squares fit of beta * f_j * d to a target y over tokens,

    beta = sum_t f_j(t) <d, y_t> / (||d||^2 sum_t f_j(t)^2),

is taken on each source m for two targets (in the crosscoder's scaled units, b_dec removed so a
source's constant offset cannot pose as a concept):
  reconstruction: x_hat_m - b_dec_m, minus j's own contribution f_j W_dec[j, m] in the other source;
  error:          x_m - x_hat_m + f_j W_dec[j, m]  (what is left once every OTHER latent is used).
The ratios nu = beta(other source) / beta(own source) near 0 mean absent; near 1, as present as in
the latent's own source. Pure tensor functions, no I/O.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

EXCLUSIVE_CLASSES = {"a_only": 0, "b_only": -1}
"""Norm classes latent scaling re-examines, with the source (index) each is exclusive to."""


class LatentBetas(NamedTuple):
    """Fitted betas and their ratios for L latents."""

    reconstruction_LM: Tensor
    """beta of each latent on each source's reconstruction [L, M]."""
    error_LM: Tensor
    """beta of each latent on each source's reconstruction error (plus its own contribution) [L, M]."""
    ratio_reconstruction_L: Tensor
    """nu_r = beta_r(other) / beta_r(own); nan for a latent that never fires."""
    ratio_error_L: Tensor
    """nu_eps = beta_eps(other) / beta_eps(own); nan for a latent that never fires."""


@torch.no_grad()
def latent_betas(
    xs_BMD: Tensor, acts_BF: Tensor, W_dec_FMD: Tensor, b_dec_MD: Tensor, latent_L: Tensor, own_L: Tensor, other_L: Tensor
) -> LatentBetas:
    """Betas on every source and their other/own ratios for latents latent_L exclusive to sources own_L."""
    xs_BMD, acts_BF, W_dec_FMD, b_dec_MD = xs_BMD.float(), acts_BF.float(), W_dec_FMD.float(), b_dec_MD.float()
    M = W_dec_FMD.shape[1]
    xs_hat_BMD = torch.einsum("bf,fmd->bmd", acts_BF, W_dec_FMD) + b_dec_MD
    recon_BMD, error_BMD = xs_hat_BMD - b_dec_MD, xs_BMD - xs_hat_BMD
    f_BL = acts_BF[:, latent_L]
    d_LD = W_dec_FMD[latent_L, own_L]
    denominator_L = d_LD.pow(2).sum(-1) * f_BL.pow(2).sum(0)
    # <d_l, target_t> for every token, latent and source: [B, L, M].
    recon_dot_BLM = torch.einsum("bmd,ld->blm", recon_BMD, d_LD)
    error_dot_BLM = torch.einsum("bmd,ld->blm", error_BMD, d_LD)
    # j's own contribution along d in source m: f_j(t) <d, W_dec[j, m]>.
    own_dot_LM = torch.einsum("lmd,ld->lm", W_dec_FMD[latent_L], d_LD)
    contribution_BLM = f_BL[:, :, None] * own_dot_LM[None]
    # Reconstruction: keep j in its own source (beta ~ 1 when j alone writes d), remove it elsewhere.
    is_own_LM = torch.nn.functional.one_hot(own_L % M, M).bool()
    recon_target_BLM = torch.where(is_own_LM[None], recon_dot_BLM, recon_dot_BLM - contribution_BLM)
    error_target_BLM = error_dot_BLM + contribution_BLM
    safe_L = denominator_L.clamp_min(torch.finfo(denominator_L.dtype).tiny)[:, None]
    recon_LM = torch.einsum("bl,blm->lm", f_BL, recon_target_BLM) / safe_L
    error_LM = torch.einsum("bl,blm->lm", f_BL, error_target_BLM) / safe_L
    fired_L = denominator_L > 0
    rows_L = torch.arange(len(latent_L), device=latent_L.device)
    return LatentBetas(
        recon_LM, error_LM,
        _ratio(recon_LM[rows_L, other_L], recon_LM[rows_L, own_L], fired_L),
        _ratio(error_LM[rows_L, other_L], error_LM[rows_L, own_L], fired_L),
    )


def _ratio(other_L: Tensor, own_L: Tensor, fired_L: Tensor) -> Tensor:
    ok_L = fired_L & (own_L.abs() > 1e-8)
    return torch.where(ok_L, other_L / torch.where(ok_L, own_L, torch.ones_like(own_L)), torch.nan)


def scaled_class(norm_class: str, ratio_reconstruction: float, ratio_error: float, exclusive_ratio: float) -> str:
    """Final class of a latent the decoder norms call a_only / b_only, from its beta ratios.

    exclusive (kept a_only / b_only) only when both ratios are below exclusive_ratio;
    shared when the error ratio is not (the concept is in the other source, shrunk out of its decoder);
    spurious when only the reconstruction ratio is not (other latents write it there: decoupling).
    A latent whose ratios cannot be fitted (it never fired) keeps its norm class.
    """
    if norm_class not in EXCLUSIVE_CLASSES or ratio_reconstruction != ratio_reconstruction or ratio_error != ratio_error:
        return norm_class
    if ratio_error >= exclusive_ratio:
        return "shared"
    if ratio_reconstruction >= exclusive_ratio:
        return "spurious"
    return norm_class


__all__ = ["EXCLUSIVE_CLASSES", "LatentBetas", "latent_betas", "scaled_class"]
