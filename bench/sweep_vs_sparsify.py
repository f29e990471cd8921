"""A whole grid of SAEs, wall time: one saeflow harvest + sweep vs the same SAEs trained one by one
with EleutherAI's sparsify (PyPI eai-sparsify), each library used the way a researcher uses it.

Grid: TopK, k in {16, 32} x expansion in {8, 32} x 2 learning rates = 8 SAEs on the packaged
SmolLM2-135M's blocks.6.hook_resid_post (sparsify: module `layers.6`, the same tensor), Python's
pydoc text packed into 128-token contexts, the same token budget per SAE on both sides, Adam on both
(sparsify's default is schedule-free SignSGD; `optimizer="adam"` is one of its options).

- saeflow: one fresh process (`saeflow sweep`'s path: imports, a temporary Prefect API, Ray) runs the
  harvest flow once, then ONE sweep flow over the grid, whose groups share one activation stream
  read from the harvest's Parquet shards; the model runs once, up to layer 6, for all 8 SAEs.
- sparsify: 8 fresh processes under its own virtualenv (.bench-venvs/sparsify, built when missing),
  one per SAE as `python -m sparsify` would run them; each loads the model and runs it on every
  batch (sparsify hooks the module and runs the whole model forward), then trains on the hooked
  activations (bench/sweep_vs_sparsify_runs.py). Same contexts as saeflow's harvest, the held-out
  ones left out, special tokens excluded (saeflow drops them too).

Not timed, done once: the packaged model's safetensors cache (sparsify loads it with
transformers), a harvest with the same spec whose contexts and held-out split feed sparsify and
whose held-out activations score sparsify's SAEs. Explained variance on both sides is over the
same held-out contexts (saeflow's from its results table). The sides alternate (reversed every
other repeat); the 1-minute load average is printed around every run (the machine is shared).
Run: `.venv/bin/python -m bench.sweep_vs_sparsify [--train-tokens T] [--batch B] [--repeats R]
[--sides saeflow sparsify]`; the defaults (8,192 tokens per SAE, 1 warm-up step, one repeat) are the
docs/BENCHMARKS.md run, ~7-8 minutes on the 2-core VM at load ~2 (sparsify's side scales with T).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOOKPOINT = "blocks.6.hook_resid_post"
SPARSIFY_HOOKPOINT = "layers.6"
CONTEXT = 128
KS = [16, 32]
EXPANSIONS = [8, 32]
LRS = [3e-4, 1e-3]
EVAL_CONTEXTS = 16
DRIVER = """
import json, sys, time
started = time.perf_counter()
from saeflow.runtime import flow_api
from flows.harvest import harvest
from flows.sweep import SweepSpec, sweep
spec = SweepSpec.model_validate_json(sys.argv[1])
with flow_api():
    flows_started = time.perf_counter()
    harvested = harvest(spec.harvest_spec)
    harvest_done = time.perf_counter()
    result = sweep(spec.model_copy(update={"harvest": harvested.harvest}))
    sweep_done = time.perf_counter()
print("RESULT " + json.dumps({"startup": flows_started - started, "harvest": harvest_done - flows_started,
                              "sweep": sweep_done - harvest_done, "results": result.results}), flush=True)
