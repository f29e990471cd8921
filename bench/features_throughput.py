"""Features stage encode throughput vs the bare SAE encode on the same rows, and the two latent-table queries.

Harvest: synthetic Gaussian activations written with the activation store's own functions to
local disk (not timed): d_model 576 (SmolLM2-135M's width), float16, --shards shards of 64
contexts x 128 tokens. SAE: TopK, 8x (4608 latents), k=32, saved in SAELens format.
Figures (best of --reps, cases alternated so machine noise hits both):
  - bare: the rows already in memory as float32, sae.encode in batches of 4096, nothing else;
  - stage: ShardEncoder.encode on every shard: read Parquet, filter, encode, extract non-zeros,
    sort, write the sparse latent files and the markers (fresh stage folder each repetition);
  - latents/s = rows x d_sae / seconds; the ratio stage / bare (goal >= 0.8);
  - the two queries on the stage's table: top contexts of one latent and every latent active at
    one token, each with pushdown vs reading the whole table and filtering in pandas.
Run: `.venv/bin/python -m bench.features_throughput [--shards N] [--reps R]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from infra.activations.store import harvest_uri, shard_schema, shard_table, write_manifest, write_shard_file
from infra.features.encode import ShardEncoder, read_shard_rows
from infra.features.latent_table import active_at, top_contexts
from infra.features.plan import plan_features
from infra.features.run import commit_features  # noqa: F401 - the stage's committer; the bench stops before it
from infra.sae_store import save_sae
from infra.storage import write_json_atomic
from sae_core import SaeConfig, build_sae

HOOK, D, CONTEXT, PER_SHARD = "blocks.6.hook_resid_post", 576, 128, 64


def write_harvest(root: str, shards: int) -> str:
    """A committed float16 harvest of Gaussian rows (position 0 marked special, as BOS)."""
    harvest = harvest_uri(root, "bench-0123456789")
    rng = np.random.default_rng(0)
    entries = []
    for index in range(shards):
        start, stop = index * PER_SHARD, (index + 1) * PER_SHARD
        seq_N = np.repeat(np.arange(start, stop, dtype=np.int64), CONTEXT)
        pos_N = np.tile(np.arange(CONTEXT, dtype=np.int32), PER_SHARD)
        acts_ND = rng.standard_normal((len(seq_N), D), dtype=np.float32).astype(np.float16)
        table = shard_table(seq_N, pos_N, np.zeros(len(seq_N), np.int32), pos_N == 0, acts_ND, shard_schema(D, "float16", {}))
        entries.append({"index": index, "rows": len(seq_N), "seq_start": start, "seq_stop": stop,
                        "files": {HOOK: write_shard_file(harvest, HOOK, index, table)}})
    write_manifest(harvest, {"harvest_id": "bench-0123456789", "model": "bench", "hookpoints": [HOOK], "d_model": D,
                             "vocab_size": 1, "dtype": "float16", "context_length": CONTEXT, "num_contexts": shards * PER_SHARD,
                             "num_rows": shards * PER_SHARD * CONTEXT, "shards": entries})
    return harvest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    base = tempfile.mkdtemp(prefix="bench-features-")
    harvest = write_harvest(base, args.shards)
    sae = build_sae(SaeConfig(architecture="topk", d_in=D, expansion_factor=8.0, k=32)).eval()
    save_sae(sae, f"{base}/saes/bench-topk", metadata={"hook_name": HOOK})
    plan = plan_features(f"{base}/saes/bench-topk", harvest, f"{base}/root", contexts=0)
    encoder = ShardEncoder(plan, device="cpu")
    rows_ND = np.concatenate([read_shard_rows(plan, encoder.manifest, s)[2] for s in plan.shards])
    d_sae = plan.saes[0]["d_sae"]
    bare, stage = [], []
    for _ in range(args.reps):
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(rows_ND), plan.encode_batch):
                encoder.saes["bench-topk"].encode(torch.from_numpy(rows_ND[start : start + plan.encode_batch]))
        bare.append(time.perf_counter() - started)
        shutil.rmtree(plan.features, ignore_errors=True)
        started = time.perf_counter()
        for shard in plan.shards:
            encoder.encode(shard)
        stage.append(time.perf_counter() - started)
    rows = len(rows_ND)
    bare_rate, stage_rate = rows * d_sae / min(bare), rows * d_sae / min(stage)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"rows {rows} (BOS dropped), d_sae {d_sae}, k 32, non-zeros {sum(pq.read_metadata(p).num_rows for p in _files(plan))}")
    print(f"bare SAE encode : {bare_rate / 1e6:8.1f} M latents/s ({rows / min(bare):,.0f} rows/s)")
    print(f"features encode : {stage_rate / 1e6:8.1f} M latents/s ({rows / min(stage):,.0f} rows/s)  ratio {stage_rate / bare_rate:.2f}x")
    # The queries read the stage's table through its manifest; commit a minimal one (no model here).
    write_json_atomic(f"{plan.features}/_manifest.json", {"saes": plan.to_dict()["saes"],
                      "shards": [{"files": {"bench-topk": {"path": f"latents/sae=bench-topk/part-{s:05d}.parquet"}}} for s in plan.shards]})
    queries = {
        "top contexts of latent 123": (lambda: top_contexts(plan.features, "bench-topk", 123, limit=20),
                                       lambda: _scan(plan).query("latent == 123").nlargest(20, "value")),
        "latents active at (seq 200, pos 17)": (lambda: active_at(plan.features, "bench-topk", 200, 17),
                                                lambda: _scan(plan).query("seq_id == 200 and pos == 17")),
    }
    for name, (pushdown, scan) in queries.items():
        fast, slow = _best(pushdown, args.reps), _best(scan, args.reps)
        print(f"{name:38s}: pushdown {fast * 1e3:7.1f} ms, full scan {slow * 1e3:7.1f} ms ({slow / fast:.1f}x)")
    shutil.rmtree(base)


def _files(plan) -> list[str]:
    return [f"{plan.features}/latents/sae=bench-topk/part-{s:05d}.parquet" for s in plan.shards]


def _scan(plan):
    return pq.ParquetDataset(_files(plan)).read().to_pandas()


def _best(call, reps: int) -> float:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


if __name__ == "__main__":
    main()
