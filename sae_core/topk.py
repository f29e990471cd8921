"""TopK SAE: keep the k largest pre-activations per token (Gao et al. 2024, "Scaling and evaluating SAEs")."""

from __future__ import annotations

import torch
from torch import Tensor

from sae_core.auxk import aux_k_loss, aux_k_loss_sparse
from sae_core.base import SparseCoder
from sae_core.sparse_ops import Active, PreActivations


class TopKSae(SparseCoder):
    """acts = ReLU(TopK(pre)); sparsity is fixed by k, so the only extra loss is AuxK."""

    architecture = "topk"
    has_sparse_path = True

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

    def active_latents(self, pre: PreActivations) -> Active:
        """The k largest pre-activations of each token, by index."""
        return Active.from_topk(pre.pre_BF.topk(self.cfg.k, dim=-1, sorted=False).indices, pre)

    def active_losses(self, xs_BD: Tensor, pre: PreActivations, active: Active, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents, decoded from their indices too."""
        aux = aux_k_loss_sparse(xs_BD - xs_hat_BD, pre, self.dead_latents(), self.W_dec, self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}
