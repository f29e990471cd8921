"""What a training stream reads: its spec, the shards and row groups it selects, and one shard's kept rows.

The order those rows are streamed in, and the threads that read ahead, are infra.activations.stream's.

A stream may read a subset of contexts (`seqs`, a SeqSelection: the held-out ids, or their
complement for training; see infra.activations.split). Shards whose seq_id bounds (manifest)
hold no selected context are never opened; inside a shard only the row groups whose seq_id
statistics can hold a selected context are read, and the rest of the filtering is a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from infra.activations.split import SeqSelection
from infra.activations.store import activations_numpy, read_manifest
from infra.storage import filesystem


class StreamSpecError(ValueError):
    """A stream spec is invalid, or asks a harvest for something it does not hold."""


@dataclass
class StreamSpec:
    """Which activations to stream, and how to batch and shuffle them."""

    harvest: str
    """URI of a committed harvest folder ({root}/activations/{harvest_id})."""
    hookpoint: str
    """One of the harvest's hookpoints, e.g. blocks.6.hook_resid_post."""
    batch_size: int = 4096
    """Tokens (rows) per batch."""
    shuffle_buffer: int = 65536
    """Rows held for mixing across shards; 0 streams rows in (shuffled) shard order."""
    seed: int = 0
    """Fixes shard orders and the buffer's draws: one seed, one stream."""
    exclude_special: bool = True
    """Drop BOS/EOS rows (the `special` column): their activations are outliers SAEs should not fit."""
    seqs: SeqSelection | None = None
    """Contexts to stream (split_eval's held-out ids, or their complement for training); None streams every context."""
    prefetch: int = 2
    """Shard reads that run ahead of the one being consumed."""
    loop: bool = False
    """Cycle through the shards, in a new order each epoch, so the stream outlasts the data."""
    drop_last: bool = True
    """Drop a final partial batch (training wants equal batches); False keeps it (evaluation wants every row)."""
    aligned_harvests: tuple[str, ...] = ()
    """More harvests row-aligned with `harvest` (same token spec, checked by infra.activations.alignment):
    batches become [batch_size, 1 + len(aligned_harvests), d_model], one slice per source (crosscoders)."""
    target_hookpoint: str | None = None
    """A second hookpoint of the same harvest (a transcoder's target): batches become (x_BD, y_BD)
    pairs, row i of both the same token."""
    aligned_hookpoints: tuple[str, ...] = ()
    """More hookpoints of the same harvest (a cross-layer crosscoder's sources): batches become
    [batch_size, 1 + len(aligned_hookpoints), d_model], one slice per hookpoint, row i the same token."""

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("shuffle_buffer", 0), ("seed", 0), ("prefetch", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StreamSpecError(f"StreamSpec.{name}={value!r} is invalid: an integer >= {low}")
        if self.seqs is not None and not isinstance(self.seqs, SeqSelection):
            raise StreamSpecError(f"StreamSpec.seqs={self.seqs!r} is invalid: a SeqSelection (infra.activations.split) or None")
        if self.target_hookpoint is not None and self.aligned_harvests:
            raise StreamSpecError("StreamSpec: target_hookpoint and aligned_harvests cannot be combined: pairs come from one harvest")
        if sum(map(bool, (self.target_hookpoint, self.aligned_harvests, self.aligned_hookpoints))) > 1:
            raise StreamSpecError("StreamSpec: target_hookpoint, aligned_harvests and aligned_hookpoints are exclusive: one kind of second source")
        hookpoints = (self.hookpoint, *self.aligned_hookpoints)
        if len(set(hookpoints)) != len(hookpoints):
            raise StreamSpecError(f"StreamSpec.aligned_hookpoints={self.aligned_hookpoints!r} is invalid: hookpoints other than {self.hookpoint!r}, "
                                  "each once")
        if self.target_hookpoint is not None and self.target_hookpoint == self.hookpoint:
            raise StreamSpecError(f"StreamSpec.target_hookpoint={self.target_hookpoint!r} is invalid: a hookpoint other than hookpoint")


@dataclass(frozen=True)
class Shard:
    path: str
    """Path inside the filesystem."""
    aligned_paths: tuple[str, ...]
    """The same shard of each aligned harvest."""
    rows: int
    filter_seq: bool
    """Whether only part of the shard's contexts are selected (so seq_id must be read)."""


@dataclass(frozen=True)
class StreamPlan:
    spec: StreamSpec
    fs: AbstractFileSystem
    shards: list[Shard]
    d_model: int
    sources: int
    """1 + number of aligned harvests (or 2: input and target hookpoints)."""

    @property
    def where(self) -> str:
        spec = self.spec
        seqs = "every context" if spec.seqs is None else spec.seqs.describe()
        target = f" -> {spec.target_hookpoint}" if spec.target_hookpoint else ""
        return f"{spec.harvest} hookpoint {spec.hookpoint}{target} (exclude_special={spec.exclude_special}, {seqs})"


def plan_stream(spec: StreamSpec) -> StreamPlan:
    manifest = read_manifest(spec.harvest)
    for field, name in (("hookpoint", spec.hookpoint), ("target_hookpoint", spec.target_hookpoint),
                        *(("aligned_hookpoints", name) for name in spec.aligned_hookpoints)):
        if name is not None and name not in manifest["hookpoints"]:
            raise StreamSpecError(f"{spec.harvest}: {field} {name!r} was not harvested; available: {manifest['hookpoints']}")
    fs, base = filesystem(spec.harvest)
    aligned = [(read_manifest(uri), filesystem(uri)[1]) for uri in spec.aligned_harvests]
    shards, bound = [], 0
    for entry in sorted(manifest["shards"], key=lambda s: s["index"]):
        path, rows = f"{base}/{entry['files'][spec.hookpoint]['path']}", int(entry["rows"])
        others = tuple(f"{b}/{m['shards'][entry['index']]['files'][spec.hookpoint]['path']}" for m, b in aligned)
        if spec.target_hookpoint is not None:  # the same shard's rows at the target hookpoint, read beside x's
            others = (f"{base}/{entry['files'][spec.target_hookpoint]['path']}",)
        if spec.aligned_hookpoints:  # the same shard's rows at every other layer's hookpoint
            others = tuple(f"{base}/{entry['files'][name]['path']}" for name in spec.aligned_hookpoints)
        start, stop = entry.get("seq_start"), entry.get("seq_stop")
        if spec.seqs is None or start is None or stop is None:  # no bounds recorded: read and filter
            shards.append(Shard(path, others, rows, spec.seqs is not None))
            bound += rows
            continue
        selected = spec.seqs.count_in(start, stop)
        if selected > 0:  # a shard without a selected context is never opened
            shards.append(Shard(path, others, rows, selected < stop - start))
            bound += rows * selected // (stop - start)
    where = "every context" if spec.seqs is None else spec.seqs.describe()
    if bound == 0:
        raise StreamSpecError(f"{spec.harvest}: {where} selects no rows; the harvest has {manifest['num_contexts']} contexts")
    if not spec.loop and spec.drop_last and bound < spec.batch_size:
        raise StreamSpecError(f"{spec.harvest}: at most {bound} rows in {where}, fewer than "
                              f"batch_size={spec.batch_size}; use loop=True or a smaller batch")
    sources = 2 if spec.target_hookpoint is not None else 1 + len(aligned) + len(spec.aligned_hookpoints)
    return StreamPlan(replace(spec), fs, shards, int(manifest["d_model"]), sources)  # a copy: later edits to spec change nothing


def _read_columns(plan: StreamPlan, shard: Shard, columns: list[str], path: str | None = None) -> Any:
    path = path or shard.path
    try:
        with plan.fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            if not shard.filter_seq:
                return parquet.read(columns=columns)
            return parquet.read_row_groups(_selected_row_groups(parquet, plan.spec.seqs), columns=columns)
    except Exception as error:  # keep the type (FileNotFoundError, ArrowInvalid, ...), name the shard
        error.add_note(f"while streaming shard {path} of {plan.spec.harvest}")
        raise


def _selected_row_groups(parquet: pq.ParquetFile, seqs: SeqSelection) -> list[int]:
    """Row groups whose seq_id statistics may hold a selected context (all of those without statistics).

    Aligned shards were written by the same code from the same rows, so they get the same groups
    (and _read_shard checks their row counts agree)."""
    column = parquet.schema_arrow.get_field_index("seq_id")
    groups = []
    for index in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(index).column(column).statistics
        if stats is None or not stats.has_min_max or seqs.count_in(int(stats.min), int(stats.max) + 1) > 0:
            groups.append(index)
    return groups


def _keep_mask(plan: StreamPlan, shard: Shard, table: Any) -> np.ndarray | None:
    keep = None
    if plan.spec.exclude_special:
        keep = ~table.column("special").to_numpy()
    if shard.filter_seq:
        selected_N = plan.spec.seqs.mask(table.column("seq_id").to_numpy())
        keep = selected_N if keep is None else keep & selected_N
    return keep


def _filter_columns(plan: StreamPlan, shard: Shard) -> list[str]:
    return (["special"] if plan.spec.exclude_special else []) + (["seq_id"] if shard.filter_seq else [])


def read_shard(plan: StreamPlan, shard: Shard) -> np.ndarray:
    """The shard's kept rows, [rows, sources * d_model] in the stored dtype (sources side by side)."""
    table = _read_columns(plan, shard, ["activation", *_filter_columns(plan, shard)])
    parts = [table]
    for path in shard.aligned_paths:  # row i of every aligned shard is the same token
        parts.append(_read_columns(plan, shard, ["activation"], path))
        if parts[-1].num_rows != table.num_rows:
            raise ValueError(f"{path}: {parts[-1].num_rows} rows, but {shard.path} has {table.num_rows}: harvests are not row-aligned")
    for part, path in zip(parts, (shard.path, *shard.aligned_paths)):
        width = part.schema.field("activation").type.list_size
        if width != plan.d_model:
            raise ValueError(f"{path}: activation width {width}, the manifest says d_model={plan.d_model}")
    acts_ND = activations_numpy(table) if len(parts) == 1 else np.concatenate([activations_numpy(p) for p in parts], axis=1)
    keep = _keep_mask(plan, shard, table)
    return acts_ND if keep is None else acts_ND[keep]


def count_shard_rows(plan: StreamPlan, shard: Shard) -> int:
    """Kept rows of a shard, reading only the small filter columns (or nothing)."""
    columns = _filter_columns(plan, shard)
    if not columns:
        return shard.rows
    keep = _keep_mask(plan, shard, _read_columns(plan, shard, columns))
    return int(keep.sum())
