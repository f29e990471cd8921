"""Deterministic generation with an edit at a hookpoint: the same loop for the baseline and every condition.

No KV cache: every step re-runs the whole sequence, so the edit sees (and changes) every position,
generated ones included, exactly as in the step that produced them; prompts are short, so this
costs little and needs no cache-aware hook. Greedy at temperature 0; above it, tokens are drawn
with a CPU generator seeded per prompt, so baseline and steered runs consume the same random draws
and a seed reproduces both on CPU and CUDA.
"""

from __future__ import annotations

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
    if edit is None:
        return model(input_ids=ids_BS, use_cache=False).logits
    keep_BS = torch.isin(ids_BS, specials.to(ids_BS.device))
    with replacing_activation(model, hookpoint, lambda x_BSD: edit(x_BSD, keep_BS)):
        return model(input_ids=ids_BS, use_cache=False).logits


@torch.no_grad()
def generate(model: nn.Module, hookpoint: Hookpoint, ids: list[int], specials: Tensor, edit: Edit | None, max_new_tokens: int,
             temperature: float, seed: int, eos_id: int | None) -> Generation:
    """Generate up to max_new_tokens (stopping at EOS) with the edit applied at every step."""
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sequence, new_ids, first = list(ids), [], None
    for _ in range(max_new_tokens):
        ids_1S = torch.tensor([sequence], dtype=torch.long, device=device)
        logits_V = edited_logits(model, hookpoint, ids_1S, specials, edit)[0, -1].float().cpu()
        if first is None:
            first = logits_V
        if temperature > 0:
            token = int(torch.multinomial(torch.softmax(logits_V / temperature, dim=-1), 1, generator=generator))
        else:
            token = int(logits_V.argmax())
        new_ids.append(token)
        sequence.append(token)
        if token == eos_id:
            break
    if first is None:  # max_new_tokens == 0: still report the next-token distribution
        first = edited_logits(model, hookpoint, torch.tensor([sequence], device=device), specials, edit)[0, -1].float().cpu()
    return Generation(new_ids, first)
