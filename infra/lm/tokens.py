"""Text to tokens: read a corpus, tokenize, pack into fixed-length contexts, deterministically.

A TokenSpec (source, tokenizer, context length, number of tokens, seed) always yields the same
token matrix, so every hookpoint and every model harvested from it sees identical rows: shard i
of two checkpoints is row-aligned. Every token also carries the index of the document it came
from (the corpus's fixed order), so a held-out split can keep whole documents on one side
(infra.activations.split).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BUILTIN_PYDOC = "builtin:pydoc"
"""Python's own pydoc topics (~465 KB of English): a corpus every install has (the offline default)."""


class TokenSpecError(ValueError):
    """A token spec names a source that cannot be read or values that cannot be packed."""


@dataclass(frozen=True)
class TokenSpec:
    """Which tokens to harvest on."""

    source: str
    """Local file, directory or glob (.txt / .jsonl / .parquet), 'hf:NAME[:SPLIT]' for a Hugging Face dataset, or 'builtin:pydoc'."""
    tokenizer: str
    """Model reference whose tokenizer is used (models compared by a crosscoder must share it)."""
    context_length: int = 128
    """Tokens per context, BOS included."""
    num_tokens: int = 65_536
    """Total tokens; rounded down to whole contexts."""
    seed: int = 0
    """Seed of the context shuffle."""
    text_column: str = "text"
    """Column / JSON key holding the text in .jsonl, .parquet and HF sources."""
    prepend_bos: bool = True
    """Start every context with the BOS token (marked special so training can skip it)."""

    def __post_init__(self) -> None:
        if self.context_length < 2:
            raise TokenSpecError(f"TokenSpec.context_length={self.context_length} must be >= 2")
        if self.num_tokens < self.context_length:
            raise TokenSpecError(f"TokenSpec.num_tokens={self.num_tokens} must be >= context_length={self.context_length}")

    @property
    def num_contexts(self) -> int:
        """Whole contexts in the spec."""
        return self.num_tokens // self.context_length

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


def _text_files(source: str) -> list[str]:
    if os.path.isdir(source):
        paths = [os.path.join(d, f) for d, _, files in os.walk(source) for f in files]
    else:
        paths = glob.glob(source)
    paths = sorted(p for p in paths if p.endswith((".txt", ".jsonl", ".parquet")))
    if not paths:
        raise TokenSpecError(f"token source {source!r}: no .txt, .jsonl or .parquet files found")
    return paths


def iter_documents(source: str, text_column: str = "text") -> Iterator[str]:
    """Documents of a source in a fixed order."""
    if source == BUILTIN_PYDOC:
        import pydoc_data.topics

        topics = pydoc_data.topics.topics
        yield from (topics[key] for key in sorted(topics))
        return
    if source.startswith("hf:"):
        yield from _hf_documents(source, text_column)
        return
    for path in _text_files(source):
        if path.endswith(".txt"):
            with open(path, encoding="utf-8") as handle:
                yield handle.read()
        elif path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as handle:
                for line_no, line in enumerate(handle, 1):
                    if line.strip():
                        record = json.loads(line)
                        if text_column not in record:
                            raise TokenSpecError(f"{path}:{line_no}: no key {text_column!r}")
                        yield record[text_column]
        else:
            table = pq.read_table(path)
            if text_column not in table.column_names:
                raise TokenSpecError(f"{path}: no column {text_column!r} (has {table.column_names})")
            yield from table.column(text_column).to_pylist()


def _hf_documents(source: str, text_column: str) -> Iterator[str]:
    name, _, split = source[3:].partition(":")
    import datasets  # heavy; only needed for hub sources

    try:
        stream = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as error:  # noqa: BLE001 - the hub raises many types; all mean "cannot read"
        raise TokenSpecError(f"token source {source!r}: cannot load dataset ({error})") from error
    for record in stream:
        yield record[text_column]


