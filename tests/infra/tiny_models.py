"""Tiny random-init GPT-2, GPT-NeoX and Llama causal LMs saved with save_pretrained, for tests.

Each is built from a config (3 layers, d_model 32) with a real byte-level BPE tokenizer trained
offline on a few pages of Austen, and saved to a directory, so tests exercise the same
``from_pretrained`` path a hub or local model takes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

FAMILIES = ("gpt2", "gpt_neox", "llama")
N_LAYERS = 3
D_MODEL = 32
MAX_POSITIONS = 64
EOS = "<|endoftext|>"
# ../shared beside the repository (as in CI); pydoc topics stand in where it is absent.
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "data" / "corpus" / "austen" / "emma.txt"


def _training_text() -> list[str]:
    if CORPUS.is_file():
        return CORPUS.read_text(encoding="utf-8")[:40_000].splitlines()
    from pydoc_data.topics import topics  # every Python install has ~465 KB of English here

    return "\n".join(topics.values())[:40_000].splitlines()


@functools.cache
def _tokenizer_json(vocab_size: int) -> str:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(_training_text(), trainer=trainer)
    return bpe.to_str()


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (any text encodes) with one special token for bos/eos/pad."""
    tokenizer = Tokenizer.from_str(_tokenizer_json(vocab_size))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)


def tiny_config(family: str, vocab_size: int, special_id: int = 0) -> PretrainedConfig:
    """Config of a 3-layer, d_model-32 model of the family."""
    special = dict(bos_token_id=special_id, eos_token_id=special_id, pad_token_id=special_id)
    if family == "gpt2":
        return GPT2Config(
            n_layer=N_LAYERS, n_embd=D_MODEL, n_head=4, n_positions=MAX_POSITIONS, vocab_size=vocab_size, **special
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=N_LAYERS, hidden_size=D_MODEL, num_attention_heads=4, intermediate_size=4 * D_MODEL,
            max_position_embeddings=MAX_POSITIONS, vocab_size=vocab_size, use_parallel_residual=True, **special,
        )  # fmt: skip
    if family == "llama":
        # Two KV heads for four query heads: grouped-query attention, as in SmolLM2.
        return LlamaConfig(
            num_hidden_layers=N_LAYERS, hidden_size=D_MODEL, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=3 * D_MODEL, max_position_embeddings=MAX_POSITIONS, vocab_size=vocab_size, **special,
        )  # fmt: skip
    raise ValueError(f"family {family!r} is not one of {FAMILIES}")


def build_tiny_model(family: str, directory: Path, seed: int = 0) -> Path:
    """Save a random-init tiny causal LM of the family plus its tokenizer into directory."""
    tokenizer = build_tokenizer()
    config = tiny_config(family, vocab_size=len(tokenizer), special_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
