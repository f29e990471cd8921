"""The held-out split: a seeded random set of whole documents, the same for every harvest of one token spec.

pack_tokens joins documents into one token stream and cuts it into contexts, so a long document
spans several contexts and one context can end one document and start the next. Holding out
single contexts (or, as before, the last ones of a corpus kept in order) would put the rest of a
held-out document into training. So contexts are grouped into "document groups": the runs of
contexts (consecutive in seq_id, which follows corpus order) linked by a document that both touch.
Whole groups are held out, drawn in a seeded random order, until eval_contexts contexts are held
out; no document is on both sides.

Some corpora cannot be split that way: a harvest of a few long documents (a novel per file, the
first pydoc topics a small harvest reads) has so few groups that holding out whole ones would take
most of the harvest. The split then falls back to runs of contiguous text: contexts are linked
only when they are consecutive chunks of the token stream (chunk_id) sharing a document, so no
held-out context continues or is continued by a training one, though a long document can have
chunks on both sides. The rule used is part of the selection's description ("documents" or
"text runs"); it is a pure function of the tokens, so the same for every harvest of the spec.

The draw depends only on the harvest's tokens.parquet (a pure function of the token spec) and on
the token spec's seed, never on the model or hookpoint: every hookpoint, and every model harvested
with one token spec (a diff's sources, a sweep's splice evaluation), holds out identical seq_ids.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from infra.activations.store import TOKENS_FILE, read_manifest
from infra.storage import filesystem, join

SPLIT_SALT = 0x5E9_D0C5
"""Mixed into the token spec's seed, so the held-out draw is not the context draw of pack_tokens."""
MAX_OVERSHOOT = 2.0
"""Whole documents are held out when that holds out at most this many times eval_contexts and leaves at least
as many contexts to train on; else text runs. Beyond it whole documents would cost more training data than
the evaluation asked for (and, at the limit, all of it)."""


class SplitError(ValueError):
    """A split that cannot be made: too many or too few held-out contexts, or tokens without doc_id."""


@dataclass(frozen=True)
class SeqSelection:
    """A set of contexts by seq_id: `ids`, or every context except `ids` when `complement` is set.

    Held-out ids are few and travel in plans and specs; the training side is their complement, so
    it is never spelt out. `ids` keeps the draw order (a seeded random order of the held-out
    contexts), so `ids[:n]` is a random sample of them (splice evaluation scores that many).
    """

    ids: tuple[int, ...]
    complement: bool = False
    rule: str = "given"
    """How the ids were drawn: 'documents' (whole documents), 'text runs' (contiguous text), or 'given'."""

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.ids)
        if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise SplitError(f"SeqSelection ids {self.ids[:8]!r}...: seq_ids must be distinct integers >= 0")
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "_sorted", np.sort(np.asarray(ids, dtype=np.int64)))

    def mask(self, seq_N: np.ndarray) -> np.ndarray:
        """Which rows (by their seq_id) the selection keeps."""
        return np.isin(seq_N, self._sorted, invert=self.complement)

    def count_in(self, start: int, stop: int) -> int:
        """Selected contexts among seq_ids [start, stop)."""
        inside = int(np.searchsorted(self._sorted, stop) - np.searchsorted(self._sorted, start))
        return (stop - start - inside) if self.complement else inside

    def count(self, num_contexts: int) -> int:
        """Selected contexts of a harvest with num_contexts contexts."""
        return self.count_in(0, num_contexts)

    def describe(self) -> str:
        """Short text for messages: 'the 6 held-out contexts' / 'all but 6 held-out contexts'."""
        rule = "" if self.rule == "given" else f", whole {self.rule}"
        return f"{'all but ' if self.complement else ''}{len(self.ids)} held-out contexts (seq_ids {self._sorted[:4].tolist()}...{rule})"


