"""Make two checkpoints of one small GPT-NeoX to diff offline (no hub checkpoints here).

A fresh GPT-NeoX is trained briefly on real text, and saved with `save_pretrained` (plus the
tokenizer) after `early_step` and after `late_step` optimiser steps: the same model early and
late in training, like Pythia's step checkpoints. From a shell:
`python -m examples.checkpoint_pair OUT_DIR [--tokenizer smollm2-135m] [--text builtin:pydoc]`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from infra.lm.models import load_tokenizer
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec, pack_tokens


def make_checkpoint_pair(
    out_dir: str | Path,
    tokenizer_ref: str,
    text_source: str = BUILTIN_PYDOC,
    early_step: int = 20,
    late_step: int = 120,
    d_model: int = 64,
    n_layers: int = 2,
    context_length: int = 64,
    batch_contexts: int = 8,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Train and save (early, late) checkpoint directories; returns their paths."""
    out = Path(out_dir)
    early, late = out / f"step{early_step}", out / f"step{late_step}"
    if (late / "config.json").is_file() and (early / "config.json").is_file():
        return early, late
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(tokenizer_ref)
    vocab = len(tokenizer)
    config = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=4,
        intermediate_size=4 * d_model, max_position_embeddings=max(128, context_length), rotary_pct=0.25,
        bos_token_id=tokenizer.bos_token_id or 0, eos_token_id=tokenizer.eos_token_id or 0,
    )
    model = GPTNeoXForCausalLM(config)
    spec = TokenSpec(source=text_source, tokenizer=tokenizer_ref, context_length=context_length,
                     num_tokens=context_length * batch_contexts * late_step, seed=seed, prepend_bos=False)
    ids_NS = torch.from_numpy(pack_tokens(spec, tokenizer).token_ids_NS.astype(np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(1, late_step + 1):
        batch_BS = ids_NS[(step - 1) * batch_contexts : step * batch_contexts]
        loss = model(input_ids=batch_BS, labels=batch_BS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in (early_step, late_step):
            target = early if step == early_step else late
            model.save_pretrained(target)
            tokenizer.save_pretrained(target)
    return early, late
