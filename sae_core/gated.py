"""Gated SAE with a weight-shared magnitude path (Rajamanoharan et al. 2024, "Improving
Dictionary Learning with Gated Sparse Autoencoders").

The gate decides WHICH latents fire, the magnitude path HOW MUCH; sharing W_enc between them
(rescaled per latent by exp(r_mag)) keeps the parameter count of a plain SAE. The L1 penalty
hits only the gate, so magnitudes are not shrunk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sae_core.base import SparseCoder
from sae_core.config import SaeConfig


class GatedSae(SparseCoder):
    """acts = H(pi_gate) * ReLU(pi_mag); loss adds L1(ReLU(pi_gate)) and a frozen-decoder aux term."""

    architecture = "gated"

    def __init__(self, cfg: SaeConfig) -> None:
        super().__init__(cfg)
        # The gated SAE has no b_enc: b_gate and b_mag replace it (SAELens stores no b_enc).
        del self.b_enc
        self.b_gate = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(cfg.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(cfg.d_sae))

    @torch.no_grad()
    def init_firing_from_data(self, xs_ND: Tensor) -> None:
        """b_gate so each gate opens on cfg.init_firing_fraction of the first batch; b_mag 0."""
        self.b_gate.copy_(-self.firing_quantile(xs_ND))

    def pre_activation(self, xs_BD: Tensor) -> Tensor:
        """Gate pre-activation pi_gate = (x - b_dec) W_enc + b_gate."""
        return (xs_BD - self.b_dec) @ self.W_enc + self.b_gate

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """Gate times ReLU of the rescaled-encoder magnitude."""
        centered_BD = xs_BD - self.b_dec
        gate_pre_BF = centered_BD @ self.W_enc + self.b_gate
        mag_pre_BF = centered_BD @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return (gate_pre_BF > 0).to(mag_pre_BF.dtype) * mag_pre_BF.relu(), gate_pre_BF

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """L1 on the gate's ReLU, plus reconstruction of x from it through a frozen decoder."""
        gate_acts_BF = pre_BF.relu()
        l1 = gate_acts_BF.sum(dim=-1).mean()
        # The aux term trains the gate to reconstruct on its own; detaching the decoder keeps
        # this auxiliary objective from pulling on the dictionary itself.
        gate_recon_BD = gate_acts_BF @ self.W_dec.detach() + self.b_dec.detach()
        aux = (gate_recon_BD - xs_BD).pow(2).sum(dim=-1).mean()
        return {"sparsity": self.cfg.sparsity_coefficient * l1, "aux": aux}
