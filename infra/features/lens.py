"""The two model runs of the features stage: the logit lens and token attribution by ablation.

Logit lens: a latent's decoder direction d is pushed through the model's final norm and its
unembedding, as TransformerLens's fold_ln does: LayerNorm centres d and scales it by its weight,
RMSNorm only scales; the norm's bias and the input's own scale are the same for every latent,
so they shift no ranking. logits = (norm-folded d) @ W_U.T, top and bottom tokens kept.

Ablation: for an example at (seq, pos), each earlier token i in the last `window` positions is
removed from the context (the rest shifts left, so the example token stays last), the model runs
up to the hookpoint and the SAE re-encodes the last position; delta = ablated - original value.
All of an example's ablations are one batch (same length).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
import torch
from torch import Tensor, nn

from infra.lm.hookpoints import capture_activations
from sae_core import SparseCoder

# Where each family keeps its final norm (causal LM), as infra.lm.hookpoints keeps the blocks.
_FINAL_NORMS = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm", "llama": "model.norm"}


def folded_unembedding(model: nn.Module) -> tuple[Tensor, Tensor, bool]:
    """(W_U [V, D], norm weight [D], centre?) of a supported causal LM."""
    norm = model.get_submodule(_FINAL_NORMS[model.config.model_type])
    W_U_VD = model.get_output_embeddings().weight
    return W_U_VD, norm.weight, isinstance(norm, nn.LayerNorm)


@torch.no_grad()
def logit_lens(model: nn.Module, W_dec_FD: Tensor, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top ids [F, k], top logits [F, k], bottom ids [F, k], bottom logits [F, k]) of each decoder direction."""
    W_U_VD, gamma_D, centre = folded_unembedding(model)
    W_U_VD = W_U_VD.float()
    tops, top_vals, bottoms, bottom_vals = [], [], [], []
    for start in range(0, W_dec_FD.shape[0], chunk):
        d_CD = W_dec_FD[start : start + chunk].float().to(W_U_VD.device)
        if centre:
            d_CD = d_CD - d_CD.mean(dim=1, keepdim=True)
        logits_CV = (d_CD * gamma_D.float()) @ W_U_VD.T
        top = logits_CV.topk(k, dim=1)
        bottom = logits_CV.topk(k, dim=1, largest=False)
        tops.append(top.indices.cpu()), top_vals.append(top.values.cpu())
        bottoms.append(bottom.indices.cpu()), bottom_vals.append(bottom.values.cpu())
    return (torch.cat(tops).numpy(), torch.cat(top_vals).numpy(), torch.cat(bottoms).numpy(), torch.cat(bottom_vals).numpy())


def logit_lens_frame(top_FK: np.ndarray, top_val_FK: np.ndarray, bottom_FK: np.ndarray, bottom_val_FK: np.ndarray) -> pd.DataFrame:
    """Long table: latent, direction (promoted / suppressed), rank, token_id, logit."""
    d_sae, k = top_FK.shape
    latent = np.repeat(np.arange(d_sae, dtype=np.int32), k)
    rank = np.tile(np.arange(k, dtype=np.int32), d_sae)
    frames = [
        pd.DataFrame({"latent": latent, "direction": name, "rank": rank, "token_id": ids.reshape(-1).astype(np.int32),
                      "logit": vals.reshape(-1).astype(np.float32)})
        for name, ids, vals in (("promoted", top_FK, top_val_FK), ("suppressed", bottom_FK, bottom_val_FK))
    ]
    return pd.concat(frames, ignore_index=True)


def logit_lens_schema(d_sae: int, vocab_size: int) -> pa.DataFrameSchema:
    """pandera schema of logit_lens.parquet."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1)),
            "direction": pa.Column(str, pa.Check.isin(["promoted", "suppressed"])),
            "rank": pa.Column("int32", pa.Check.ge(0)),
            "token_id": pa.Column("int32", pa.Check.in_range(0, vocab_size - 1)),
            "logit": pa.Column("float32"),
        },
        strict=True, name="logit lens",
    )


@torch.no_grad()
def latent_at_last(model: nn.Module, sae: SparseCoder, hookpoint: str, input_ids_BS: Tensor, latent: int) -> Tensor:
    """[B]: the latent's activation at the last position of each sequence."""
    acts_BSD = capture_activations(model, [hookpoint], input_ids_BS, torch.ones_like(input_ids_BS))[hookpoint]
    return sae.encode(acts_BSD[:, -1].float())[:, latent]


@torch.no_grad()
def ablate_example(model: nn.Module, sae: SparseCoder, hookpoint: str, context_S: np.ndarray, pos: int, latent: int,
                   window: int) -> tuple[float, np.ndarray, np.ndarray]:
    """(original value, removed positions [W], deltas [W]) for one example at `pos` of context_S."""
    device = next(model.parameters()).device
    prefix_P = np.asarray(context_S[: pos + 1], dtype=np.int64)
    original = float(latent_at_last(model, sae, hookpoint, torch.from_numpy(prefix_P)[None].to(device), latent)[0])
    removed_W = np.arange(max(0, pos - window), pos)
    if len(removed_W) == 0:
        return original, removed_W, np.zeros(0, np.float32)
    ablated_WP = np.stack([np.delete(prefix_P, i) for i in removed_W])
    values_W = latent_at_last(model, sae, hookpoint, torch.from_numpy(ablated_WP).to(device), latent)
    return original, removed_W, (values_W.cpu().numpy() - original).astype(np.float32)


def attribution_schema(d_sae: int) -> pa.DataFrameSchema:
    """pandera schema of attribution.parquet."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1)),
            "rank": pa.Column("int32", pa.Check.ge(0)),
            "seq_id": pa.Column("int64", pa.Check.ge(0)),
            "pos": pa.Column("int32", pa.Check.ge(0)),
            "original": pa.Column("float32"),
            "removed_pos": pa.Column("int32", pa.Check.ge(0)),
            "token_id": pa.Column("int32", pa.Check.ge(0)),
            "delta": pa.Column("float32", pa.Check(lambda s: np.isfinite(s), element_wise=False)),
        },
        strict=True, checks=pa.Check(lambda df: (df["removed_pos"] < df["pos"]).all(), error="only earlier tokens are removed"),
        name="ablation attribution",
    )
