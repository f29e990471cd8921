"""TopK SAE: keep the k largest pre-activations per token (Gao et al. 2024, "Scaling and evaluating SAEs")."""

from __future__ import annotations

import torch
from torch import Tensor

from sae_core.auxk import aux_k_loss
from sae_core.base import SparseCoder


class TopKSae(SparseCoder):
    """acts = ReLU(TopK(pre)); sparsity is fixed by k, so the only extra loss is AuxK."""

    architecture = "topk"

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """Scatter the ReLU of the k largest pre-activations into a dense [B, F] tensor."""
        pre_BF = self.pre_activation(xs_BD)
        top_vals_BK, top_idx_BK = pre_BF.topk(self.cfg.k, dim=-1, sorted=False)
        acts_BF = torch.zeros_like(pre_BF).scatter(-1, top_idx_BK, top_vals_BK.relu())
        return acts_BF, pre_BF

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents."""
        aux = aux_k_loss(xs_BD - xs_hat_BD, pre_BF, self.dead_latents(), self.W_dec, self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}
