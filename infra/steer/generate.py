"""Deterministic generation with an edit at a hookpoint: the same loop for the baseline and every condition.

With a KV cache: the prompt runs once, then each step feeds only the new token with the cached
keys and values. Every edit is position-wise (a direction added, a latent clamped through the SAE,
per token), so the cache holds exactly what an edited full re-run would compute for the earlier
positions; tests check cached and uncached runs agree. Greedy at temperature 0; above it, tokens are drawn
with a CPU generator seeded per prompt, so baseline and steered runs consume the same random draws
and a seed reproduces both on CPU and CUDA.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from infra.lm.hookpoints import Hookpoint
from infra.lm.splice_eval import replacing_activation

Edit = Callable[[Tensor, Tensor], Tensor]
"""(x_BSD, keep_BS) -> edited x_BSD; keep_BS marks special positions the edit must leave alone."""


@dataclass
class Generation:
    """One run from one prompt: the generated ids and the next-token logits right after the prompt."""

    new_ids: list[int]
    first_logits_V: Tensor


def prompt_ids(tokenizer: Any, text: str) -> list[int]:
    """The prompt's token ids with BOS first, as the harvest packs contexts (SAEs saw that layout)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([bos] if bos is not None else []) + list(body)


def special_ids(tokenizer: Any) -> Tensor:
    """The tokenizer's special token ids (left unedited wherever they occur)."""
    return torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)


@torch.no_grad()
def edited_logits(model: nn.Module, hookpoint: Hookpoint, ids_BS: Tensor, specials: Tensor, edit: Edit | None) -> Tensor:
    """[B, S, V] logits with the edit applied at the hookpoint (plain logits without one)."""
    return _edited_forward(model, hookpoint, ids_BS, specials, edit, past=None, use_cache=False).logits


def _edited_forward(model: nn.Module, hookpoint: Hookpoint, ids_BS: Tensor, specials: Tensor, edit: Edit | None, past: Any,
                    use_cache: bool) -> Any:
    """The model's output for ids_BS (the new positions, after `past`), edited at the hookpoint."""
    # transformers 5 renamed past_key_values to cache (5.2x warns on the old name); pass whichever forward takes.
    cached = {_cache_argument(model): past} if past is not None else {}
    if edit is None:
        return model(input_ids=ids_BS, use_cache=use_cache, **cached)
    keep_BS = torch.isin(ids_BS, specials.to(ids_BS.device))
    with replacing_activation(model, hookpoint, lambda x_BSD: edit(x_BSD, keep_BS)):
        return model(input_ids=ids_BS, use_cache=use_cache, **cached)


def _cache_argument(model: nn.Module) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def generate(model: nn.Module, hookpoint: Hookpoint, ids: list[int], specials: Tensor, edit: Edit | None, max_new_tokens: int,
             temperature: float, seed: int, eos_id: int | None, use_cache: bool = True) -> Generation:
    """Generate up to max_new_tokens (stopping at EOS) with the edit applied at every step.

    use_cache=False re-runs the whole sequence each step (the reference the cached loop is tested against).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sequence, new_ids, past = list(ids), [], None
    step_ids = sequence  # the prompt first, then one new token per step when cached
    output = _edited_forward(model, hookpoint, torch.tensor([step_ids], device=device), specials, edit, past, use_cache)
    first = output.logits[0, -1].float().cpu()  # reported even for max_new_tokens == 0
    logits_V = first
    for step in range(max_new_tokens):
        if step:
            step_ids = [sequence[-1]] if use_cache else sequence
            output = _edited_forward(model, hookpoint, torch.tensor([step_ids], device=device), specials, edit, past, use_cache)
            logits_V = output.logits[0, -1].float().cpu()
        past = _cache_of(output) if use_cache else None
        if temperature > 0:
            token = int(torch.multinomial(torch.softmax(logits_V / temperature, dim=-1), 1, generator=generator))
        else:
            token = int(logits_V.argmax())
        new_ids.append(token)
        sequence.append(token)
        if token == eos_id:
            break
    return Generation(new_ids, first)
