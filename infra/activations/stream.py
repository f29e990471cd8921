"""The training stream over a committed harvest: shuffled float32 batches of one hookpoint.

With a target_hookpoint (a transcoder's: blocks.L.hook_mlp_out beside blocks.L.hook_mlp_in) the
stream yields row-aligned (x_BD, y_BD) pairs instead: the two hookpoints' shards of one harvest
hold the same tokens row for row, so each shard's rows of both are read side by side and go
through the one shuffle below together.

The order is a pure function of the spec, so a stream replays exactly (resume after a crash):
  - epoch e (0, 1, ... with `loop`, else only 0) visits the shards the manifest lists in an
    order drawn from default_rng((seed, e, 0));
  - their rows pass through a shuffle buffer of `shuffle_buffer` rows drawn from
    default_rng((seed, e, 1)): each incoming row takes the slot of a random buffered row, which
    leaves (tf.data's scheme); at the end of the epoch the buffer drains in random order. So each
    kept row appears exactly once per epoch and a batch mixes about shuffle_buffer/shard_rows shards;
  - batches are consecutive batch_size-row slices of the concatenated epochs (a batch may span
    two epochs); with loop=False a last partial batch is dropped.
Epochs are independent, so resuming a looping stream skips whole epochs after counting rows from
the small `special` / `seq_id` columns; only the epoch the resume point lies in is replayed.

A stream may read a subset of contexts (`seqs`, a SeqSelection: the held-out ids, or their
complement for training; see infra.activations.split). Shards whose seq_id bounds (manifest)
hold no selected context are never opened; inside a shard only the row groups whose seq_id
statistics can hold a selected context are read, and the rest of the filtering is a mask.

Threads: one pipeline thread reads, shuffles and assembles batches, and hands them to the
consumer through a bounded queue; under it `prefetch` shard reads run ahead in a thread pool
(pyarrow and numpy release the GIL). A reader's exception is raised in the consumer; closing
the generator (or dropping it) stops and joins every thread.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from fsspec import AbstractFileSystem

from infra.activations.split import SeqSelection as SeqSelection  # re-exported with split_eval: the stream's callers split with them
from infra.activations.split import split_eval as split_eval
from infra.activations.store import activations_numpy, read_manifest
from infra.storage import filesystem

THREAD_PREFIX = "saeflow-stream"
BATCHES_AHEAD = 4
"""Finished batches the pipeline may hold ready for the consumer."""


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
class _Shard:
    path: str
    """Path inside the filesystem."""
    aligned_paths: tuple[str, ...]
    """The same shard of each aligned harvest."""
    rows: int
    filter_seq: bool
    """Whether only part of the shard's contexts are selected (so seq_id must be read)."""


@dataclass(frozen=True)
class _Plan:
    spec: StreamSpec
    fs: AbstractFileSystem
    shards: list[_Shard]
    d_model: int
    sources: int
    """1 + number of aligned harvests (or 2: input and target hookpoints)."""

    @property
    def where(self) -> str:
        spec = self.spec
        seqs = "every context" if spec.seqs is None else spec.seqs.describe()
        target = f" -> {spec.target_hookpoint}" if spec.target_hookpoint else ""
        return f"{spec.harvest} hookpoint {spec.hookpoint}{target} (exclude_special={spec.exclude_special}, {seqs})"


def iter_batches(spec: StreamSpec, start_batch: int = 0) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """Float32 [batch_size, d_model] batches (or (x, y) pairs, see target_hookpoint) from batch `start_batch` on (pinned with CUDA)."""
    if isinstance(start_batch, bool) or not isinstance(start_batch, int) or start_batch < 0:
        raise StreamSpecError(f"start_batch={start_batch!r} is invalid: an integer >= 0")
    plan = _plan(spec)  # errors here raise at the call, before any thread starts
    return _consume(plan, start_batch)


def count_rows(spec: StreamSpec) -> int:
    """Rows one epoch of the stream holds (after seqs and exclude_special), reading only small columns."""
    plan = _plan(spec)
    return sum(_count_rows(plan, shard) for shard in plan.shards)


