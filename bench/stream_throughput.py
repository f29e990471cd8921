"""Activation stream throughput vs the rate a TopK SAE trainer consumes it, measured in one run.

Harvest: written with the activation store's own functions to local disk (not timed): d_model
576 (SmolLM2-135M's width), float16, 32 shards x 8192 rows (64 contexts x 128 tokens, position 0
marked special), synthetic Gaussian values. Figures:
  - stream rows/s over one whole epoch (batch 4096, shuffle buffer 65536, prefetch 2), both
    with the shard files evicted from the page cache (posix_fadvise DONTNEED after fsync, so the
    disk is read) and with them cached;
  - a TopK SAE (d_in 576, 8x, k=32) trainer's tokens/s on in-memory random batches;
  - the ratio stream / trainer (goal >= 3x), and the trainer's tokens/s when fed by the stream
    (its threads share the cores with training) relative to in-memory batches.
Repetitions alternate the cases so machine noise hits all of them; the best of each is kept.
Run: `.venv/bin/python -m bench.stream_throughput [--shards N] [--rows R] [--steps S] [--reps R]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path

import numpy as np
import torch

from infra.activations.store import harvest_uri, shard_schema, shard_table, write_manifest, write_shard_file
from infra.activations.stream import StreamSpec, iter_batches
from infra.allocator import keep_freed_memory
from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae

D_MODEL, CONTEXT, HOOKPOINT = 576, 128, "blocks.15.hook_resid_post"


def write_harvest(root: str, shards: int, rows: int) -> str:
    """A committed float16 harvest of synthetic activations; returns its URI."""
    harvest = harvest_uri(root, "bench-stream")
    schema = shard_schema(D_MODEL, "float16", {"hookpoint": HOOKPOINT, "model": "synthetic"})
    rng = np.random.default_rng(0)
    contexts = rows // CONTEXT
    entries = []
    for index in range(shards):
        seq_N = np.repeat(np.arange(index * contexts, (index + 1) * contexts, dtype=np.int64), CONTEXT)
        pos_N = np.tile(np.arange(CONTEXT, dtype=np.int32), contexts)
        acts_ND = rng.standard_normal((len(seq_N), D_MODEL), dtype=np.float32).astype(np.float16)
        table = shard_table(seq_N, pos_N, rng.integers(0, 49152, len(seq_N), dtype=np.int32), pos_N == 0, acts_ND, schema)
        entry = write_shard_file(harvest, HOOKPOINT, index, table)
        entries.append({"index": index, "rows": len(seq_N), "seq_start": int(seq_N[0]), "seq_stop": int(seq_N[-1]) + 1, "files": {HOOKPOINT: entry}})
    write_manifest(harvest, {"harvest_id": "bench-stream", "hookpoints": [HOOKPOINT], "d_model": D_MODEL, "dtype": "float16",
                             "context_length": CONTEXT, "num_contexts": shards * contexts, "num_rows": shards * rows, "shards": entries})
    return harvest


def evict(harvest: str) -> None:
    """Drop the shard files from the page cache, so the next read comes from disk."""
    for path in Path(harvest).rglob("*.parquet"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def time_epoch(spec: StreamSpec) -> tuple[float, float, int]:
    """(seconds for a whole epoch, seconds to the first batch, rows)."""
    started = time.perf_counter()
    first, rows = None, 0
    for batch_BD in iter_batches(spec):
        first = first or time.perf_counter() - started
        rows += batch_BD.shape[0]
    return time.perf_counter() - started, first or 0.0, rows


def time_training(batches: Iterable[torch.Tensor], steps: int) -> float:
    """Tokens/s of a TopK SAE trainer over `steps` batches, after one untimed warm-up step."""
    trainer = SaeTrainer(build_sae(SaeConfig("topk", d_in=D_MODEL, expansion_factor=8, k=32)), TrainConfig(total_steps=steps + 1, lr=3e-4))
    batches = iter(batches)
    trainer.train_step(next(batches))
    started, tokens = time.perf_counter(), 0
    for _ in range(steps):
        batch_BD = next(batches)
        trainer.train_step(batch_BD)
        tokens += batch_BD.shape[0]
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--rows", type=int, default=8192, help="rows per shard (a multiple of 128)")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--buffer", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=6, help="timed SAE train steps per trainer measurement")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    keep_freed_memory()  # as the training workers do (infra.training.group.train_group)
    print(f"# {date.today()} {platform.node()} torch {torch.__version__}, threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="saeflow-stream-bench-") as root:
        started = time.perf_counter()
        harvest = write_harvest(root, args.shards, args.rows)
        size = sum(p.stat().st_size for p in Path(harvest).rglob("*.parquet"))
        print(f"# harvest: {args.shards} shards x {args.rows} rows, {size / 2**20:.0f} MiB, written in {time.perf_counter() - started:.1f}s (not counted)")
        spec = StreamSpec(harvest, HOOKPOINT, batch_size=args.batch, shuffle_buffer=args.buffer, seed=0)
        best: dict[str, float] = {}
        for rep in range(args.reps):  # alternate the cases so machine noise hits all; keep the best of each
            evict(harvest)
            cold, cold_first, rows = time_epoch(spec)
            warm, warm_first, _ = time_epoch(spec)
            print(f"# rep {rep}: epoch of {rows} rows: evicted {cold:.2f}s (first batch {cold_first:.2f}s), cached {warm:.2f}s (first batch {warm_first:.2f}s)")
            generator = torch.Generator().manual_seed(rep)
            memory_batches = (torch.randn(args.batch, D_MODEL, generator=generator) for _ in range(args.steps + 1))
            figures = {
                "evicted": rows / cold,
                "cached": rows / warm,
                "in_memory": time_training(memory_batches, args.steps),
                "streamed": time_training(iter_batches(StreamSpec(**{**spec.__dict__, "loop": True, "seed": rep})), args.steps),
            }
            best = {name: max(value, best.get(name, 0.0)) for name, value in figures.items()}
        print(f"stream, evicted files: {best['evicted']:>9.0f} rows/s")
        print(f"stream, page cache:    {best['cached']:>9.0f} rows/s")
        print(f"TopK trainer (k=32 8x, batch {args.batch}), in-memory batches: {best['in_memory']:>7.0f} tokens/s")
        print(f"TopK trainer fed by the stream:                      {best['streamed']:>7.0f} tokens/s ({best['streamed'] / best['in_memory']:.2f}x in-memory)")
        print(f"ratio stream / trainer: {best['evicted'] / best['in_memory']:.1f}x evicted, {best['cached'] / best['in_memory']:.1f}x cached (goal >= 3x)")

if __name__ == "__main__":
    main()
