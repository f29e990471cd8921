"""Small builders shared by the sae_core tests."""

from __future__ import annotations

import torch

from sae_core import SaeConfig, build_sae
from sae_core.base import SparseCoder

D_IN, D_SAE = 16, 64

# Per-architecture settings small enough to train in milliseconds yet exercise every loss term.
ARCH_KWARGS = {
    "relu": {"sparsity_coefficient": 0.5},
    "topk": {"k": 4, "dead_after_tokens": 64},
    "batchtopk": {"k": 4, "dead_after_tokens": 64},
    "jumprelu": {"sparsity_coefficient": 0.05},
    "gated": {"sparsity_coefficient": 0.5},
    "matryoshka_batchtopk": {"k": 4, "dead_after_tokens": 64, "matryoshka_prefixes": (4, 16)},
    "deep_topk": {"k": 4, "dead_after_tokens": 64, "deep_encoder_depth": 2, "deep_decoder_depth": 1, "deep_width": 24},
}


def make_sae(architecture: str, **overrides) -> SparseCoder:
    """A small SAE of the given architecture."""
    kwargs = {"d_in": D_IN, "d_sae": D_SAE, **ARCH_KWARGS[architecture], **overrides}
    return build_sae(SaeConfig(architecture=architecture, **kwargs))


def activation_batch(num_tokens: int = 128, seed: int = 0, scale: float = 7.0) -> torch.Tensor:
    """Activations with a non-zero mean and a norm far from sqrt(d), like a real residual stream."""
    generator = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(num_tokens, D_IN, generator=generator) + 0.5)
