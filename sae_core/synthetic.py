"""Synthetic activations with known ground truth: sparse combinations of features in superposition.

Used by the ground-truth recovery tests and the offline demo: a good SAE must find the true
feature directions, which real activations never tell us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.geometry import random_directions


@dataclass
class SyntheticFeatures:
    """num_features unit directions in d dimensions (num_features > d: superposition)."""

    d: int
    """Dimension of the activation space."""
    num_features: int
    """Number of true features."""
    firing_probability: float = 0.02
    """Chance each feature is active on a token (independently)."""
    seed: int = 0
    """Seed of the directions and of the samples."""

    def __post_init__(self) -> None:
        if self.d < 1 or self.num_features < 1:
            raise ValueError(f"SyntheticFeatures needs d >= 1 and num_features >= 1, got d={self.d}, num_features={self.num_features}")
        if not 0 < self.firing_probability <= 1:
            raise ValueError(f"SyntheticFeatures.firing_probability={self.firing_probability} must be in (0, 1]")
        generator = torch.Generator().manual_seed(self.seed)
        self.directions_ND = random_directions(self.num_features, self.d, generator)

    def sample(self, num_tokens: int, generator: torch.Generator) -> Tensor:
        """[num_tokens, d] activations: each active feature adds its direction times a magnitude in (0, 1]."""
        active_TN = torch.rand(num_tokens, self.num_features, generator=generator) < self.firing_probability
        magnitude_TN = torch.rand(num_tokens, self.num_features, generator=generator)
        return (active_TN * magnitude_TN) @ self.directions_ND

    def batches(self, batch_size: int, num_batches: int, seed: int | None = None) -> Iterator[Tensor]:
        """A reproducible stream of batches."""
        return sample_batches(self.sample, self.seed + 1 if seed is None else seed, batch_size, num_batches)


def sample_batches(
    sample: Callable[[int, torch.Generator], Tensor], seed: int, batch_size: int, num_batches: int
) -> Iterator[Tensor]:
    """num_batches draws of sample(batch_size, generator) from one generator seeded with seed (the
    default seed is the data's own + 1, so batches never reuse the stream that drew the directions)."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(num_batches):
        yield sample(batch_size, generator)


@torch.no_grad()
def best_cosines(true_directions_ND: Tensor, W_dec_FD: Tensor) -> Tensor:
    """[N] each true feature's best cosine similarity with any decoder row."""
    true_unit_ND = true_directions_ND / true_directions_ND.norm(dim=1, keepdim=True)
    dec_unit_FD = W_dec_FD.float() / W_dec_FD.float().norm(dim=1, keepdim=True).clamp_min(1e-8)
    return (true_unit_ND @ dec_unit_FD.T).max(dim=1).values


def recovery_score(true_directions_ND: Tensor, W_dec_FD: Tensor) -> float:
    """Mean over true features of the best cosine similarity with any decoder row (1 = all found)."""
    return float(best_cosines(true_directions_ND, W_dec_FD).mean())


def fraction_recovered(true_directions_ND: Tensor, W_dec_FD: Tensor, threshold: float = 0.9) -> float:
    """Fraction of true features whose best decoder row has cosine above threshold."""
    return float((best_cosines(true_directions_ND, W_dec_FD) > threshold).float().mean())