def _plan(spec: StreamSpec) -> _Plan:
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
            shards.append(_Shard(path, others, rows, spec.seqs is not None))
            bound += rows
            continue
        selected = spec.seqs.count_in(start, stop)
        if selected > 0:  # a shard without a selected context is never opened
            shards.append(_Shard(path, others, rows, selected < stop - start))
            bound += rows * selected // (stop - start)
    where = "every context" if spec.seqs is None else spec.seqs.describe()
    if bound == 0:
        raise StreamSpecError(f"{spec.harvest}: {where} selects no rows; the harvest has {manifest['num_contexts']} contexts")
    if not spec.loop and spec.drop_last and bound < spec.batch_size:
        raise StreamSpecError(f"{spec.harvest}: at most {bound} rows in {where}, fewer than "
                              f"batch_size={spec.batch_size}; use loop=True or a smaller batch")
    sources = 2 if spec.target_hookpoint is not None else 1 + len(aligned) + len(spec.aligned_hookpoints)
    return _Plan(replace(spec), fs, shards, int(manifest["d_model"]), sources)  # a copy: later edits to spec change nothing


def _read_columns(plan: _Plan, shard: _Shard, columns: list[str], path: str | None = None) -> Any:
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


def _keep_mask(plan: _Plan, shard: _Shard, table: Any) -> np.ndarray | None:
    keep = None
    if plan.spec.exclude_special:
        keep = ~table.column("special").to_numpy()
    if shard.filter_seq:
        selected_N = plan.spec.seqs.mask(table.column("seq_id").to_numpy())
        keep = selected_N if keep is None else keep & selected_N
    return keep


def _filter_columns(plan: _Plan, shard: _Shard) -> list[str]:
    return (["special"] if plan.spec.exclude_special else []) + (["seq_id"] if shard.filter_seq else [])


def _read_shard(plan: _Plan, shard: _Shard) -> np.ndarray:
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


def _count_rows(plan: _Plan, shard: _Shard) -> int:
    """Kept rows of a shard, reading only the small filter columns (or nothing)."""
    columns = _filter_columns(plan, shard)
    if not columns:
        return shard.rows
    keep = _keep_mask(plan, shard, _read_columns(plan, shard, columns))
    return int(keep.sum())