"""


def harvest_tokens(train_tokens: int) -> int:
    """Tokens to harvest: enough whole contexts that no SAE sees a row twice, plus the held-out ones."""
    body = CONTEXT - 2  # a BOS per context, and about one EOS between documents, are not trained on
    return CONTEXT * (-(-train_tokens // body) + 3 * EVAL_CONTEXTS)


def sweep_spec(root: str, train_tokens: int, batch: int, warmup_steps: int, model: str = "smollm2-135m",
               hookpoint: str = HOOKPOINT, context: int = CONTEXT, num_tokens: int | None = None):
    """The saeflow side: harvest spec + the 8-point grid, splice evaluation off (sparsify has none),
    AuxK's dead window at 10M tokens so it stays off as in sparsify's default (auxk_alpha 0)."""
    from flows.specs import HarvestSpec, SweepSpec

    harvest = HarvestSpec(model=model, hookpoints=[hookpoint], source="builtin:pydoc", context_length=context,
                          num_tokens=num_tokens or harvest_tokens(train_tokens), root=root)
    return SweepSpec(name="bench-vs-sparsify", harvest_spec=harvest, hookpoint=hookpoint, architectures=["topk"],
                     expansion_factors=[float(e) for e in EXPANSIONS], ks=KS, lrs=LRS, train_tokens=train_tokens,
                     batch_size=batch, warmup_steps=warmup_steps, eval_contexts=EVAL_CONTEXTS, splice_contexts=0,
                     dead_window_tokens=10_000_000, root=root, wandb_mode="disabled")


def run_saeflow(spec, base: Path) -> dict:
    """Wall time of one fresh saeflow process (harvest flow + sweep flow), its phases, and EV per point."""
    import pandas as pd

    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(base / "prefect-home"), "SAEFLOW_PROGRESS": "0"}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRIVER, spec.model_dump_json()], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - started
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"saeflow run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    phases = json.loads(line.removeprefix("RESULT "))
    frame = pd.read_parquet(phases.pop("results"))
    points = {(int(r.expansion_factor), int(r.k), float(r.lr)): {"ev": r.explained_variance, "l0": r.l0}
              for r in frame.itertuples()}
    return {"seconds": wall, **phases, "points": points}


def sparsify_inputs(spec, base: Path) -> dict:
    """Untimed: harvest once with the saeflow side's spec; save its training contexts (shuffled, as
    sparsify's CLI shuffles its dataset), the special token ids and the held-out activations."""
    import torch

    from infra.activations.split import split_eval
    from infra.activations.store import activations_numpy, open_activations, read_tokens_table
    from infra.harvest.plan import harvest_in_process, plan_harvest
    from infra.lm.tokens import TokenSpec

    hs = spec.harvest_spec
    tokens = TokenSpec(source=hs.source, tokenizer=hs.model, context_length=hs.context_length, num_tokens=hs.num_tokens)
    job = plan_harvest(hs.model, [spec.hookpoint], tokens, str(base / "prep"), dtype=hs.dtype)
    harvest_in_process(job)
    _, held_out = split_eval(job.harvest, spec.eval_contexts)
    table = read_tokens_table(job.harvest)
    ids_NS = table.column("token_id").to_numpy().reshape(-1, hs.context_length)
    special = table.column("special").to_numpy(zero_copy_only=False)
    held_N = np.isin(np.arange(len(ids_NS)), held_out.ids)
    train_ids_NS = ids_NS[~held_N][np.random.default_rng(42).permutation(int((~held_N).sum()))]
    np.savez(base / "tokens.npz", train_ids_NS=train_ids_NS)
    acts = open_activations(job.harvest, spec.hookpoint).to_table()
    keep = np.isin(acts.column("seq_id").to_numpy(), held_out.ids) & ~acts.column("special").to_numpy(zero_copy_only=False)
    torch.save(torch.from_numpy(activations_numpy(acts)[keep].astype(np.float32)), base / "held_out.pt")
    return {"tokens_path": str(base / "tokens.npz"), "held_out_path": str(base / "held_out.pt"),
            "exclude_tokens": sorted({int(t) for t in table.column("token_id").to_numpy()[special]}),
            "train_contexts": len(train_ids_NS), "held_out_rows": int(keep.sum())}


