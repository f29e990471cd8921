"""ReLU SAE with an L1 penalty weighted by decoder norms (Anthropic, "Circuits Updates", Apr 2024)."""

from __future__ import annotations

from torch import Tensor

from sae_core.base import SparseCoder


class ReluSae(SparseCoder):
    """acts = ReLU(pre); sparsity = lambda * sum_i acts_i * ||W_dec_i||.

    Decoder norms are free and enter the penalty instead of being pinned to 1, so the SAE
    cannot dodge the L1 by shrinking activations and growing decoder rows.
    """

    architecture = "relu"
    unit_norm_decoder = False

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """ReLU of the pre-activation."""
        pre_BF = self.pre_activation(xs_BD)
        return pre_BF.relu(), pre_BF

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """Decoder-norm-weighted L1."""
        weighted_l1 = (acts_BF * self.W_dec.norm(dim=1)).sum(dim=-1).mean()
        return {"sparsity": self.cfg.sparsity_coefficient * weighted_l1}
