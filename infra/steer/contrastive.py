"""Contrastive activation addition (Panickssery et al. 2024): a steering vector from paired prompts.

For each pair the activation at the hookpoint is read at the last token of the positive and of the
negative prompt (where the behaviour is expressed, e.g. the answer letter); the vector is the mean of
the differences. It is stored as safetensors and, with an SAE, compared with every decoder direction.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor, nn

from infra.lm.hookpoints import Hookpoint
from infra.steer.conditions import hookpoint_activations
from infra.steer.generate import prompt_ids
from infra.storage import read_bytes, write_bytes_atomic
from sae_core import SparseCoder
from sae_core.steering import contrastive_vector, decoder_cosines


def last_token_activations(model: nn.Module, tokenizer: Any, hookpoint: Hookpoint, prompts: list[str]) -> Tensor:
    """[N, D]: each prompt's activation at its last token."""
    return torch.stack([hookpoint_activations(model, hookpoint, prompt_ids(tokenizer, p))[-1] for p in prompts]).cpu()


def caa_vector(model: nn.Module, tokenizer: Any, hookpoint: Hookpoint, positive: list[str], negative: list[str]) -> Tensor:
    """[D]: mean over pairs of (positive - negative) last-token activations."""
    return contrastive_vector(last_token_activations(model, tokenizer, hookpoint, positive),
                              last_token_activations(model, tokenizer, hookpoint, negative))


def save_vector(uri: str, vector_D: Tensor, hookpoint: str, model: str) -> None:
    """Store the vector as safetensors, with the hookpoint and model it belongs to in the header."""
    write_bytes_atomic(uri, save_safetensors({"vector": vector_D.float().contiguous()}, metadata={"hookpoint": hookpoint, "model": model}))


def load_vector(uri: str) -> Tensor:
    """The stored vector [D]."""
    return load_safetensors(read_bytes(uri))["vector"]


@torch.no_grad()
def cosine_table(vector_D: Tensor, sae: SparseCoder) -> pd.DataFrame:
    """One row per latent: latent, cosine with the vector, rank by |cosine| (0 = most aligned)."""
    cos_F = decoder_cosines(vector_D, sae.W_dec.detach().float().cpu()).numpy()
    rank_F = np.empty(len(cos_F), np.int32)
    rank_F[np.argsort(-np.abs(cos_F), kind="stable")] = np.arange(len(cos_F), dtype=np.int32)
    return pd.DataFrame({"latent": np.arange(len(cos_F), dtype=np.int32), "cosine": cos_F.astype(np.float32), "rank": rank_F})
