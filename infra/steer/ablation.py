"""Ablation modes: the whole hookpoint (zero, mean, resample) and single SAE latents, scored by next-token loss.

Hookpoint ablation gives the baselines CE loss recovered is measured against: zero ablation (the
sweep's default) overstates recovery for activations with a large mean, so mean ablation (replace x
by the mean activation over the harvest) and resample ablation (by the activation of a random other
token of the harvest) are offered and recorded per baseline (Chan et al. 2022, causal scrubbing).
Latent ablation sets one latent to 0, its mean, or a resampled value through the SAE with the error
added back, and records the loss change of every scored prediction: the per-example effect.
As in infra.lm.splice_eval, special positions stay clean and predictions made from them are not scored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infra.activations.store import leading_rows
from infra.lm.hookpoints import Hookpoint
from infra.lm.splice_eval import forward_capturing, replacing_activation
from sae_core import SparseCoder
from sae_core.metrics import ce_loss_recovered
from sae_core.steering import ablate, latent_replacement, set_latents


def harvest_rows(harvest: str, hookpoint: str, rows: int, exclude_seqs: tuple[int, ...] = ()) -> Tensor:
    """[M, D] the first `rows` non-special activations of the harvest at the hookpoint (float32), held-out contexts skipped."""
    return torch.from_numpy(leading_rows(harvest, hookpoint, rows, exclude_seqs))


@torch.no_grad()
def clean_run(model: nn.Module, hookpoint: Hookpoint, ids_1S: Tensor) -> tuple[Tensor, Tensor]:
    """(log-probs [S-1, V] of the clean model's predictions, activations [1, S, D] at the hookpoint)."""
    logits_1SV, x_1SD = forward_capturing(model, hookpoint, ids_1S)
    return F.log_softmax(logits_1SV[0, :-1].float(), dim=-1), x_1SD


@torch.no_grad()
def replaced_logp(model: nn.Module, hookpoint: Hookpoint, ids_1S: Tensor, x_new_1SD: Tensor) -> Tensor:
    """[S-1, V] log-probs with the hookpoint's activation replaced by x_new."""
    with replacing_activation(model, hookpoint, lambda _x: x_new_1SD):
        return F.log_softmax(model(input_ids=ids_1S, use_cache=False).logits[0, :-1].float(), dim=-1)


def token_losses(logp_SV: Tensor, ids_1S: Tensor) -> Tensor:
    """[S-1] next-token losses."""
    return -logp_SV.gather(-1, ids_1S[0, 1:, None]).squeeze(-1)


@torch.no_grad()
def hookpoint_ablation(model: nn.Module, hookpoint: Hookpoint, sequences: list[list[int]], specials: Tensor, modes: list[str],
                       stats_ND: Tensor, sae: SparseCoder | None, seed: int) -> pd.DataFrame:
    """One row per mode: CE clean / ablated, KL, and (with an SAE) CE spliced and CE recovered against this baseline."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    mean_D = stats_ND.mean(dim=0)
    ce = dict.fromkeys(["clean", "spliced", *modes], 0.0)
    kl = dict.fromkeys(modes, 0.0)
    scored_total = 0
    for ids in sequences:
        ids_1S = torch.tensor([ids], dtype=torch.long, device=device)
        keep_1S = torch.isin(ids_1S, specials.to(device))
        scored_S = ~keep_1S[0, :-1]
        logp_clean_SV, x_1SD = clean_run(model, hookpoint, ids_1S)
        ce["clean"] += float(token_losses(logp_clean_SV, ids_1S)[scored_S].sum())
        runs = {mode: ablate(x_1SD, mode, mean_D=mean_D, pool_MD=stats_ND, generator=generator, keep_BS=keep_1S) for mode in modes}
        if sae is not None:
            x_hat_SD = sae.decode(sae.encode(x_1SD[0].float())).to(x_1SD.dtype)
            runs["spliced"] = torch.where(keep_1S[..., None], x_1SD, x_hat_SD[None])
        for name, x_new_1SD in runs.items():
            logp_SV = replaced_logp(model, hookpoint, ids_1S, x_new_1SD)
            ce[name] += float(token_losses(logp_SV, ids_1S)[scored_S].sum())
            if name in kl:
                kl[name] += float((logp_clean_SV.exp() * (logp_clean_SV - logp_SV)).sum(-1)[scored_S].sum())
        scored_total += int(scored_S.sum())
    if scored_total == 0:
        raise ValueError("hookpoint ablation: every prediction comes from a special position; nothing to score")
    mean = {name: value / scored_total for name, value in ce.items()}
    spliced = mean["spliced"] if sae is not None else float("nan")
    return pd.DataFrame({
        "mode": modes,
        "ce_clean": [mean["clean"]] * len(modes),
        "ce_ablated": [mean[m] for m in modes],
        "kl_ablated": [kl[m] / scored_total for m in modes],
        "ce_spliced": [spliced] * len(modes),
        "ce_loss_recovered": [ce_loss_recovered(mean["clean"], spliced, mean[m]) if sae is not None else float("nan") for m in modes],
        "n_predictions": [scored_total] * len(modes),
    })


@torch.no_grad()
def latent_ablation(model: nn.Module, hookpoint: Hookpoint, sequences: list[list[int]], specials: Tensor, sae: SparseCoder,
                    latents: list[int], modes: list[str], stats_ND: Tensor, seed: int) -> pd.DataFrame:
    """One row per latent, mode and scored prediction: the latent's activation and the loss with it removed."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    stats_NF = sae.encode(stats_ND.to(device).float()).cpu()
    rows = []
    for example, ids in enumerate(sequences):
        ids_1S = torch.tensor([ids], dtype=torch.long, device=device)
        keep_S = torch.isin(ids_1S, specials.to(device))[0]
        scored_S = ~keep_S[:-1]
        logp_clean_SV, x_1SD = clean_run(model, hookpoint, ids_1S)
        loss_clean_S = token_losses(logp_clean_SV, ids_1S)
        x_SD = x_1SD[0]
        acts_SF = sae.encode(x_SD.float())
        for latent in latents:
            for mode in modes:
                values_S1 = latent_replacement(mode, len(ids), float(stats_NF[:, latent].mean()), stats_NF[:, latent], generator)[:, None]
                edited_SD = torch.where(keep_S[:, None], x_SD, set_latents(sae, x_SD, [latent], values_S1.to(device)))
                loss_S = token_losses(replaced_logp(model, hookpoint, ids_1S, edited_SD[None]), ids_1S)
                pos_P = torch.nonzero(scored_S).squeeze(-1).cpu()
                rows.append(pd.DataFrame({
                    "latent": np.int32(latent), "mode": mode, "example": np.int32(example), "pos": pos_P.numpy().astype(np.int32),
                    "target_id": ids_1S[0, 1:][scored_S].cpu().numpy().astype(np.int32),
                    "activation": acts_SF[:-1, latent][scored_S].float().cpu().numpy(),
                    "loss_clean": loss_clean_S[scored_S].cpu().numpy(), "loss_ablated": loss_S[scored_S].cpu().numpy(),
                }))
    frame = pd.concat(rows, ignore_index=True)
    return frame.assign(delta=(frame["loss_ablated"] - frame["loss_clean"]).astype(np.float32))
