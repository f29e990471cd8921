"""JumpReLU SAE with an L0 penalty trained by straight-through estimators.

Rajamanoharan et al. 2024, "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU
Sparse Autoencoders". The threshold theta (per latent) gets a pseudo-gradient from a rectangle
kernel of width `bandwidth` around pre = theta, since the true gradient of the jump is zero
almost everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sae_core.base import SparseCoder
from sae_core.config import SaeConfig


def _rectangle(z: Tensor) -> Tensor:
    return ((z > -0.5) & (z < 0.5)).to(z.dtype)


class _JumpReLUFn(torch.autograd.Function):
    """pre * H(pre - theta), with d/dtheta = -(theta / eps) * K((pre - theta) / eps)."""

    @staticmethod
    def forward(ctx, pre_BF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_BF * (pre_BF > threshold_F)

    @staticmethod
    def backward(ctx, grad_BF: Tensor) -> tuple[Tensor, Tensor, None]:
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre_BF = grad_BF * (pre_BF > threshold_F)
        kernel_BF = _rectangle((pre_BF - threshold_F) / eps)
        grad_threshold_F = (-(threshold_F / eps) * kernel_BF * grad_BF).sum(dim=0)
        return grad_pre_BF, grad_threshold_F, None


class _StepFn(torch.autograd.Function):
    """H(pre - theta), with d/dtheta = -(1 / eps) * K((pre - theta) / eps) and no gradient to pre."""

    @staticmethod
    def forward(ctx, pre_BF: Tensor, threshold_F: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return (pre_BF > threshold_F).to(pre_BF.dtype)

    @staticmethod
    def backward(ctx, grad_BF: Tensor) -> tuple[None, Tensor, None]:
        pre_BF, threshold_F = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_threshold_F = (-(1.0 / eps) * _rectangle((pre_BF - threshold_F) / eps) * grad_BF).sum(dim=0)
        return None, grad_threshold_F, None


class JumpReluSae(SparseCoder):
    """acts = pre * H(pre - theta); sparsity = lambda * L0 (mean count of active latents).

    Two choices measured on the hard synthetic toy (bench/hard_toy.py, features recovered at
    cos > 0.9 at L0 ~6): the threshold is a plain parameter kept >= 0 after each step, not a
    log (0.613 -> 0.656: in log space the threshold moves multiplicatively, so small ones barely
    move, as SAELens also found), and decoder norms are free, starting at decoder_init_norm
    (-> 0.867; SAELens's trainer 0.797). The L0 penalty does not read decoder norms, so a unit-norm
    constraint only fought the threshold for the scale of each latent.
    """

    architecture = "jumprelu"
    unit_norm_decoder = False

    def __init__(self, cfg: SaeConfig) -> None:
        super().__init__(cfg)
        self.threshold = nn.Parameter(torch.full((cfg.d_sae,), float(cfg.jumprelu_init_threshold)))

    @torch.no_grad()
    def init_firing_from_data(self, xs_ND: Tensor) -> None:
        """Each latent's threshold where it fires on cfg.init_firing_fraction of the first batch (b_enc stays 0)."""
        # A uniform start threshold lets every latent whose pre-activation is O(threshold) fire: half
        # of them at step 0. Per-latent quantiles start the SAE sparse; the kernel then moves them.
        self.threshold.copy_(self.firing_quantile(xs_ND).clamp_min(0.0))

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """A threshold below 0 would let negative pre-activations through: project it back (not clamp in
        the graph, which would zero its gradient there for good)."""
        super().apply_constraints()
        self.threshold.clamp_(min=0.0)

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """JumpReLU of the pre-activation."""
        pre_BF = self.pre_activation(xs_BD)
        return _JumpReLUFn.apply(pre_BF, self.threshold, self.cfg.jumprelu_bandwidth), pre_BF

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """L0 penalty through the step function's straight-through estimator."""
        l0_B = _StepFn.apply(pre_BF, self.threshold, self.cfg.jumprelu_bandwidth).sum(dim=-1)
        return {"sparsity": self.cfg.sparsity_coefficient * l0_B.mean()}
