"""Synthetic activations with a feature hierarchy: parents that are active whenever a child is.

The known answer for Matryoshka SAEs (Bussmann et al. 2025, section 3's toy model): a parent
feature (say "animal") fires on every token where one of its children ("dog", "cat") fires, and
on some tokens alone. A flat sparse dictionary saves L0 by absorbing the parent into each child's
latent (the parent's latent then stops firing on the children's tokens: feature absorption,
Chanin et al. 2024); a Matryoshka SAE whose first prefix has one latent per parent must learn
the parents whole there and the children (without the parent) in the later latents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from sae_core.geometry import random_directions
from sae_core.synthetic import sample_batches


@dataclass
class SyntheticHierarchy:
    """num_parents parents with children_per_parent mutually exclusive children each, in d dimensions."""

    d: int
    """Dimension of the activation space."""
    num_parents: int = 8
    """Number of parent features."""
    children_per_parent: int = 4
    """Children of each parent; at most one of them fires with the parent."""
    parent_probability: float = 0.15
    """Chance each parent is active on a token."""
    child_probability: float = 0.5
    """Chance that an active parent has one of its children active too (chosen uniformly)."""
    seed: int = 0
    """Seed of the directions and of the samples."""

    def __post_init__(self) -> None:
        for name in ("d", "num_parents", "children_per_parent"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticHierarchy.{name}={getattr(self, name)} must be >= 1")
        for name in ("parent_probability", "child_probability"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"SyntheticHierarchy.{name}={getattr(self, name)} must be in (0, 1]")
        generator = torch.Generator().manual_seed(self.seed)
        directions_ND = random_directions(self.num_parents * (1 + self.children_per_parent), self.d, generator)
        self.parents_PD = directions_ND[: self.num_parents]
        """Parent directions [num_parents, d]."""
        self.children_PCD = directions_ND[self.num_parents:].view(self.num_parents, self.children_per_parent, self.d)
        """Child directions [num_parents, children_per_parent, d]."""

    def sample_with_labels(self, num_tokens: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """(x_TD, parent_on_TP, child_TP): activations, which parents are on, each parent's child index (-1: none)."""
        parent_on_TP = torch.rand(num_tokens, self.num_parents, generator=generator) < self.parent_probability
        has_child_TP = parent_on_TP & (torch.rand(num_tokens, self.num_parents, generator=generator) < self.child_probability)
        child_TP = torch.randint(self.children_per_parent, (num_tokens, self.num_parents), generator=generator)
        child_TP = torch.where(has_child_TP, child_TP, -1)
        parent_mag_TP = parent_on_TP * (0.5 + 0.5 * torch.rand(num_tokens, self.num_parents, generator=generator))
        child_mag_TP = has_child_TP * (0.5 + 0.5 * torch.rand(num_tokens, self.num_parents, generator=generator))
        x_TD = parent_mag_TP @ self.parents_PD
        child_dirs_TPD = self.children_PCD[torch.arange(self.num_parents), child_TP.clamp_min(0)]
        x_TD = x_TD + (child_mag_TP[..., None] * child_dirs_TPD).sum(dim=1)
        return x_TD, parent_on_TP, child_TP

    def batches(self, batch_size: int, num_batches: int, seed: int | None = None) -> Iterator[Tensor]:
        """A reproducible stream of batches."""
        def sample(num_tokens: int, generator: torch.Generator) -> Tensor:
            return self.sample_with_labels(num_tokens, generator)[0]

        return sample_batches(sample, self.seed + 1 if seed is None else seed, batch_size, num_batches)
