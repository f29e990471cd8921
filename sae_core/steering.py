"""Interventions on a hookpoint's activations, as pure torch: steering, clamping, contrastive vectors, ablations.

Every function maps activations x_[..]D (model units) to edited activations of the same shape, or
computes what an edit needs. Special positions (BOS/EOS/padding) are left alone by the callers'
masks: their activations are outliers (the attention sink), and SAEs never trained on them.

- steering: x + sum_k scale_k * norm * unit(d_k), scale relative to the hookpoint's typical norm,
  so one scale means the same strength at layer 2 and at layer 20 (Templeton et al. 2024);
- clamping through an SAE: encode, set latent j to v, decode, add the SAE error back, so that only
  latent j's contribution moves: x' = x + (v - f_j(x)) * W_dec[j] / input_scale;
- contrastive activation addition (Panickssery et al. 2024): mean over pairs of x_pos - x_neg;
- ablations of the whole activation (zero, mean, resample) and of one latent (its activation
  replaced by 0, its mean or a resampled value, the rest of x, error included, kept).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from sae_core.base import SparseCoder

AblationMode = Literal["zero", "mean", "resample"]
ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "resample")


def unit(v_D: Tensor) -> Tensor:
    """v / ||v||; a zero vector stays zero (it steers nowhere rather than producing NaN)."""
    return v_D / v_D.norm().clamp_min(1e-12)


def latent_directions(sae: SparseCoder, latents: list[int]) -> Tensor:
    """[K, D] in model units: how x_hat moves per unit of each latent (W_dec rows over the input scale)."""
    return (sae.W_dec[latents] / sae.input_scale).detach()


def steering_vector(directions_KD: Tensor, scales_K: Tensor, norm: float) -> Tensor:
    """[D]: sum_k scales_k * norm * unit(d_k); `norm` is the hookpoint's typical activation norm."""
    units_KD = directions_KD / directions_KD.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (scales_K.to(units_KD.dtype)[:, None] * units_KD).sum(dim=0) * norm


def add_vector(x_BSD: Tensor, vector_D: Tensor, keep_BS: Tensor | None = None) -> Tensor:
    """x + vector at every position, except where keep_BS is True (special positions stay clean)."""
    steered_BSD = x_BSD + vector_D.to(device=x_BSD.device, dtype=x_BSD.dtype)
    if keep_BS is None:
        return steered_BSD
    return torch.where(keep_BS[..., None], x_BSD, steered_BSD)


def set_latents(sae: SparseCoder, x_ND: Tensor, latents: list[int], values_NK: Tensor) -> Tensor:
    """x with latents set to values_NK through the SAE, its reconstruction error added back."""
    x32_ND = x_ND.float()
    acts_NF = sae.encode(x32_ND)
    edited_NF = acts_NF.clone()
    edited_NF[:, latents] = values_NK.to(edited_NF.dtype)
    # decode(edited) + (x - decode(acts)): the error term keeps everything the SAE misses, so a value
    # equal to the latent's own activation returns x itself (up to float rounding).
    return (x32_ND + sae.decode(edited_NF) - sae.decode(acts_NF)).to(x_ND.dtype)


def clamp_latents(sae: SparseCoder, x_BSD: Tensor, latents: list[int], values_K: Tensor, keep_BS: Tensor | None = None) -> Tensor:
    """x with each latent clamped to its value at every (non-kept) position, the SAE error added back."""
    x_ND = x_BSD.reshape(-1, x_BSD.shape[-1])
    values_NK = values_K.to(x_ND.device).float().expand(x_ND.shape[0], len(latents))
    clamped_BSD = set_latents(sae, x_ND, latents, values_NK).reshape(x_BSD.shape)
    return clamped_BSD if keep_BS is None else torch.where(keep_BS[..., None], x_BSD, clamped_BSD)