def context_documents(harvest: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first_doc_N, last_doc_N, chunk_N): the first and last document each context touches and its chunk, from tokens.parquet."""
    return _context_documents(harvest)


@functools.lru_cache(maxsize=8)
def _context_documents(harvest: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # A harvest's tokens never change once written (the id fixes them), so one read per process is enough.
    manifest = read_manifest(harvest)
    length, total = int(manifest["context_length"]), int(manifest["num_contexts"])
    uri = join(harvest, manifest.get("tokens_file", TOKENS_FILE))
    fs, path = filesystem(uri)
    first_N, last_N, chunk_N = np.empty(total, np.int64), np.empty(total, np.int64), np.empty(total, np.int64)
    row = 0
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        missing = sorted({"doc_id", "chunk_id"} - set(parquet.schema_arrow.names))
        if missing:
            raise SplitError(f"{uri}: no {' or '.join(missing)} column, so the held-out split cannot keep documents whole; re-harvest with this saeflow")
        # Rows are (seq_id, pos) in order and doc_id never decreases along a context: its first and
        # last rows carry the context's first and last document. Batches bound the memory.
        for batch in parquet.iter_batches(columns=["doc_id", "chunk_id"], batch_size=1 << 20):
            doc_R, chunk_R = batch.column(0).to_numpy(), batch.column(1).to_numpy()
            pos_R = (row + np.arange(len(doc_R))) % length
            seq_R = (row + np.arange(len(doc_R))) // length
            first_N[seq_R[pos_R == 0]], chunk_N[seq_R[pos_R == 0]] = doc_R[pos_R == 0], chunk_R[pos_R == 0]
            last_N[seq_R[pos_R == length - 1]] = doc_R[pos_R == length - 1]
            row += len(doc_R)
    if row != total * length:
        raise SplitError(f"{uri}: {row} rows, the manifest says {total} contexts x {length}")
    return first_N, last_N, chunk_N


def document_groups(first_doc_N: np.ndarray, last_doc_N: np.ndarray, chunk_N: np.ndarray | None = None) -> np.ndarray:
    """Group index of each context: consecutive contexts share a group when they share a document
    (and, given chunk_N, only when they are also consecutive chunks: contiguous text)."""
    if np.any(first_doc_N[1:] < last_doc_N[:-1]) or np.any(last_doc_N < first_doc_N):
        raise SplitError("contexts' documents are not in corpus order (doc_id must not decrease along seq_id)")
    # Documents only grow along seq_id, so context i shares one with an earlier context iff it shares
    # one with context i-1: its first document is context i-1's last.
    linked_N = first_doc_N[1:] == last_doc_N[:-1]
    if chunk_N is not None:
        linked_N &= chunk_N[1:] == chunk_N[:-1] + 1
    return np.cumsum(np.concatenate([[True], ~linked_N])) - 1


def held_out_ids(groups_N: np.ndarray, eval_contexts: int, seed: int) -> np.ndarray:
    """seq_ids of the held-out contexts, in a seeded random order: whole groups, eval_contexts of them
    (more only when no remaining group fits the remainder exactly, then the smallest overshoot)."""
    rng = np.random.default_rng((seed, SPLIT_SALT))
    sizes = np.bincount(groups_N)
    chosen, need = [], eval_contexts
    # First fit in a random group order: exact whenever some remaining group fits, which small groups make usual.
    for group in rng.permutation(len(sizes)):
        if 0 < sizes[group] <= need:
            chosen.append(group)
            need -= int(sizes[group])
            if need == 0:
                break
    if need > 0:
        left = np.setdiff1d(np.arange(len(sizes)), chosen)
        chosen.append(int(left[np.argmin(sizes[left])]))
    ids = np.flatnonzero(np.isin(groups_N, chosen))
    return rng.permutation(ids)


def split_eval(harvest: str, eval_contexts: int) -> tuple[SeqSelection, SeqSelection]:
    """(train, held_out) contexts of a harvest: eval_contexts contexts of whole documents held out, the rest trained on."""
    manifest = read_manifest(harvest)
    total = int(manifest["num_contexts"])
    if isinstance(eval_contexts, bool) or not isinstance(eval_contexts, int) or not 1 <= eval_contexts < total:
        raise SplitError(f"eval_contexts={eval_contexts!r} is invalid: an integer in 1..{total - 1} (the harvest has {total} contexts)")
    first_N, last_N, chunk_N = context_documents(harvest)
    seed = int(manifest.get("token_spec", {}).get("seed", 0))
    ids, rule = held_out_ids(document_groups(first_N, last_N), eval_contexts, seed), "documents"
    if len(ids) > MAX_OVERSHOOT * eval_contexts or len(ids) > total - len(ids):
        groups_N = document_groups(first_N, last_N, chunk_N)
        ids, rule = held_out_ids(groups_N, eval_contexts, seed), "text runs"
        if len(ids) >= total:
            raise SplitError(
                f"{harvest}: holding out eval_contexts={eval_contexts} contexts leaves none to train on (its {total} contexts "
                f"form {groups_N.max() + 1} run(s) of contiguous text); hold out fewer"
            )
    ids_tuple = tuple(int(i) for i in ids)
    return SeqSelection(ids_tuple, complement=True, rule=rule), SeqSelection(ids_tuple, rule=rule)
