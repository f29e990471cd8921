"""BatchTopK SAE (Bussmann et al. 2024): top B*k activations over the whole batch in training.

At inference a per-token rule is needed, so training keeps an EMA of the smallest activation
that survived the batch top-k; inference is then a JumpReLU with that global threshold (and is
exported to SAELens as architecture "jumprelu").
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_core.auxk import aux_k_loss, aux_k_loss_sparse
from sae_core.base import SparseCoder
from sae_core.config import SaeConfig
from sae_core.sparse_ops import Active, PreActivations


@torch.no_grad()
def update_batch_threshold_(threshold: Tensor, seen: Tensor, top_vals_N: Tensor, momentum: float) -> None:
    """EMA of the smallest positive value kept by a batch top-k (first batch: taken as is), in place."""
    positive_N = top_vals_N[top_vals_N > 0]
    if positive_N.numel() == 0:
        return
    batch_min = positive_N.min().to(threshold.dtype)
    if not bool(seen):
        threshold.copy_(batch_min)
        seen.fill_(True)
    else:
        threshold.lerp_(batch_min, momentum)


class BatchTopKSae(SparseCoder):
    """Batch-level top-k in training, thresholded ReLU at inference."""

    architecture = "batchtopk"
    has_sparse_path = True

    def __init__(self, cfg: SaeConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("threshold_seen", torch.tensor(False))

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """Batch top-k (training) or global-threshold JumpReLU (eval)."""
        pre_BF = self.pre_activation(xs_BD)
        if not self.training:
            return pre_BF * (pre_BF > self.threshold), pre_BF
        relu_BF = pre_BF.relu()
        flat_N = relu_BF.flatten()
        num_kept = min(self.cfg.k * pre_BF.shape[0], flat_N.numel())
        top_vals_N, top_idx_N = flat_N.topk(num_kept, sorted=False)
        acts_BF = torch.zeros_like(flat_N).scatter(0, top_idx_N, top_vals_N).view_as(pre_BF)
        self._update_threshold(top_vals_N)
        return acts_BF, pre_BF

    def _update_threshold(self, top_vals_N: Tensor) -> None:
        update_batch_threshold_(self.threshold, self.threshold_seen, top_vals_N, self.cfg.batchtopk_threshold_momentum)

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents."""
        aux = aux_k_loss(xs_BD - xs_hat_BD, pre_BF, self.dead_latents(), self.W_dec, self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}

    def active_latents(self, pre: PreActivations) -> Active:
        """The batch's B*k largest ReLU'd pre-activations, by flat index."""
        flat_N = pre.pre_BF.relu().flatten()
        top_vals_N, top_idx_N = flat_N.topk(min(self.cfg.k * pre.pre_BF.shape[0], flat_N.numel()), sorted=False)
        self._update_threshold(top_vals_N)
        return Active.from_flat(top_idx_N, pre)

    def active_losses(self, xs_BD: Tensor, pre: PreActivations, active: Active, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents, decoded from their indices too."""
        aux = aux_k_loss_sparse(xs_BD - xs_hat_BD, pre, self.dead_latents(), self.W_dec, self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}
