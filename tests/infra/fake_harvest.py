"""A committed harvest written straight through the store (no model), for store and schema tests."""

from __future__ import annotations

import numpy as np

from infra.activations.store import TOKENS_FILE, harvest_uri, shard_schema, shard_table, write_manifest, write_shard_file
from infra.lm.tokens import TokenSet, token_table
from infra.parquet_io import write_parquet_atomic
from infra.storage import join

HOOKPOINTS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
D_MODEL, CONTEXT, CONTEXTS, PER_SHARD, VOCAB = 8, 4, 6, 4, 50
DOCS_NS = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [3, 4, 4, 4], [5, 5, 5, 5]], dtype=np.int64)
"""Documents of the fake contexts: 0-1 share document 0, 3-4 document 3; document groups {0, 1}, {2}, {3, 4}, {5}."""
CHUNKS_N = np.array([0, 1, 3, 5, 6, 8], dtype=np.int64)
"""Their chunks of the token stream: the contexts sharing a document are contiguous text."""


def write_fake_harvest(root: str, dtype: str = "float16") -> tuple[str, dict]:
    """Two hookpoints x two shards (4 + 2 contexts); returns (harvest uri, manifest)."""
    harvest = harvest_uri(root, "fake-0123456789")
    rng = np.random.default_rng(0)
    shards, tokens_N = [], []
    for index, (start, stop) in enumerate([(0, PER_SHARD), (PER_SHARD, CONTEXTS)]):
        rows = (stop - start) * CONTEXT
        seq_N = np.repeat(np.arange(start, stop, dtype=np.int64), CONTEXT)
        pos_N = np.tile(np.arange(CONTEXT, dtype=np.int32), stop - start)
        token_N = rng.integers(0, VOCAB, rows).astype(np.int32)
        special_N = pos_N == 0
        tokens_N.append(token_N)
        files = {}
        for hp_index, hp in enumerate(HOOKPOINTS):
            acts_ND = (seq_N[:, None] * 100 + pos_N[:, None] + hp_index * 0.5 + np.zeros((rows, D_MODEL))).astype(dtype)
            schema = shard_schema(D_MODEL, dtype, {"hookpoint": hp, "model": "fake"})
            files[hp] = write_shard_file(harvest, hp, index, shard_table(seq_N, pos_N, token_N, special_N, acts_ND, schema))
        shards.append({"index": index, "rows": rows, "seq_start": start, "seq_stop": stop, "files": files})
    manifest = {
        "harvest_id": "fake-0123456789",
        "model": "fake",
        "hookpoints": HOOKPOINTS,
        "d_model": D_MODEL,
        "vocab_size": VOCAB,
        "dtype": dtype,
        "context_length": CONTEXT,
        "num_contexts": CONTEXTS,
        "num_rows": CONTEXTS * CONTEXT,
        "shards": shards,
    }
    bos_NS = (np.arange(CONTEXTS * CONTEXT) % CONTEXT == 0).reshape(CONTEXTS, CONTEXT)
    tokens = TokenSet(np.concatenate(tokens_N).reshape(CONTEXTS, CONTEXT), bos_NS, DOCS_NS, CHUNKS_N)
    write_parquet_atomic(join(harvest, TOKENS_FILE), token_table(tokens))
    write_manifest(harvest, manifest)
    return harvest, manifest
