"""Two synthetic sources with a known diff: shared features plus features exclusive to each source.

Models the crosscoder diffing setting of Lindsey et al. 2024: a "shared" feature fires on the
same tokens with the same magnitude in both sources (possibly along a different direction in
each, as two fine-tuning checkpoints would drift), an "a_only" feature exists only in source A's
activations and a "b_only" one only in source B's. A crosscoder must give each a latent whose
per-source decoder norms say which.

Two harder settings (issue 15): sources with very different means and variances (an early
checkpoint whose activations are mostly a constant offset), and "scaled_shared" features present
in both sources but weaker in A, which a diff must not call B-only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.geometry import random_directions

LABELS = ("shared", "a_only", "b_only", "scaled_shared")


@dataclass
class SyntheticPairedFeatures:
    """n_shared + n_a_only + n_b_only sparse features over two sources of width d."""

    d: int
    """Width of each source."""
    n_shared: int
    """Features present in both sources."""
    n_a_only: int
    """Features present in source A (index 0) only."""
    n_b_only: int
    """Features present in source B (index 1) only."""
    firing_probability: float = 0.03
    """Chance each feature is active on a token (independently)."""
    shared_direction_cosine: float | None = None
    """Cosine between a shared feature's A and B directions; None draws them independently."""
    seed: int = 0
    """Seed of the directions and of the samples."""
    n_scaled_shared: int = 0
    """Features present in both sources, with A's magnitude scaled_shared_ratio times B's (indexed last)."""
    scaled_shared_ratio: float = 0.5
    """A's magnitude of a scaled_shared feature relative to B's."""
    source_scales: tuple[float, float] = (1.0, 1.0)
    """Factor each source's features are multiplied by (sources of different variance)."""
    source_offsets: tuple[float, float] = (0.0, 0.0)
    """Norm of a fixed random offset added to every token of each source (sources of different mean)."""

    def __post_init__(self) -> None:
        if self.d < 1 or min(self.n_shared, self.n_a_only, self.n_b_only) < 0 or self.num_features < 1:
            raise ValueError(f"SyntheticPairedFeatures needs d >= 1 and non-negative feature counts, got {self}")
        if not 0 < self.firing_probability <= 1:
            raise ValueError(f"SyntheticPairedFeatures.firing_probability={self.firing_probability} must be in (0, 1]")
        if min(self.n_scaled_shared, self.scaled_shared_ratio, *self.source_scales, *self.source_offsets) < 0:
            raise ValueError(f"SyntheticPairedFeatures needs non-negative scaled-shared counts, ratios, scales and offsets, got {self}")
        if self.shared_direction_cosine is not None and not -1 <= self.shared_direction_cosine <= 1:
            raise ValueError(f"SyntheticPairedFeatures.shared_direction_cosine={self.shared_direction_cosine} must be in [-1, 1]")
        generator = torch.Generator().manual_seed(self.seed)
        N, S = self.num_features, self.n_shared
        dir_a_ND = random_directions(N, self.d, generator)
        dir_b_ND = random_directions(N, self.d, generator)
        if self.shared_direction_cosine is not None:
            # B direction = c * A direction + sqrt(1 - c^2) * (a unit vector orthogonal to it).
            c = self.shared_direction_cosine
            ortho_ND = dir_b_ND - (dir_b_ND * dir_a_ND).sum(dim=1, keepdim=True) * dir_a_ND
            ortho_ND = ortho_ND / ortho_ND.norm(dim=1, keepdim=True).clamp_min(1e-8)
            dir_b_ND = c * dir_a_ND + (1 - c * c) ** 0.5 * ortho_ND
        end_b = S + self.n_a_only + self.n_b_only
        dir_a_ND[S + self.n_a_only:end_b] = 0.0  # b_only features never appear in A
        dir_b_ND[S:S + self.n_a_only] = 0.0  # a_only features never appear in B
        dir_a_ND[end_b:] *= self.scaled_shared_ratio
        self.directions_NMD = torch.stack([dir_a_ND, dir_b_ND], dim=1) * torch.tensor(self.source_scales)[None, :, None]
        """[N, 2, d]: each feature's direction in each source, times its magnitude there (zero where absent)."""
        self.offsets_MD = random_directions(2, self.d, generator) * torch.tensor(self.source_offsets)[:, None]
        """[2, d]: the constant each source adds to every token."""

    @property
    def num_features(self) -> int:
        """Total number of true features."""
        return self.n_shared + self.n_a_only + self.n_b_only + self.n_scaled_shared

    @property
    def labels(self) -> list[str]:
        """Ground-truth class of each feature: shared, a_only or b_only."""
        return (["shared"] * self.n_shared + ["a_only"] * self.n_a_only + ["b_only"] * self.n_b_only
                + ["scaled_shared"] * self.n_scaled_shared)

    def sample(self, num_tokens: int, generator: torch.Generator) -> Tensor:
        """[num_tokens, 2, d]: each source's offset plus, per active feature, its direction there times one magnitude."""
        active_TN = torch.rand(num_tokens, self.num_features, generator=generator) < self.firing_probability
        magnitude_TN = torch.rand(num_tokens, self.num_features, generator=generator)
        return torch.einsum("tn,nmd->tmd", active_TN * magnitude_TN, self.directions_NMD) + self.offsets_MD

    def batches(self, batch_size: int, num_batches: int, seed: int | None = None) -> Iterator[Tensor]:
        """A reproducible stream of [batch_size, 2, d] batches."""
        generator = torch.Generator().manual_seed(self.seed + 1 if seed is None else seed)
        for _ in range(num_batches):
            yield self.sample(batch_size, generator)


@torch.no_grad()
def match_features(true_directions_NMD: Tensor, W_dec_FMD: Tensor) -> tuple[Tensor, Tensor]:
    """(latent index [N], cosine [N]): the latent whose concatenated decoder best matches each feature."""
    true_NX = true_directions_NMD.flatten(1).float()
    dec_FX = W_dec_FMD.flatten(1).float()
    true_NX = true_NX / true_NX.norm(dim=1, keepdim=True).clamp_min(1e-8)
    dec_FX = dec_FX / dec_FX.norm(dim=1, keepdim=True).clamp_min(1e-8)
    best_N = (true_NX @ dec_FX.T).max(dim=1)
    return best_N.indices, best_N.values


__all__ = ["LABELS", "SyntheticPairedFeatures", "match_features"]
