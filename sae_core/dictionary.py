"""The one interface every sparse dictionary implements: SAEs (base.SparseCoder) and crosscoders.

The trainer (trainer.py), the checkpoint format (state.py) and infra's group training loop are
typed against Dictionary alone, so a new kind of dictionary trains, checkpoints and resumes
through the same code once it implements these methods. Kinds differ in what a batch is
([B, D] for an SAE, [B, M, D] for a crosscoder), never in how they are trained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from sae_core.config import DictionaryConfig


class SaeOutput(NamedTuple):
    """What a forward pass returns."""

    x_hat_BD: Tensor
    """Reconstruction, in input units ([B, M, D] for a crosscoder)."""
    acts_BF: Tensor
    """Latent activations. On the sparse training path (train mode, sae_core.sparse_ops) a detached
    CSR [B, F] tensor of the active entries (firing and L0 read it without a dense copy; call
    .to_dense() for a dense view); dense everywhere else, encode() included."""
    loss: Tensor
    """Total training loss (scalar): the sum of ``losses``."""
    losses: dict[str, Tensor]
    """Named, already weighted loss terms: mse, sparsity, aux, pre_act_std."""


class Dictionary(nn.Module, ABC):
    """A sparse dictionary: encode to latents, decode back, a loss to train, constraints to keep.

    Subclasses register the buffers `input_scale`, `initialized` and `tokens_since_fired` [F]
    and the parameter `W_dec` (its first dimension is the latent).
    """

    kind: ClassVar[str]
    """Which family of dictionary (`sae`, `crosscoder`): the checkpoint records it to rebuild the right class."""
    architecture: ClassVar[str]
    unit_norm_decoder: ClassVar[bool]
    """Decoder rows are kept at unit norm, so the trainer removes the gradient parallel to them."""
    has_sparse_path: ClassVar[bool] = False
    """The architecture implements active_latents / active_losses (the sparse kernels, sae_core.sparse_ops)."""
    use_sparse_kernels: bool = True
    """Train through the sparse path where there is one; False forces the plain dense products
    (same result up to float summation order; the equality tests compare the two)."""
    paired: ClassVar[bool] = False
    """Trains on (input, target) pairs: a transcoder (sae_core.transcoder); SAEs and crosscoders reconstruct their input."""
    cfg: DictionaryConfig
    W_dec: nn.Parameter
    tokens_since_fired: Tensor
    initialized: Tensor

    @abstractmethod
    def init_from_data(self, x: Tensor) -> None:
        """Data-dependent initialisation (input scale, b_dec, thresholds) from the first batch."""

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Latent activations [B, F] of inputs given in model units."""

    @abstractmethod
    def decode(self, acts_BF: Tensor) -> Tensor:
        """Reconstruction in model units from latent activations."""

    @abstractmethod
    def forward(self, x: Tensor, sparsity_scale: float = 1.0) -> SaeOutput:
        """Reconstruct a batch and compute the loss; sparsity_scale ramps the sparsity weight in training."""

    @abstractmethod
    def apply_constraints(self) -> None:
        """Re-impose parameter constraints after an optimiser step."""

    @property
    def on_sparse_path(self) -> bool:
        """Whether a forward pass now trains through the sparse kernels (training mode, a sparse path, not switched off)."""
        return self.training and self.use_sparse_kernels and self.has_sparse_path

    # -- dead-latent bookkeeping, shared by every kind -------------------------------------
    @torch.no_grad()
    def _track_firing(self, acts_BF: Tensor) -> None:
        if acts_BF.layout == torch.sparse_csr:  # the sparse path's activations: read the entries alone
            fired_F = torch.zeros_like(self.tokens_since_fired, dtype=torch.bool)
            fired_F[acts_BF.col_indices()[acts_BF.values() > 0]] = True
        else:
            fired_F = (acts_BF > 0).any(dim=0)
        self.tokens_since_fired.add_(acts_BF.shape[0]).masked_fill_(fired_F, 0)

    def dead_latents(self) -> Tensor:
        """Boolean mask [d_sae] of latents silent for cfg.dead_after_tokens training tokens."""
        return self.tokens_since_fired >= self.cfg.dead_after_tokens