def contrastive_vector(positive_ND: Tensor, negative_ND: Tensor) -> Tensor:
    """[D]: the mean over paired rows of positive - negative (equal to the difference of the means)."""
    if positive_ND.shape != negative_ND.shape:
        raise ValueError(f"contrastive pairs: positive {tuple(positive_ND.shape)} vs negative {tuple(negative_ND.shape)}; one negative per positive")
    return (positive_ND.float() - negative_ND.float()).mean(dim=0)


def decoder_cosines(vector_D: Tensor, W_dec_FD: Tensor) -> Tensor:
    """[F]: cosine of a vector with every decoder row (the latents a steering vector resembles)."""
    return F.cosine_similarity(W_dec_FD.float(), vector_D.float().to(W_dec_FD.device)[None], dim=-1)


def ablate(x_BSD: Tensor, mode: str, mean_D: Tensor | None = None, pool_MD: Tensor | None = None,
           generator: torch.Generator | None = None, keep_BS: Tensor | None = None) -> Tensor:
    """The whole activation replaced: by zeros, by its mean (mean_D), or by rows drawn from pool_MD."""
    if mode == "zero":
        new_BSD = torch.zeros_like(x_BSD)
    elif mode == "mean":
        if mean_D is None:
            raise ValueError("mean ablation needs mean_D (the mean activation over a harvest)")
        new_BSD = mean_D.to(device=x_BSD.device, dtype=x_BSD.dtype).expand_as(x_BSD)
    elif mode == "resample":
        if pool_MD is None or len(pool_MD) == 0:
            raise ValueError("resample ablation needs pool_MD (activations of other inputs to draw from)")
        # Indices drawn on the CPU generator: one seed gives the same baseline on CPU and CUDA.
        index_N = torch.randint(len(pool_MD), (x_BSD.shape[0] * x_BSD.shape[1],), generator=generator)
        new_BSD = pool_MD[index_N].to(device=x_BSD.device, dtype=x_BSD.dtype).reshape(x_BSD.shape)
    else:
        raise ValueError(f"ablation mode {mode!r} is not one of {', '.join(ABLATION_MODES)}")
    return new_BSD if keep_BS is None else torch.where(keep_BS[..., None], x_BSD, new_BSD)


def latent_replacement(mode: str, rows: int, latent_mean: float | None = None, pool_M: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
    """[rows]: the values one latent is set to when ablated: 0, its mean activation, or resampled activations."""
    if mode == "zero":
        return torch.zeros(rows)
    if mode == "mean":
        if latent_mean is None:
            raise ValueError("mean ablation of a latent needs its mean activation")
        return torch.full((rows,), float(latent_mean))
    if mode == "resample":
        if pool_M is None or len(pool_M) == 0:
            raise ValueError("resample ablation of a latent needs a pool of its activations")
        return pool_M.float().cpu()[torch.randint(len(pool_M), (rows,), generator=generator)]
    raise ValueError(f"ablation mode {mode!r} is not one of {', '.join(ABLATION_MODES)}")


def next_token_shift(logits_base_V: Tensor, logits_steered_V: Tensor, k: int) -> dict[str, object]:
    """KL(base || steered) of the next-token distribution, and the k tokens whose probability rose most.

    Ranked by probability, not log-probability: a log-prob ranking is led by tokens that went from
    1e-9 to 1e-7, which no generation will ever show (measured on SmolLM2).
    """
    logp_base_V = F.log_softmax(logits_base_V.float(), dim=-1)
    logp_steer_V = F.log_softmax(logits_steered_V.float(), dim=-1)
    kl = float((logp_base_V.exp() * (logp_base_V - logp_steer_V)).sum())
    delta_V = logp_steer_V.exp() - logp_base_V.exp()
    top = delta_V.topk(min(k, delta_V.shape[-1]))
    return {"kl": kl, "promoted_ids": top.indices.tolist(), "promoted_deltas": top.values.tolist(),
            "top_base": int(logp_base_V.argmax()), "top_steered": int(logp_steer_V.argmax())}
