"""A synthetic sparse MLP with known features: the ground truth a transcoder must recover.

Each of num_features features has an input direction (what the MLP reads, in d_in) and an output
direction (what it writes, in d_out). On a token a sparse set of features is active with
magnitudes in (0, 1]; the MLP's input is the sum of their input directions plus isotropic noise
(the rest of the residual stream), and its output the sum of their output directions. So
x -> y is a sparse computation and not a linear map (num_features > d_in: superposition), and a
transcoder's decoder rows should be the true output directions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.geometry import random_directions
from sae_core.synthetic import sample_batches


@dataclass
class SyntheticSparseMlp:
    """num_features (input direction, output direction) pairs."""

    d_in: int
    d_out: int
    num_features: int
    firing_probability: float = 0.03
    """Chance each feature is active on a token (independently)."""
    noise: float = 0.05
    """Std of the isotropic noise per input coordinate (the input's norm from a feature is ~1)."""
    seed: int = 0
    """Seed of the directions (samples use seed + 1 unless told)."""

    def __post_init__(self) -> None:
        if min(self.d_in, self.d_out, self.num_features) < 1:
            raise ValueError(f"SyntheticSparseMlp needs d_in, d_out, num_features >= 1, got {self.d_in}, {self.d_out}, {self.num_features}")
        if not 0 < self.firing_probability <= 1 or self.noise < 0:
            raise ValueError(f"SyntheticSparseMlp: firing_probability={self.firing_probability} must be in (0, 1], noise={self.noise} >= 0")
        generator = torch.Generator().manual_seed(self.seed)
        self.input_directions_ND = random_directions(self.num_features, self.d_in, generator)
        self.output_directions_NO = random_directions(self.num_features, self.d_out, generator)

    def sample(self, num_tokens: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(x [T, d_in], y [T, d_out]) of num_tokens tokens, row-aligned."""
        active_TN = torch.rand(num_tokens, self.num_features, generator=generator) < self.firing_probability
        acts_TN = active_TN * torch.rand(num_tokens, self.num_features, generator=generator)
        noise_TD = self.noise * torch.randn(num_tokens, self.d_in, generator=generator)
        return acts_TN @ self.input_directions_ND + noise_TD, acts_TN @ self.output_directions_NO

    def batches(self, batch_size: int, num_batches: int, seed: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """A reproducible stream of (x, y) batches."""
        return sample_batches(self.sample, self.seed + 1 if seed is None else seed, batch_size, num_batches)
