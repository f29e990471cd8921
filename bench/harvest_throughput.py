"""Harvest throughput vs a bare forward pass of the same model on the same tokens, in one run.

Model: the packaged SmolLM2-135M (offline). Tokens: Python's pydoc topics packed into
128-token contexts. Figures:
  - tokens/s of a bare forward (no hooks, nothing stored), both of the whole causal LM (with
    the 49k-vocab unembedding) and of the transformer body alone (the strict baseline: the
    same 30 layers a last-layer harvest runs);
  - tokens/s of harvesting (hooks + float16 conversion + Parquet + atomic writes + markers)
    at the LAST layer (same depth as the bare forward: the ratio is pure overhead) and at a
    middle layer (where stopping the forward early pays);
  - stored bytes per activation element vs the raw float16 size.
Repetitions alternate bare / harvest so machine noise hits both; the best of each is kept.
Run: `.venv/bin/python -m bench.harvest_throughput [--tokens N] [--reps R]`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from infra.harvest.plan import plan_harvest
from infra.harvest.worker import HarvestJob, ShardHarvester
from infra.lm.models import PACKAGED_SMOLLM2, load_model
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec

CONTEXT = 128
LAYERS = {"last": "blocks.29.hook_resid_post", "middle": "blocks.15.hook_resid_post"}


def plan(root: Path, hookpoint: str, num_tokens: int, batch: int) -> HarvestJob:
    """A fresh (uncached) harvest job on the benchmark tokens."""
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=PACKAGED_SMOLLM2, context_length=CONTEXT, num_tokens=num_tokens)
    return plan_harvest(PACKAGED_SMOLLM2, [hookpoint], spec, str(root), contexts_per_shard=64, batch_contexts=batch)


def bare_forward_seconds(module: torch.nn.Module, token_ids_NS: np.ndarray, batch: int) -> float:
    """Forward over every context, nothing captured."""
    device = next(module.parameters()).device
    started = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(token_ids_NS), batch):
            ids_BS = torch.from_numpy(token_ids_NS[start : start + batch].astype(np.int64)).to(device)
            module(input_ids=ids_BS, attention_mask=torch.ones_like(ids_BS))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def harvest_seconds(job: HarvestJob, model: torch.nn.Module) -> tuple[float, int]:
    """(seconds, stored bytes) to harvest every shard of a job with an already loaded model."""
    harvester = ShardHarvester(job, model=model)
    started = time.perf_counter()
    records = [harvester.harvest(i) for i in range(job.num_shards)]
    return time.perf_counter() - started, sum(f["bytes"] for r in records for f in r["files"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-harvest-"))
    model, _ = load_model(PACKAGED_SMOLLM2)
    token_ids_NS = ShardHarvester(plan(work / "tokens", LAYERS["last"], args.tokens, args.batch), model=model).tokens.token_ids_NS
    bare_forward_seconds(model, token_ids_NS[: args.batch], args.batch)  # warm-up
    print(f"# {date.today()} {platform.node()} {model.device} torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"# SmolLM2-135M, {args.tokens} tokens in {CONTEXT}-token contexts, batch {args.batch} contexts, float16 shards")
    best = dict.fromkeys(["lm", "body", *LAYERS], float("inf"))
    stored_bytes = 0
    for rep in range(args.reps):
        best["lm"] = min(best["lm"], bare_forward_seconds(model, token_ids_NS, args.batch))
        best["body"] = min(best["body"], bare_forward_seconds(model.model, token_ids_NS, args.batch))
        for name, hookpoint in LAYERS.items():
            seconds, stored_bytes = harvest_seconds(plan(work / f"{name}-{rep}", hookpoint, args.tokens, args.batch), model)
            best[name] = min(best[name], seconds)
    lm_tps, body_tps = args.tokens / best["lm"], args.tokens / best["body"]
    print(f"bare forward, causal LM:           {lm_tps:8.0f} tokens/s")
    print(f"bare forward, body (30 layers):    {body_tps:8.0f} tokens/s")
    for name in LAYERS:
        tps = args.tokens / best[name]
        print(f"harvest {LAYERS[name]:<26} {tps:8.0f} tokens/s  ratio vs body {tps / body_tps:.2f}x, vs LM {tps / lm_tps:.2f}x")
    raw = args.tokens * model.config.hidden_size * 2
    print(f"stored bytes / raw float16 bytes:  {stored_bytes / raw:.3f}x ({stored_bytes} / {raw})")


if __name__ == "__main__":
    main()
