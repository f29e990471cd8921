"""AuxK: the auxiliary loss that revives dead latents in TopK-style SAEs (Gao et al. 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from sae_core.sparse_ops import Active, PreActivations, decode_active


def _aux_scale(dead_F: Tensor, k_aux: int) -> tuple[int, float]:
    """(latents to use, loss weight): min(dead / k_aux, 1), so a handful of dead latents gets a small loss."""
    num_dead = int(dead_F.sum())
    return min(k_aux, num_dead), min(num_dead / k_aux, 1.0)


def _top_dead(pre_BF: Tensor, dead_F: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values, indices) [B, k] of each token's k largest dead pre-activations."""
    return pre_BF.masked_fill(~dead_F, float("-inf")).topk(k, dim=-1, sorted=False)


def aux_k_loss(residual_BD: Tensor, pre_BF: Tensor, dead_F: Tensor, W_dec_FD: Tensor, k_aux: int) -> Tensor:
    """Squared error of reconstructing the main residual with the top-k_aux dead latents.

    Dead latents get a gradient signal pointing at what the live ones miss.
    """
    k, scale = _aux_scale(dead_F, k_aux)
    if k == 0:
        return pre_BF.new_zeros(())
    top_vals_BK, top_idx_BK = _top_dead(pre_BF, dead_F, k)
    aux_acts_BF = torch.zeros_like(pre_BF).scatter(-1, top_idx_BK, top_vals_BK.relu())
    # The residual is a target, not something to move: only the dead latents learn from it.
    residual_hat_BD = aux_acts_BF @ W_dec_FD
    return (residual_hat_BD - residual_BD.detach()).pow(2).sum(dim=-1).mean() * scale


def aux_k_loss_sparse(residual_BD: Tensor, pre: PreActivations, dead_F: Tensor, W_dec_FD: Tensor, k_aux: int) -> Tensor:
    """aux_k_loss computed from the chosen dead latents only (see sae_core.sparse_ops)."""
    k, scale = _aux_scale(dead_F, k_aux)
    if k == 0:
        return pre.pre_BF.new_zeros(())
    aux = Active.from_topk(_top_dead(pre.pre_BF, dead_F, k).indices, pre)
    residual_hat_BD = decode_active(aux, W_dec_FD)
    return (residual_hat_BD - residual_BD.detach()).pow(2).sum(dim=-1).mean() * scale
