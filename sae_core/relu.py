"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Circuits Updates", Apr 2024)."""

from __future__ import annotations

from torch import Tensor

from sae_core import sparse_ops
from sae_core.base import SparseCoder
from sae_core.sparse_ops import Active, PreActivations


class ReluSae(SparseCoder):
    """acts = ReLU(pre); sparsity = lambda * sum_i acts_i * ||W_dec_i||.

    Decoder norms are free and enter the penalty instead of being pinned to 1, so the SAE
    cannot dodge the L1 by shrinking activations and growing decoder rows.
    """

    architecture = "relu"
    unit_norm_decoder = False
    has_sparse_path = True

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """ReLU of the pre-activation."""
        pre_BF = self.pre_activation(xs_BD)
        return self.activate(pre_BF), pre_BF

    def activate(self, pre_BF: Tensor) -> Tensor:
        """ReLU."""
        return pre_BF.relu()

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """Decoder-norm-weighted L1."""
        weighted_l1 = (acts_BF * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
        return {"sparsity": self.cfg.sparsity_coefficient * weighted_l1}

    def active_latents(self, pre: PreActivations) -> Active | None:
        """Every positive pre-activation, once training has made them few enough (else None)."""
        active_BF = pre.pre_BF > 0
        if int(active_BF.sum()) > sparse_ops.SPARSE_MAX_DENSITY * active_BF.numel():
            return None
        rows_N, cols_N = active_BF.nonzero(as_tuple=True)
        batch, width = pre.pre_BF.shape
        return Active(rows_N, cols_N, pre.at(rows_N, cols_N), batch, width)

    def active_losses(self, xs_BD: Tensor, pre: PreActivations, active: Active, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """Decoder-norm-weighted L1 over the active entries."""
        weighted_l1 = (active.vals_N * self.W_dec.norm(dim=1)[active.cols_N]).sum() / active.batch
        return {"sparsity": self.cfg.sparsity_coefficient * weighted_l1}
