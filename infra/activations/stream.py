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
from dataclasses import dataclass

import numpy as np
import torch

from infra.activations.split import SeqSelection as SeqSelection  # re-exported with split_eval: the stream's callers split with them
from infra.activations.split import split_eval as split_eval
from infra.activations.stream_plan import Shard, StreamPlan, count_shard_rows, plan_stream, read_shard
from infra.activations.stream_plan import StreamSpec as StreamSpec  # re-exported: callers build streams from here
from infra.activations.stream_plan import StreamSpecError as StreamSpecError

THREAD_PREFIX = "saeflow-stream"
BATCHES_AHEAD = 4
"""Finished batches the pipeline may hold ready for the consumer."""


def iter_batches(spec: StreamSpec, start_batch: int = 0) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """Float32 [batch_size, d_model] batches (or (x, y) pairs, see target_hookpoint) from batch `start_batch` on (pinned with CUDA)."""
    if isinstance(start_batch, bool) or not isinstance(start_batch, int) or start_batch < 0:
        raise StreamSpecError(f"start_batch={start_batch!r} is invalid: an integer >= 0")
    plan = plan_stream(spec)  # errors here raise at the call, before any thread starts
    return _consume(plan, start_batch)


def count_rows(spec: StreamSpec) -> int:
    """Rows one epoch of the stream holds (after seqs and exclude_special), reading only small columns."""
    plan = plan_stream(spec)
    return sum(count_shard_rows(plan, shard) for shard in plan.shards)


def _epoch_rng(seed: int, epoch: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng((seed, epoch, purpose))


def _shard_reads(plan: StreamPlan, pool: ThreadPoolExecutor, first_epoch: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
    """(epoch, kept rows) per shard in stream order, `prefetch` reads running ahead."""

    def schedule() -> Iterator[tuple[int, Shard]]:
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
            pending.append((nxt[0], pool.submit(read_shard, plan, nxt[1])))
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


def _row_pieces(plan: StreamPlan, pool: ThreadPoolExecutor, first_epoch: int, stop: threading.Event) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The stream's rows, epoch after epoch, each epoch through its own shuffle buffer."""
    reads = _shard_reads(plan, pool, first_epoch, stop)
    for epoch, group in itertools.groupby(reads, key=lambda read: read[0]):
        rng = _epoch_rng(plan.spec.seed, epoch, 1)
        yield from _shuffle_epoch((rows for _, rows in group), plan.spec.shuffle_buffer, rng, plan.where)


def _batches(plan: StreamPlan, pool: ThreadPoolExecutor, start_batch: int, stop: threading.Event) -> Iterator[torch.Tensor]:
    """Assemble float32 batches from the row stream, skipping the first start_batch batches' rows."""
    spec = plan.spec
    skip = start_batch * spec.batch_size
    first_epoch = 0
    if spec.loop and skip:
        per_epoch = sum(pool.map(lambda shard: count_shard_rows(plan, shard), plan.shards))
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


def _per_source(batch_BX: torch.Tensor, plan: StreamPlan) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
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


def _produce(plan: StreamPlan, start_batch: int, out: queue.Queue, stop: threading.Event) -> None:
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


def _consume(plan: StreamPlan, start_batch: int) -> Iterator[torch.Tensor]:
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
