"""Small builders shared by the sae_core tests."""

from __future__ import annotations

import torch

from sae_core import ARCHITECTURES, SaeConfig, build_sae
from sae_core.base import SparseCoder
from sae_core.config import TRANSCODER_ARCHITECTURES

D_IN, D_SAE = 16, 64
D_OUT = 12
"""Transcoders' target width in the tests: unlike an MLP's, different from D_IN, so a swapped shape fails."""

MODELS = [*ARCHITECTURES, *(f"{kind}-{arch}" for kind in ("transcoder", "skip_transcoder") for arch in TRANSCODER_ARCHITECTURES)]
"""Every kind the contract covers: SAE architectures by name, transcoders as "{kind}-{architecture}"."""


def parse_model(name: str) -> tuple[str, str]:
    """(kind, architecture) of a MODELS entry."""
    kind, _, architecture = name.rpartition("-")
    return kind or "sae", architecture

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


def make_sae(name: str, **overrides) -> SparseCoder:
    """A small SAE of the given architecture, or a transcoder for a "{kind}-{architecture}" name."""
    kind, architecture = parse_model(name)
    paired = {"kind": kind, "d_out": D_OUT} if kind != "sae" else {}
    kwargs = {"d_in": D_IN, "d_sae": D_SAE, **ARCH_KWARGS[architecture], **paired, **overrides}
    return build_sae(SaeConfig(architecture=architecture, **kwargs))


def _mlp_weights() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1234)
    return torch.randn(D_IN, 32, generator=generator) / D_IN**0.5, torch.randn(32, D_OUT, generator=generator) / 32**0.5


def training_batch(name: str, num_tokens: int = 128, seed: int = 0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """activation_batch for an SAE; for a transcoder (x, y) with y a fixed random MLP of x (another
    scale and width than x, so forgetting the target scale or the output space shows)."""
    x_BD = activation_batch(num_tokens, seed)
    if parse_model(name)[0] == "sae":
        return x_BD
    W_in_DH, W_out_HO = _mlp_weights()
    return x_BD, 3.0 * torch.relu(x_BD @ W_in_DH) @ W_out_HO


def target_of(batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """What a model trained on the batch outputs: the input (SAE) or the target (transcoder)."""
    return batch[1] if isinstance(batch, tuple) else batch


def run(model: SparseCoder, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor]):
    """model's forward on a batch of either kind."""
    return model(*batch) if isinstance(batch, tuple) else model(batch)


def predict(model: SparseCoder, x_BD: torch.Tensor) -> torch.Tensor:
    """The model's output for inputs x in model units (decode(encode(x)) for an SAE)."""
    return model.predict(x_BD) if model.paired else model.decode(model.encode(x_BD))


def activation_batch(num_tokens: int = 128, seed: int = 0, scale: float = 7.0) -> torch.Tensor:
    """Activations with a non-zero mean and a norm far from sqrt(d), like a real residual stream."""
    generator = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(num_tokens, D_IN, generator=generator) + 0.5)
