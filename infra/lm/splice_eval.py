"""Downstream fidelity of an SAE: splice its reconstruction into the model and measure next-token loss.

For each batch of contexts the model runs five times with the hookpoint's activation x_BSD:
clean; replaced by the SAE's reconstruction x_hat = decode(encode(x)); replaced by zeros at
every position (SAELens's ablation); replaced by zeros at non-special positions only; and
replaced by x + e', where e' is a random error with the same norm and the same cosine to x as
the SAE's error e = x_hat - x at every token. CE loss recovered (Bricken et al. 2023, "Towards
Monosemanticity") puts the splice on a scale from zero ablation (0) to the clean model (1); the
random baseline says whether the SAE's error hurts the model more than noise of its size and
angle would (Gurnee 2024, "SAE reconstruction errors are (empirically) pathological"). How the
scores are formed, and which one equals SAELens's, is in infra/lm/splice_scores.py.

A transcoder is spliced IN PLACE OF ITS MLP: with source_hookpoint=blocks.L.hook_mlp_in and
hookpoint=blocks.L.hook_mlp_out, the MLP's output is replaced by the transcoder's prediction from
the MLP's clean input (exact: nothing upstream of the MLP changes), and the zero ablation is
zero-ablating that MLP, the baseline sparse-MLP work reports CE loss recovered against.

Special positions (BOS/EOS/padding, the harvest's ``special`` mask) are never replaced by the
SAE and predictions made FROM them are not scored: SAEs are trained without them (their
activations are outliers, e.g. the BOS attention sink), and the token after an EOS starts an
unrelated document. Sums are kept per context, so every score comes with a bootstrap interval
over contexts (sae_core/bootstrap.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infra.lm.hookpoints import Hookpoint, replacing_activation, resolve_hookpoints
from infra.lm.splice_scores import CI_METRIC, score_interval, summarize
from sae_core.geometry import matched_random_perturbation

SpliceFn = Callable[[Tensor], Tensor]
"""Anything mapping activations x_BSD to replacements x_hat_BSD (an SAE's round trip, identity, ...);
with a source hookpoint, activations there to replacements at the hookpoint (a transcoder's prediction)."""


_ORDER_IN_BLOCK = {"resid_pre": 0, "attn_out": 1, "mlp_in": 2, "mlp_out": 3, "resid_post": 4}
"""Where each hookpoint kind is computed within a block (GPT-NeoX's parallel attention aside, whose
attn_out and mlp_in both read resid_pre: neither is upstream of the other, and neither is asked for)."""


def forward_capturing(model: nn.Module, hookpoint: Hookpoint, ids_BS: Tensor) -> tuple[Tensor, Tensor]:
    """(logits [B, S, V], the activations [B, S, D] at the hookpoint) of one clean forward pass."""
    captured: list[Tensor] = []

    def record(x_BSD: Tensor) -> Tensor:
        captured.append(x_BSD)
        return x_BSD

    with replacing_activation(model, hookpoint, record):
        logits_BSV = model(input_ids=ids_BS, use_cache=False).logits
    return logits_BSV, captured[0]


@contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    """Within the block an nn.Module is in eval mode; its training flag is restored after."""
    was_training = isinstance(module, nn.Module) and module.training
    if was_training:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train()


def _as_splice_fn(sae_or_fn: Any) -> SpliceFn:
    """A SparseCoder-like object (encode/decode in model units; a transcoder's predict) or a plain
    callable, as x_BSD -> x_hat_BSD."""
    if not (hasattr(sae_or_fn, "encode") and hasattr(sae_or_fn, "decode")):
        return sae_or_fn
    sae = sae_or_fn
    param = next(iter(sae.parameters()), None) if isinstance(sae, nn.Module) else None
    paired = getattr(sae, "paired", False)

    def round_trip(x_BSD: Tensor) -> Tensor:
        # SAEs speak in tokens x d_in; run them wherever their weights live.
        x_ND = x_BSD.reshape(-1, x_BSD.shape[-1])
        if param is not None:
            x_ND = x_ND.to(param.device)
        out_ND = sae.predict(x_ND) if paired else sae.decode(sae.encode(x_ND))
        return out_ND.reshape(*x_BSD.shape[:-1], out_ND.shape[-1]).to(x_BSD.device)

    return round_trip


def _per_context_terms(logp_clean_BSV: Tensor, logits_BSV: Tensor, targets_BS: Tensor, ce_scored_BS: Tensor, kl_scored_BS: Tensor) -> tuple[Tensor, Tensor]:
    """([B] summed CE over scored predictions, [B] summed KL(clean || run) over scored positions)."""
    logp_BSV = F.log_softmax(logits_BSV.float(), dim=-1)
    ce_BS = -logp_BSV[:, :-1].gather(-1, targets_BS.unsqueeze(-1)).squeeze(-1)
    kl_BS = (logp_clean_BSV.exp() * (logp_clean_BSV - logp_BSV)).sum(dim=-1)
    return (ce_BS * ce_scored_BS).sum(dim=1).double().cpu(), (kl_BS * kl_scored_BS).sum(dim=1).double().cpu()


def _forward_capturing_both(model: nn.Module, source: Hookpoint, hookpoint: Hookpoint, ids_BS: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(logits, activations at source, activations at hookpoint) of one clean forward pass."""
    captured: list[Tensor] = []

    def record(x_BSD: Tensor) -> Tensor:
        captured.append(x_BSD)
        return x_BSD

    with replacing_activation(model, source, record):
        logits_BSV, x_BSD = forward_capturing(model, hookpoint, ids_BS)
    return logits_BSV, captured[0], x_BSD


@dataclass(frozen=True)
class AblationBaselines:
    """Baselines besides SAELens's zero ablation that CE loss recovered is also measured against.

    Zero ablation overstates recovery for an activation with a large mean (Chan et al. 2022): removing
    the mean alone is most of the damage. Mean ablation replaces x by the mean activation, resample
    ablation by the activation of a random other token; both over training rows of the harvest, so
    the held-out contexts scored here never shape their own baseline. Special positions stay clean.
    """

    mean_D: Tensor | None = None
    resample_MD: Tensor | None = None
    """Rows a resample ablation draws from, one per position, with its own seeded generator."""
    seed: int = 1

    def replacements(self, x_BSD: Tensor, special_BS1: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """{run name: replacement [B, S, D]} for the baselines that are set."""
        runs = {}
        if self.mean_D is not None:
            runs["mean_ablation"] = torch.where(special_BS1, x_BSD, self.mean_D.to(x_BSD).expand_as(x_BSD))
        if self.resample_MD is not None:
            index_BS = torch.randint(len(self.resample_MD), x_BSD.shape[:-1], generator=generator)
            rows_BSD = self.resample_MD[index_BS.to(self.resample_MD.device)].to(x_BSD)
            runs["resample_ablation"] = torch.where(special_BS1, x_BSD, rows_BSD)
        return runs


def _score_batch(
    model: nn.Module, hookpoint: Hookpoint, splice: SpliceFn, ids_BS: Tensor, special_BS: Tensor, generator: torch.Generator,
    source: Hookpoint | None = None, baselines: AblationBaselines | None = None, baseline_generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Run clean and every intervention on one batch; per-context ([B]) CE / KL sums and counts."""
    special_BS1 = special_BS.unsqueeze(-1)
    # Logits at position t predict token t+1: CE is scored from non-special positions (the last has
    # no target); KL from every non-special position, the last included (SAELens's convention).
    targets_BS, ce_scored_BS, kl_scored_BS = ids_BS[:, 1:], ~special_BS[:, :-1], ~special_BS
    if source is None:
        logits_BSV, x_BSD = forward_capturing(model, hookpoint, ids_BS)
        source_BSD = x_BSD
    else:  # a transcoder: reads the clean source (the MLP's input), replaces the hookpoint (its output)
        logits_BSV, source_BSD, x_BSD = _forward_capturing_both(model, source, hookpoint, ids_BS)
    logp_clean_BSV = F.log_softmax(logits_BSV.float(), dim=-1)
    ce_clean_BS = -logp_clean_BSV[:, :-1].gather(-1, targets_BS.unsqueeze(-1)).squeeze(-1)
    sums = {
        "ce_clean": (ce_clean_BS * ce_scored_BS).sum(dim=1).double().cpu(),
        "n_ce": ce_scored_BS.sum(dim=1).double().cpu(),
        "n_kl": kl_scored_BS.sum(dim=1).double().cpu(),
    }
    # The SAE never sees special positions (it was trained without them), so they stay clean.
    x_hat_BSD = splice(source_BSD)
    if x_hat_BSD.shape != x_BSD.shape:
        raise ValueError(f"splice at {hookpoint.name}: reconstruction has shape {tuple(x_hat_BSD.shape)}, "
                         f"the activation {tuple(x_BSD.shape)}; a splice must keep the shape")  # fmt: skip
    x_hat_BSD = torch.where(special_BS1, x_BSD, x_hat_BSD.to(x_BSD.dtype))
    e_ND = (x_hat_BSD - x_BSD).reshape(-1, x_BSD.shape[-1])
    noise_BSD = matched_random_perturbation(x_BSD.reshape(e_ND.shape), e_ND, generator).view(x_BSD.shape)
    replacements = {
        "spliced": x_hat_BSD,
        # SAELens zeroes every position; the special-kept variant is saeflow's earlier baseline.
        "zero_ablation": torch.zeros_like(x_BSD),
        "zero_ablation_special_kept": torch.where(special_BS1, x_BSD, torch.zeros_like(x_BSD)),
        "random_perturbation": x_BSD + noise_BSD.to(x_BSD.dtype),
    }
    if baselines is not None:
        replacements.update(baselines.replacements(x_BSD, special_BS1, baseline_generator))
    for name, x_new_BSD in replacements.items():
        with replacing_activation(model, hookpoint, lambda _x, x_new_BSD=x_new_BSD: x_new_BSD):
            run_logits_BSV = model(input_ids=ids_BS, use_cache=False).logits
        sums[f"ce_{name}"], sums[f"kl_{name}"] = _per_context_terms(logp_clean_BSV, run_logits_BSV, targets_BS, ce_scored_BS, kl_scored_BS)
    return sums


@torch.no_grad()
def splice_metrics(
    model: nn.Module,
    hookpoint: Hookpoint | str,
    sae_or_fn: Any,
    token_ids_NS: np.ndarray | Tensor,
    special_NS: np.ndarray | Tensor | None = None,
    batch_contexts: int = 8,
    seed: int = 0,
    target_ci_width: float | None = None,
    source_hookpoint: Hookpoint | str | None = None,
    baselines: AblationBaselines | None = None,
) -> dict[str, float]:
    """CE / KL of the model with the hookpoint spliced, zero-ablated and randomly perturbed, with bootstrap intervals.

    With source_hookpoint, the splice reads the activations there and replaces the hookpoint's
    (a transcoder at blocks.L.hook_mlp_in -> blocks.L.hook_mlp_out stands in for the MLP).

    With target_ci_width, contexts are scored batch by batch and scoring stops once the 95%
    interval of ce_loss_recovered is at most that wide (or the contexts run out; see
    splice_contexts_used): the evaluation is sized by the precision asked for.

    With baselines (mean and/or resample ablation), ce_loss_recovered_mean_ablation /
    ce_loss_recovered_resample_ablation are reported too; ce_loss_recovered stays SAELens's (zero).
    """
    (hookpoint,) = resolve_hookpoints(model.config, [hookpoint])
    source = None
    if source_hookpoint is not None:
        (source,) = resolve_hookpoints(model.config, [source_hookpoint])
        if (source.layer, _ORDER_IN_BLOCK[source.kind]) >= (hookpoint.layer, _ORDER_IN_BLOCK[hookpoint.kind]):
            raise ValueError(f"splice_metrics: source_hookpoint {source.name} must be upstream of hookpoint {hookpoint.name} "
                             "(the splice reads its clean value)")  # fmt: skip
    ids_NS = torch.as_tensor(token_ids_NS)
    if ids_NS.ndim != 2 or ids_NS.shape[1] < 2 or ids_NS.shape[0] == 0:
        raise ValueError(f"splice_metrics: token_ids_NS has shape {tuple(ids_NS.shape)}; needs [contexts >= 1, length >= 2]")
    if special_NS is None:
        special_NS = torch.zeros(ids_NS.shape, dtype=torch.bool)
    special_NS = torch.as_tensor(special_NS).bool()
    if special_NS.shape != ids_NS.shape:
        raise ValueError(f"splice_metrics: special_NS has shape {tuple(special_NS.shape)}, token_ids_NS {tuple(ids_NS.shape)}")
    if batch_contexts < 1:
        raise ValueError(f"splice_metrics: batch_contexts={batch_contexts} is invalid: an integer >= 1")
    if target_ci_width is not None and not target_ci_width > 0:
        raise ValueError(f"splice_metrics: target_ci_width={target_ci_width} is invalid: a width > 0, or None to score every context")
    splice = _as_splice_fn(sae_or_fn)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    # Its own generator: asking for a resample baseline leaves the random-perturbation draws as they were.
    baseline_generator = torch.Generator().manual_seed(baselines.seed if baselines is not None else 0)
    batches: list[dict[str, Tensor]] = []
    # Dropout (model) or batch-level latent choice (BatchTopK) would make runs differ by more than the splice.
    with _eval_mode(model), _eval_mode(sae_or_fn):
        for start in range(0, ids_NS.shape[0], batch_contexts):
            ids_BS = ids_NS[start : start + batch_contexts].to(device=device, dtype=torch.long)
            special_BS = special_NS[start : start + batch_contexts].to(device)
            batches.append(_score_batch(model, hookpoint, splice, ids_BS, special_BS, generator, source, baselines, baseline_generator))
            if target_ci_width is not None and _width_reached(_concat(batches), target_ci_width):
                break
    return summarize(_concat(batches))


def _concat(batches: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Per-context sums of every batch so far, [N] each."""
    return {name: torch.cat([batch[name] for batch in batches]) for name in batches[0]}


def _width_reached(sums_N: dict[str, Tensor], target: float) -> bool:
    """Whether the interval of CI_METRIC is already at most target wide."""
    if int(sums_N["n_ce"].shape[0]) < 2 or float(sums_N["n_ce"].sum()) == 0:
        return False
    low, high = score_interval(sums_N, CI_METRIC)
    return high - low <= target
