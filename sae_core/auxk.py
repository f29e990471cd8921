"""AuxK: the auxiliary loss that revives dead latents in TopK-style SAEs (Gao et al. 2024)."""

from __future__ import annotations

import torch
from torch import Tensor


def aux_k_loss(residual_BD: Tensor, pre_BF: Tensor, dead_F: Tensor, W_dec_FD: Tensor, k_aux: int) -> Tensor:
    """Squared error of reconstructing the main residual with the top-k_aux dead latents.

    Dead latents get a gradient signal pointing at what the live ones miss. Scaled by
    min(dead / k_aux, 1) so that a handful of dead latents does not get a full-weight loss.
    """
    num_dead = int(dead_F.sum())
    if num_dead == 0:
        return pre_BF.new_zeros(())
    k = min(k_aux, num_dead)
    dead_pre_BF = pre_BF.masked_fill(~dead_F, float("-inf"))
    top_vals_BK, top_idx_BK = dead_pre_BF.topk(k, dim=-1, sorted=False)
    aux_acts_BF = torch.zeros_like(pre_BF).scatter(-1, top_idx_BK, top_vals_BK.relu())
    # The residual is a target, not something to move: only the dead latents learn from it.
    residual_hat_BD = aux_acts_BF @ W_dec_FD
    loss = (residual_hat_BD - residual_BD.detach()).pow(2).sum(dim=-1).mean()
    return loss * min(num_dead / k_aux, 1.0)
