"""A harder synthetic benchmark than sae_core.synthetic: closer to what real activations look like.

- power-law firing frequencies (a few common features, a long tail of rare ones);
- co-occurring pairs (feature 2i+1 fires with feature 2i more often than chance);
- lognormal magnitudes (heavy-tailed, not uniform in (0, 1]);
- anisotropic directions (a few dominant axes of the space carry most of the variance).
Initialisation and dead-latent problems that the easy toy hides show up here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.geometry import random_directions
from sae_core.synthetic import sample_batches


@dataclass
class HardSyntheticFeatures:
    """num_features directions in d dimensions with power-law frequencies, pairs and lognormal magnitudes."""

    d: int
    num_features: int
    mean_active: float = 5.0
    """Expected active features per token (the true L0)."""
    zipf_exponent: float = 1.0
    """Frequency of the i-th feature ~ 1 / (i + 1)^exponent."""
    pair_probability: float = 0.5
    """Chance that feature 2i+1 also fires when feature 2i does."""
    magnitude_sigma: float = 0.5
    """Sigma of the lognormal magnitudes (median 1)."""
    anisotropy: float = 4.0
    """Ratio of the largest to the smallest axis scale of the directions (before renormalising)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d < 2 or self.num_features < 2:
            raise ValueError(f"HardSyntheticFeatures needs d >= 2 and num_features >= 2, got d={self.d}, num_features={self.num_features}")
        generator = torch.Generator().manual_seed(self.seed)
        axis_scale_D = torch.logspace(0, -torch.log10(torch.tensor(self.anisotropy)).item(), self.d)
        directions_ND = random_directions(self.num_features, self.d, generator) * axis_scale_D
        self.directions_ND = directions_ND / directions_ND.norm(dim=1, keepdim=True)
        weights_N = 1.0 / torch.arange(1, self.num_features + 1, dtype=torch.float64).pow(self.zipf_exponent)
        # Scaled so that the expected count of independently drawn features is mean_active (capped at 1).
        self.frequency_N = (weights_N * self.mean_active / weights_N.sum()).clamp(max=1.0).float()

    @property
    def mean_l0(self) -> float:
        """Expected active features per token once pairs are drawn: above mean_active, because a
        partner fires with probability f_odd + (1 - f_odd) * f_even * pair_probability."""
        pairs = self.num_features // 2
        even_P, odd_P = self.frequency_N[0 : 2 * pairs : 2], self.frequency_N[1 : 2 * pairs : 2]
        return float(self.frequency_N.sum() + ((1 - odd_P) * even_P * self.pair_probability).sum())

    def sample(self, num_tokens: int, generator: torch.Generator) -> Tensor:
        """[num_tokens, d] activations: sum of active directions times lognormal magnitudes."""
        active_TN = torch.rand(num_tokens, self.num_features, generator=generator) < self.frequency_N
        partner_TN = torch.rand(num_tokens, self.num_features // 2, generator=generator) < self.pair_probability
        active_TN[:, 1 : 2 * (self.num_features // 2) : 2] |= active_TN[:, 0 : 2 * (self.num_features // 2) : 2] & partner_TN
        magnitude_TN = torch.exp(self.magnitude_sigma * torch.randn(num_tokens, self.num_features, generator=generator))
        return (active_TN * magnitude_TN) @ self.directions_ND

    def batches(self, batch_size: int, num_batches: int, seed: int | None = None) -> Iterator[Tensor]:
        """A reproducible stream of batches."""
        return sample_batches(self.sample, self.seed + 1 if seed is None else seed, batch_size, num_batches)