@dataclass
class TokenSet:
    """The packed contexts of a spec."""

    token_ids_NS: np.ndarray
    """[contexts, context_length] int32."""
    special_NS: np.ndarray
    """[contexts, context_length] bool: BOS/EOS/padding positions to exclude from training."""
    doc_id_NS: np.ndarray
    """[contexts, context_length] int64: the document each token came from (index in iter_documents order);
    an EOS belongs to the document it ends, a BOS to the context's first body token. Non-decreasing along
    a context, and across contexts in seq_id order (contexts keep corpus order)."""
    chunk_id_N: np.ndarray
    """[contexts] int64: each context's chunk of the corpus's token stream (contexts are a seeded sample of the
    chunks, kept in stream order); consecutive chunk ids are contiguous text."""


def pack_tokens(spec: TokenSpec, tokenizer: Any) -> TokenSet:
    """Tokenize documents in order, join them with EOS, cut into contexts, shuffle with the seed."""
    bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos_id = tokenizer.eos_token_id
    body = spec.context_length - (1 if spec.prepend_bos else 0)
    # Read 2x what is needed (when the corpus has it) so the shuffle mixes more than one prefix.
    wanted = 2 * spec.num_contexts * body
    stream: list[int] = []
    doc_lengths: list[int] = []  # tokens each document added to the stream (its EOS included)
    for document in iter_documents(spec.source, spec.text_column):
        before = len(stream)
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
        if eos_id is not None:
            stream.append(eos_id)
        doc_lengths.append(len(stream) - before)
        if len(stream) >= wanted:
            break
    available = len(stream) // body
    if available < spec.num_contexts:
        raise TokenSpecError(
            f"token source {spec.source!r} yields {len(stream)} tokens = {available} contexts of {body}; "
            f"the spec needs {spec.num_contexts} (num_tokens={spec.num_tokens})"
        )
    bodies_NS = np.asarray(stream[: available * body], dtype=np.int32).reshape(available, body)
    docs_NS = np.repeat(np.arange(len(doc_lengths), dtype=np.int64), doc_lengths)[: available * body].reshape(available, body)
    order = np.sort(np.random.default_rng(spec.seed).permutation(available)[: spec.num_contexts])
    bodies_NS, docs_NS = bodies_NS[order], docs_NS[order]
    if spec.prepend_bos:
        bos_N1 = np.full((spec.num_contexts, 1), bos_id, dtype=np.int32)
        bodies_NS = np.concatenate([bos_N1, bodies_NS], axis=1)
        docs_NS = np.concatenate([docs_NS[:, :1], docs_NS], axis=1)  # the BOS opens the context's first document
    special_ids = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int32)
    special_NS = np.isin(bodies_NS, special_ids)
    if spec.prepend_bos:
        special_NS[:, 0] = True
    return TokenSet(bodies_NS, special_NS, docs_NS, order.astype(np.int64))


def token_table(tokens: TokenSet) -> pa.Table:
    """Arrow table of a token set: one row per token (seq_id, pos, token_id, special, doc_id, chunk_id), in order.

    The same keys and id columns as an activation shard, so any engine joins the two on (seq_id, pos).
    """
    num, length = tokens.token_ids_NS.shape
    return pa.table(
        {
            "seq_id": pa.array(np.repeat(np.arange(num, dtype=np.int64), length)),
            "pos": pa.array(np.tile(np.arange(length, dtype=np.int32), num)),
            "token_id": pa.array(tokens.token_ids_NS.reshape(-1).astype(np.int32)),
            "special": pa.array(tokens.special_NS.reshape(-1).astype(bool)),
            "doc_id": pa.array(tokens.doc_id_NS.reshape(-1).astype(np.int64)),
            "chunk_id": pa.array(np.repeat(tokens.chunk_id_N.astype(np.int64), length)),
        }
    )


def tokens_from_table(table: pa.Table) -> TokenSet:
    """Inverse of token_table (rows in (seq_id, pos) order, every context the same length)."""
    length = int(table.column("pos").to_numpy().max()) + 1
    ids = table.column("token_id").to_numpy().astype(np.int32)
    special = table.column("special").to_numpy(zero_copy_only=False).astype(bool)
    docs = table.column("doc_id").to_numpy().astype(np.int64)
    chunks = table.column("chunk_id").to_numpy().astype(np.int64)
    if ids.size % length:
        raise ValueError(f"token table of {ids.size} rows is not whole contexts of {length} tokens")
    return TokenSet(ids.reshape(-1, length), special.reshape(-1, length), docs.reshape(-1, length), chunks[::length])
