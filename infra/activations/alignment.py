"""Row alignment of harvests: a crosscoder reads row i of every source as the SAME token.

Harvests of different models on one token spec are aligned by construction; this module checks
it before training (nothing expensive runs on misaligned data) and names the first difference.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from infra.activations.store import read_manifest
from infra.lm.models import load_tokenizer
from infra.storage import filesystem, join


class AlignmentError(ValueError):
    """Two harvests (or models) cannot be compared row by row; the message names where they differ."""


def check_same_tokenizer(model_refs: list[str]) -> None:
    """All models must tokenize identically (same vocabulary), or the same rows mean different text."""
    reference = load_tokenizer(model_refs[0]).get_vocab()
    for ref in model_refs[1:]:
        vocab = load_tokenizer(ref).get_vocab()
        if vocab != reference:
            extra = len(set(vocab.items()) ^ set(reference.items()))
            raise AlignmentError(f"tokenizer of {ref} differs from {model_refs[0]}'s ({extra} vocabulary entries differ)")


def _id_columns(uri: str) -> dict[str, np.ndarray]:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=["seq_id", "pos", "token_id"])
    return {name: table.column(name).to_numpy() for name in ("seq_id", "pos", "token_id")}


def check_aligned(harvests: list[str], hookpoint: str) -> dict[str, int]:
    """Raise AlignmentError unless every harvest has the same rows (seq_id, pos, token_id) in every shard."""
    if len(harvests) < 2:
        raise AlignmentError(f"row alignment needs at least two harvests, got {harvests}")
    manifests = [read_manifest(h) for h in harvests]
    reference, ref_uri = manifests[0], harvests[0]
    for uri, manifest in zip(harvests, manifests):
        if hookpoint not in manifest["hookpoints"]:
            raise AlignmentError(f"{uri}: hookpoint {hookpoint!r} not harvested (has {manifest['hookpoints']})")
    for uri, manifest in zip(harvests[1:], manifests[1:]):
        for key in ("d_model", "context_length", "num_contexts", "num_rows"):
            if manifest[key] != reference[key]:
                raise AlignmentError(f"{uri}: {key}={manifest[key]} but {ref_uri} has {key}={reference[key]}")
        if len(manifest["shards"]) != len(reference["shards"]):
            raise AlignmentError(f"{uri}: {len(manifest['shards'])} shards but {ref_uri} has {len(reference['shards'])}")
    for index, ref_shard in enumerate(reference["shards"]):
        ref_rows = _id_columns(join(ref_uri, ref_shard["files"][hookpoint]["path"]))
        for uri, manifest in zip(harvests[1:], manifests[1:]):
            shard_uri = join(uri, manifest["shards"][index]["files"][hookpoint]["path"])
            rows = _id_columns(shard_uri)
            for column, values in rows.items():
                if len(values) != len(ref_rows[column]) or not np.array_equal(values, ref_rows[column]):
                    differ = np.flatnonzero(values[: len(ref_rows[column])] != ref_rows[column][: len(values)])
                    first = int(differ[0]) if len(differ) else min(len(values), len(ref_rows[column]))
                    raise AlignmentError(
                        f"{shard_uri}: column {column} differs from {ref_uri}'s shard {index} at row {first}; "
                        "harvests must use one token spec"
                    )
    return {"sources": len(harvests), "shards": len(reference["shards"]), "rows": int(reference["num_rows"])}