def _epoch_rng(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng((seed, epoch, purpose))


def _shard_reads(plan: _Plan, pool: ThreadPoolExecutor, first_epoch: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, kept rows) per shard in stream order, `prefetch` reads running ahead."""

    def schedule() -> Iterator[tuple[int, _Shard]]:
        for epoch in itertools.count(first_epoch) if plan.spec.loop else [first_epoch]:
            for i in _epoch_rng(plan.spec.seed, epoch, 0).permutation(len(plan.shards)):
                yield epoch, plan.shards[i]

    todo = schedule()
    pending: deque[tuple[int, Future[np.ndarray]]] = deque()
    while not stop.is_set():
        while len(pending) <= plan.spec.prefetch:
            nxt = next(todo, None)
            if nxt is None:
                break
            pending.append((nxt[0], pool.submit(_read_shard, plan, nxt[1])))
        if not pending:
            return
        epoch, future = pending.popleft()
        yield epoch, future.result()


def _shuffle_epoch(arrays: Iterable[np.ndarray], capacity: int, rng: np.random.Generator, where: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch's rows in shuffled order, as (source, row indices) pieces read before the source changes."""
    buf_CD: np.ndarray | None = None
    fill = seen = 0
    for rows_ND in arrays:
        seen += len(rows_ND)
        if capacity == 0:
            yield rows_ND, np.arange(len(rows_ND))
            continue
        if buf_CD is None:
            buf_CD = np.empty((capacity, rows_ND.shape[1]), rows_ND.dtype)
        take = min(capacity - fill, len(rows_ND))
        buf_CD[fill : fill + take] = rows_ND[:take]
        fill += take
        for start in range(take, len(rows_ND), capacity):
            incoming = rows_ND[start : start + capacity]
            slots = rng.choice(capacity, size=len(incoming), replace=False)
            yield buf_CD, slots  # the consumer gathers these rows before the generator resumes
            buf_CD[slots] = incoming
    if seen == 0:
        raise ValueError(f"{where}: an epoch has no rows to stream")
    if fill:
        yield buf_CD, rng.permutation(fill)


def _row_pieces(plan: _Plan, pool: ThreadPoolExecutor, first_epoch: int, stop: threading.Event) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The stream's rows, epoch after epoch, each epoch through its own shuffle buffer."""
    reads = _shard_reads(plan, pool, first_epoch, stop)
    for epoch, group in itertools.groupby(reads, key=lambda read: read[0]):
        rng = _epoch_rng(plan.spec.seed, epoch, 1)
        yield from _shuffle_epoch((rows for _, rows in group), plan.spec.shuffle_buffer, rng, plan.where)


def _batches(plan: _Plan, pool: ThreadPoolExecutor, start_batch: int, stop: threading.Event) -> Iterator[torch.Tensor]:
    """Assemble float32 batches from the row stream, skipping the first start_batch batches' rows."""
    spec = plan.spec
    skip = start_batch * spec.batch_size
    first_epoch = 0
    if spec.loop and skip:
        per_epoch = sum(pool.map(lambda shard: _count_rows(plan, shard), plan.shards))
        if per_epoch == 0:
            raise ValueError(f"{plan.where}: an epoch has no rows to stream")
        first_epoch, skip = divmod(skip, per_epoch)
    pin = torch.cuda.is_available()
    seen = 0  # rows of the stream so far, replayed ones included
    batch_BD: torch.Tensor | None = None
    fill = 0
    for source, index in _row_pieces(plan, pool, first_epoch, stop):
        seen += len(index)
        if skip >= len(index):  # replayed, not gathered
            skip -= len(index)
            continue
        index, skip = index[skip:], 0
        while len(index):
            if batch_BD is None:
                batch_BD = torch.empty((spec.batch_size, plan.sources * plan.d_model), dtype=torch.float32, pin_memory=pin)
            take = min(spec.batch_size - fill, len(index))
            batch_BD.numpy()[fill : fill + take] = source[index[:take]]
            fill, index = fill + take, index[take:]
            if fill == spec.batch_size:
                yield _per_source(batch_BD, plan)
                batch_BD, fill = None, 0
    if batch_BD is not None and fill and not spec.drop_last:
        yield _per_source(batch_BD[:fill], plan)
    elif not spec.loop and seen < spec.batch_size:
        raise ValueError(f"{plan.where}: {seen} rows, fewer than batch_size={spec.batch_size}; use loop=True or a smaller batch")


def _per_source(batch_BX: torch.Tensor, plan: _Plan) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """[B, d_model] for one harvest; [B, sources, d_model] (a view) for aligned harvests; (x, y) for a target hookpoint."""
    if plan.spec.target_hookpoint is not None:
        return batch_BX[:, : plan.d_model], batch_BX[:, plan.d_model :]  # views: rows stay pinned, no copy
    return batch_BX if plan.sources == 1 else batch_BX.view(len(batch_BX), plan.sources, plan.d_model)


@dataclass
class _Failure:
    error: BaseException


_END = object()


def _put(out: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put unless the consumer has stopped; False once it has."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(plan: _Plan, start_batch: int, out: queue.Queue, stop: threading.Event) -> None:
    pool = ThreadPoolExecutor(max_workers=plan.spec.prefetch + 1, thread_name_prefix=f"{THREAD_PREFIX}-read")
    batches = _batches(plan, pool, start_batch, stop)
    try:
        for batch_BD in batches:
            if not _put(out, batch_BD, stop):
                return
        _put(out, _END, stop)
    except BaseException as error:  # handed to the consumer, who raises it
        _put(out, _Failure(error), stop)
    finally:
        batches.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _consume(plan: _Plan, start_batch: int) -> Iterator[torch.Tensor]:
    out: queue.Queue = queue.Queue(maxsize=BATCHES_AHEAD)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(plan, start_batch, out, stop), name=f"{THREAD_PREFIX}-pipeline", daemon=True)
    producer.start()
    try:
        while True:
            try:
                item = out.get(timeout=1.0)
            except queue.Empty:
                if not producer.is_alive() and out.empty():
                    raise RuntimeError(f"{plan.where}: the stream's pipeline thread died without a word") from None
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        while producer.is_alive():
            try:
                while True:
                    out.get_nowait()
            except queue.Empty:
                pass
            producer.join(timeout=0.05)
