"""Downstream fidelity of an SAE: splice its reconstruction into the model and measure next-token loss.

For each batch of contexts the model runs four times with the hookpoint's activation x_BSD:
clean; replaced by the SAE's reconstruction x_hat = decode(encode(x)); replaced by zeros; and
replaced by x + e', where e' is a random error with the same norm and the same cosine to x as
the SAE's error e = x_hat - x at every token. CE loss recovered (Bricken et al. 2023, "Towards
Monosemanticity") puts the splice on a scale from zero ablation (0) to the clean model (1); the
random baseline says whether the SAE's error hurts the model more than noise of its size and
angle would (Gurnee 2024, "SAE reconstruction errors are (empirically) pathological").

Special positions (BOS/EOS/padding, the harvest's ``special`` mask) are left clean in every
intervention and predictions made FROM them are not scored: SAEs are trained without them (their
activations are outliers, e.g. the BOS attention sink), and the token after an EOS starts an
unrelated document, so including them would measure the packing, not the SAE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infra.lm.hookpoints import Hookpoint, hooked_module, resolve_hookpoints
from sae_core.metrics import ce_loss_recovered

SpliceFn = Callable[[Tensor], Tensor]
"""Anything mapping activations x_BSD to replacements x_hat_BSD (an SAE's round trip, identity, ...)."""
INTERVENTIONS = ("spliced", "zero_ablation", "random_perturbation")


def matched_random_perturbation(x_ND: Tensor, e_ND: Tensor, generator: torch.Generator) -> Tensor:
    """Random e' with ||e'|| = ||e|| and cos(e', x) = cos(e, x) per row, random otherwise."""
    x_ND, e_ND = x_ND.float(), e_ND.float()
    # u = 0 where x = 0: cos(e, x) is undefined there and e' is then any direction of norm ||e||.
    u_ND = x_ND / x_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    along_N1 = (e_ND * u_ND).sum(dim=-1, keepdim=True)
    ortho_norm_N1 = (e_ND.pow(2).sum(dim=-1, keepdim=True) - along_N1.pow(2)).clamp_min(0).sqrt()
    # Noise drawn on the CPU generator, so a seed gives the same baseline on CPU and CUDA.
    r_ND = torch.randn(x_ND.shape, generator=generator, dtype=torch.float32).to(x_ND.device)
    r_ND = r_ND - (r_ND * u_ND).sum(dim=-1, keepdim=True) * u_ND
    r_ND = r_ND / r_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return along_N1 * u_ND + ortho_norm_N1 * r_ND


@contextmanager
def replacing_activation(model: nn.Module, hookpoint: Hookpoint, edit: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, the hookpoint's activation x_BSD is replaced by edit(x_BSD)."""
    module = hooked_module(model, hookpoint)

    def new_value(x_BSD: Tensor) -> Tensor:
        x_new_BSD = edit(x_BSD)
        if x_new_BSD.shape != x_BSD.shape:
            raise ValueError(f"splice at {hookpoint.name}: replacement has shape {tuple(x_new_BSD.shape)}, "
                             f"the activation {tuple(x_BSD.shape)}; a splice must keep the shape")  # fmt: skip
        return x_new_BSD.to(device=x_BSD.device, dtype=x_BSD.dtype)

    if hookpoint.kind == "resid_pre":
        # The block's input: GPT-2 / NeoX pass hidden_states positionally, Llama may pass it by keyword.
        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (new_value(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new_value(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        # Attention returns (output, weights); blocks and MLPs return a bare tensor in transformers 5.
        def hook(_m: nn.Module, _args: tuple, output: Any) -> Any:
            if isinstance(output, (tuple, list)):
                return type(output)((new_value(output[0]), *output[1:]))
            return new_value(output)

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


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
    """A SparseCoder-like object (encode/decode in model units) or a plain callable, as x_BSD -> x_hat_BSD."""
    if not (hasattr(sae_or_fn, "encode") and hasattr(sae_or_fn, "decode")):
        return sae_or_fn
    sae = sae_or_fn
    param = next(iter(sae.parameters()), None) if isinstance(sae, nn.Module) else None

    def round_trip(x_BSD: Tensor) -> Tensor:
        # SAEs speak in tokens x d_in; run them wherever their weights live.
        x_ND = x_BSD.reshape(-1, x_BSD.shape[-1])
        if param is not None:
            x_ND = x_ND.to(param.device)
        return sae.decode(sae.encode(x_ND)).reshape(x_BSD.shape).to(x_BSD.device)

    return round_trip


def _loss_terms(logp_clean_BSV: Tensor, logits_BSV: Tensor, targets_BS: Tensor, scored_BS: Tensor) -> tuple[float, float]:
    """(summed CE, summed KL(clean || run)) over scored predictions."""
    logp_BSV = F.log_softmax(logits_BSV.float(), dim=-1)
    ce_BS = -logp_BSV.gather(-1, targets_BS.unsqueeze(-1)).squeeze(-1)
    kl_BS = (logp_clean_BSV.exp() * (logp_clean_BSV - logp_BSV)).sum(dim=-1)
    return float(ce_BS[scored_BS].sum()), float(kl_BS[scored_BS].sum())


def _score_batch(
    model: nn.Module,
    hookpoint: Hookpoint,
    splice: SpliceFn,
    ids_BS: Tensor,
    special_BS: Tensor,
    generator: torch.Generator,
    ce_sums: dict[str, float],
    kl_sums: dict[str, float],
) -> int:
    """Run clean and every intervention on one batch, add summed CE / KL in place; the number scored."""
    special_BS1 = special_BS.unsqueeze(-1)
    # Logits at position t predict token t+1; a prediction made from a special position is not scored.
    targets_BS, scored_BS = ids_BS[:, 1:], ~special_BS[:, :-1]
    captured: list[Tensor] = []

    def record(x_BSD: Tensor) -> Tensor:
        captured.append(x_BSD)
        return x_BSD

    with replacing_activation(model, hookpoint, record):
        logits_BSV = model(input_ids=ids_BS, use_cache=False).logits[:, :-1]
    logp_clean_BSV = F.log_softmax(logits_BSV.float(), dim=-1)
    ce_sums["clean"] += float(-logp_clean_BSV.gather(-1, targets_BS.unsqueeze(-1)).squeeze(-1)[scored_BS].sum())
    x_BSD = captured[0]
    # Special positions stay clean in every run, so each run differs from clean only where scored.
    x_hat_BSD = splice(x_BSD)
    if x_hat_BSD.shape != x_BSD.shape:
        raise ValueError(f"splice at {hookpoint.name}: reconstruction has shape {tuple(x_hat_BSD.shape)}, "
                         f"the activation {tuple(x_BSD.shape)}; a splice must keep the shape")  # fmt: skip
    x_hat_BSD = torch.where(special_BS1, x_BSD, x_hat_BSD.to(x_BSD.dtype))
    e_ND = (x_hat_BSD - x_BSD).reshape(-1, x_BSD.shape[-1])
    noise_BSD = matched_random_perturbation(x_BSD.reshape(e_ND.shape), e_ND, generator).view(x_BSD.shape)
    replacements = {
        "spliced": x_hat_BSD,
        "zero_ablation": torch.where(special_BS1, x_BSD, torch.zeros_like(x_BSD)),
        "random_perturbation": x_BSD + noise_BSD.to(x_BSD.dtype),
    }
    for name, x_new_BSD in replacements.items():
        with replacing_activation(model, hookpoint, lambda _x, x_new_BSD=x_new_BSD: x_new_BSD):
            run_logits_BSV = model(input_ids=ids_BS, use_cache=False).logits[:, :-1]
        ce, kl = _loss_terms(logp_clean_BSV, run_logits_BSV, targets_BS, scored_BS)
        ce_sums[name] += ce
        kl_sums[name] += kl
    return int(scored_BS.sum())


@torch.no_grad()
def splice_metrics(
    model: nn.Module,
    hookpoint: Hookpoint | str,
    sae_or_fn: Any,
    token_ids_NS: np.ndarray | Tensor,
    special_NS: np.ndarray | Tensor | None = None,
    batch_contexts: int = 8,
    seed: int = 0,
) -> dict[str, float]:
    """CE / KL of the model with the hookpoint spliced, zero-ablated and randomly perturbed, over the contexts."""
    (hookpoint,) = resolve_hookpoints(model.config, [hookpoint])
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
    splice = _as_splice_fn(sae_or_fn)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ce_sums = dict.fromkeys(("clean", *INTERVENTIONS), 0.0)
    kl_sums = dict.fromkeys(INTERVENTIONS, 0.0)
    n_scored = 0
    # Dropout (model) or batch-level latent choice (BatchTopK) would make runs differ by more than the splice.
    with _eval_mode(model), _eval_mode(sae_or_fn):
        for start in range(0, ids_NS.shape[0], batch_contexts):
            ids_BS = ids_NS[start : start + batch_contexts].to(device=device, dtype=torch.long)
            special_BS = special_NS[start : start + batch_contexts].to(device)
            n_scored += _score_batch(model, hookpoint, splice, ids_BS, special_BS, generator, ce_sums, kl_sums)
    if n_scored == 0:
        raise ValueError("splice_metrics: every prediction comes from a special position; nothing to score")
    ce = {name: total / n_scored for name, total in ce_sums.items()}
    return {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablation": ce["zero_ablation"],
        "ce_random_perturbation": ce["random_perturbation"],
        "ce_loss_recovered": ce_loss_recovered(ce["clean"], ce["spliced"], ce["zero_ablation"]),
        "ce_loss_recovered_random": ce_loss_recovered(ce["clean"], ce["random_perturbation"], ce["zero_ablation"]),
        "kl_spliced": kl_sums["spliced"] / n_scored,
        "kl_zero_ablation": kl_sums["zero_ablation"] / n_scored,
        "kl_random_perturbation": kl_sums["random_perturbation"] / n_scored,
        "n_predictions": float(n_scored),
    }
