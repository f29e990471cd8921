"""Deep TopK SAE: an MLP encoder in front of the TopK sparse layer, optionally an MLP decoder after it.

A linear encoder can only read features that are linear directions of the input; where the map
from features to activations is nonlinear (or features interfere), an MLP encoder can infer the
sparse code better (amortisation gap: O'Neill, Ye, Iyer & Wu 2024, "Compute Optimal Inference
and Provable Amortisation Gap in Sparse Autoencoders"); an MLP decoder lets a latent write a
curved rather than straight contribution. The sparse layer stays TopK, so interpretability
tooling still reads one dictionary latent per column.

Both MLPs are residual branches beside the usual linear maps, with their output projections
initialised to zero (as in ReZero, Bachlechner et al. 2020): at step 0 the model IS the TopK SAE
of the same seed, and training only adds nonlinearity where it lowers the loss. So

    pre = (x - b_dec) W_enc + b_enc + MLP_enc(x - b_dec) W_enc_out
    x_hat = acts W_dec + b_dec + MLP_dec(acts) W_dec_out

Every weight matrix is named W_* so the Muon option orthogonalises all of them (sae_core.optim);
the pre-activation std penalty reads the full `pre`. Training runs the dense path (the MLP's
output projection makes every pre-activation a dense product anyway). There is no SAELens
architecture for this; sae_core.saelens_format stores it as saeflow's own "deep_topk".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sae_core.config import SaeConfig
from sae_core.topk import TopKSae


def _mlp(widths: list[int], generator: torch.Generator) -> tuple[nn.ParameterList, nn.ParameterList]:
    """Weights [fan_in, fan_out] (He init for the ReLUs) and zero biases of consecutive layers."""
    weights = [torch.randn(a, b, generator=generator) * math.sqrt(2.0 / a) for a, b in zip(widths[:-1], widths[1:], strict=True)]
    return nn.ParameterList(weights), nn.ParameterList([torch.zeros(b) for b in widths[1:]])


def _run_mlp(h_BH: Tensor, weights: nn.ParameterList, biases: nn.ParameterList) -> Tensor:
    for W_HH, b_H in zip(weights, biases, strict=True):
        h_BH = torch.relu(h_BH @ W_HH + b_H)
    return h_BH


class DeepTopKSae(TopKSae):
    """TopK SAE with residual MLP encoder (and optional decoder) branches."""

    architecture = "deep_topk"
    has_sparse_path = False

    def __init__(self, cfg: SaeConfig) -> None:
        super().__init__(cfg)
        width, d_in, d_sae = cfg.deep_width, cfg.d_in, cfg.d_sae
        generator = torch.Generator().manual_seed(cfg.seed + 1)  # the linear part keeps TopKSae's init
        self.W_enc_mlp, self.b_enc_mlp = _mlp([d_in] + [width] * cfg.deep_encoder_depth, generator)
        self.W_enc_out = nn.Parameter(torch.zeros(width, d_sae))
        if cfg.deep_decoder_depth > 0:
            self.W_dec_mlp, self.b_dec_mlp = _mlp([d_sae] + [width] * cfg.deep_decoder_depth, generator)
            self.W_dec_out = nn.Parameter(torch.zeros(width, d_in))

    def pre_activation(self, xs_BD: Tensor) -> Tensor:
        """Linear pre-activation plus the MLP branch's."""
        centred_BD = xs_BD - self.b_dec
        hidden_BH = _run_mlp(centred_BD, self.W_enc_mlp, self.b_enc_mlp)
        return centred_BD @ self.W_enc + self.b_enc + hidden_BH @ self.W_enc_out

    def decode_scaled(self, acts_BF: Tensor) -> Tensor:
        """Linear reconstruction plus the decoder MLP branch's, where there is one."""
        xs_hat_BD = acts_BF @ self.W_dec + self.b_dec
        if self.cfg.deep_decoder_depth > 0:
            xs_hat_BD = xs_hat_BD + _run_mlp(acts_BF, self.W_dec_mlp, self.b_dec_mlp) @ self.W_dec_out
        return xs_hat_BD