def run_sparsify(python: str, inputs: dict, model_dir: str, train_tokens: int, batch: int, warmup_steps: int,
                 base: Path) -> dict:
    """The 8 SAEs one by one, each a fresh sparsify process; wall time of each and in all."""
    env = dict(os.environ, PYTHONPATH=str(REPO), SPARSIFY_DISABLE_TRITON="1")
    points, total = {}, 0.0
    for expansion in EXPANSIONS:
        for k in KS:
            for lr in LRS:
                kwargs = dict(model_dir=model_dir, tokens_path=inputs["tokens_path"], hookpoint=SPARSIFY_HOOKPOINT,
                              expansion=expansion, k=k, lr=lr, batch_contexts=batch // CONTEXT, steps=train_tokens // batch,
                              warmup_steps=warmup_steps, exclude_tokens=inputs["exclude_tokens"],
                              save_dir=str(base / f"sparsify-{expansion}-{k}-{lr}"), held_out_path=inputs["held_out_path"])
                started = time.perf_counter()
                done = subprocess.run([python, "-m", "bench.sweep_vs_sparsify_runs", json.dumps(kwargs)], cwd=REPO,
                                      env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"sparsify run {expansion}x k={k} lr={lr} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                total += result["seconds"]  # to the end of fit: the process's untimed scoring is left out
                result["process_seconds"] = time.perf_counter() - started
                points[(expansion, k, lr)] = result
    return {"seconds": total, "points": points}


def load() -> str:
    """The 1-minute load average, for the record."""
    return f"{os.getloadavg()[0]:.1f}"


def table(runs: list[dict]) -> list[str]:
    """Markdown rows: one per (repeat, side), then the per-SAE quality of the first repeat."""
    lines = ["| repeat | side | wall s | per SAE s | harvest s | sweep s | start-up s | load before / after |",
             "|---" * 8 + "|"]
    for run in runs:
        phases = [f"{run[key]:.1f}" if key in run else "-" for key in ("harvest", "sweep", "startup")]
        lines.append(f"| {run['repeat']} | {run['side']} | {run['seconds']:.1f} | {run['seconds'] / len(run['points']):.1f} | "
                     + " | ".join(phases) + f" | {run['load']} |")
    by_side = {}
    for run in runs:
        by_side.setdefault(run["side"], []).append(run)
    if {"saeflow", "sparsify"} <= by_side.keys():
        ratios = [s["seconds"] / f["seconds"] for f, s in zip(by_side["saeflow"], by_side["sparsify"], strict=False)]
        lines.append(f"\nsparsify wall / saeflow wall, each repeat: {', '.join(f'**{r:.2f}x**' for r in ratios)}")
    lines += ["", "| expansion | k | lr | EV saeflow / sparsify | L0 saeflow / sparsify | sparsify fit s (of process s) |",
              "|---" * 6 + "|"]
    ours = by_side.get("saeflow", [{}])[0].get("points", {})
    theirs = by_side.get("sparsify", [{}])[0].get("points", {})
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        ev = " / ".join("-" if r is None else f"{r['ev']:.3f}" for r in (a, b))
        l0 = " / ".join("-" if r is None else f"{r['l0']:.0f}" for r in (a, b))
        fit = "-" if b is None else f"{b['fit_seconds']:.1f} ({b['seconds']:.1f})"
        lines.append(f"| {key[0]}x | {key[1]} | {key[2]:g} | {ev} | {l0} | {fit} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-tokens", type=int, default=8192, help="training tokens per SAE (both sides)")
    parser.add_argument("--batch", type=int, default=1024, help="tokens per batch (a multiple of the 128-token context)")
    parser.add_argument("--warmup-steps", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sides", nargs="+", default=["saeflow", "sparsify"], choices=["saeflow", "sparsify"])
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    import torch

    from bench.sparsify_compare import SPARSIFY_VERSION, sparsify_python
    from infra.lm.models import packaged_model_dir

    base = Path(tempfile.mkdtemp(prefix="bench-sweep-vs-sparsify-"))
    runs: list[dict] = []
    try:
        model_dir = str(packaged_model_dir())
        spec = sweep_spec(str(base / "unused"), args.train_tokens, args.batch, args.warmup_steps)
        python = str(sparsify_python()) if "sparsify" in args.sides else ""
        inputs = sparsify_inputs(spec, base) if "sparsify" in args.sides else {}
        print(f"# {date.today()} {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
              f"torch {torch.__version__}, sparsify {SPARSIFY_VERSION}")
        print(f"# 8 TopK SAEs, {args.train_tokens:,} training tokens each, batch {args.batch}, {args.warmup_steps} warm-up "
              f"steps, harvest {spec.harvest_spec.num_tokens:,} tokens; {inputs.get('train_contexts', '-')} training contexts "
              f"for sparsify, {inputs.get('held_out_rows', '-')} held-out rows", flush=True)
        for repeat in range(args.repeats):
            for side in args.sides if repeat % 2 == 0 else args.sides[::-1]:
                before = load()
                root = base / f"{side}-{repeat}"
                root.mkdir()
                if side == "saeflow":
                    run = run_saeflow(sweep_spec(str(root), args.train_tokens, args.batch, args.warmup_steps), root)
                else:
                    run = run_sparsify(python, inputs, model_dir, args.train_tokens, args.batch, args.warmup_steps, root)
                run.update(repeat=repeat, side=side, load=f"{before} / {load()}")
                runs.append(run)
                phases = ", ".join(f"{key} {run[key]:.1f} s" for key in ("startup", "harvest", "sweep") if key in run)
                print(f"#   repeat {repeat} {side}: {run['seconds']:.1f} s ({phases or 'one process per SAE'}; load {run['load']})",
                      flush=True)
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("\n".join(table(runs)))
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{**r, "points": {" ".join(map(str, key)): v for key, v in r["points"].items()}} for r in runs], indent=1))


if __name__ == "__main__":
    main()
