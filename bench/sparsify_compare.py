"""SAE training throughput and quality: saeflow vs EleutherAI's sparsify (PyPI eai-sparsify), and both
against the encoder floor (the [B, D] x [D, F] encoder product + bias + top-k alone), same batches.

Activations: a saeflow harvest of the packaged SmolLM2-135M (d_in 576, blocks.6.hook_resid_post),
saved once so every run sees the SAME batches in the SAME order (bench/saelens_compare.py's data path).
Cases: TopK k=32 at 8x and 32x, BatchTopK k=32 8x (sparsify has no BatchTopK: saeflow and the floor
only); batch 1,024 and 4,096; fp32 and bf16 autocast; Adam lr 3e-4 constant, no clipping on either
side, equal token budget.

sparsify runs in its own virtualenv (.bench-venvs/sparsify, built here when missing: same torch
version as this interpreter, eai-sparsify from PyPI). Every run is a fresh subprocess, libraries
alternating (order reversed every other repeat); each process gets saeflow's allocator setting
(infra.allocator), so the ratio is the kernels'. Reported: median steady-state tokens/s over the
repeats (warm-up steps untimed), peak RSS, held-out EV and L0, each step as a multiple of the floor.
Run: `.venv/bin/python -m bench.sparsify_compare [--tokens N] [--budget T] [--cases ...] [--batches ...]
[--precisions ...] [--repeats R] [--threads N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import venv
from datetime import date
from pathlib import Path

import torch

from bench.sparsify_runs import CASES

REPO = Path(__file__).resolve().parents[1]
SPARSIFY_VENV = REPO / ".bench-venvs" / "sparsify"
SPARSIFY_VERSION = "1.3.3"


def sparsify_python(root: Path = SPARSIFY_VENV) -> Path:
    """The sparsify virtualenv's interpreter, creating the venv when missing (torch pinned to ours)."""
    python = root / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch.__version__}",
                        f"eai-sparsify=={SPARSIFY_VERSION}"], check=True)
    return python


def activations_file(tokens: int, held_out: int) -> str:
    """Path of the saved {held_out, train} activations, harvested once and kept under artifacts/."""
    path = REPO / "artifacts" / "bench-sparsify" / f"activations-{tokens}-{held_out}.pt"
    if not path.exists():
        from bench.saelens_compare import harvested_activations

        x_ND = harvested_activations(tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"held_out": x_ND[:held_out].clone(), "train": x_ND[held_out:].clone()}, path)
    return str(path)


def in_fresh_process(python: str, **run_kwargs) -> dict:
    """bench.sparsify_runs.run(**run_kwargs) under `python`, in a new process."""
    env = dict(os.environ, PYTHONPATH=str(REPO), SPARSIFY_DISABLE_TRITON="1")
    done = subprocess.run([python, "-m", "bench.sparsify_runs", json.dumps(run_kwargs)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{run_kwargs['library']} run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def runs_for(case: str, libraries: list[str]) -> list[str]:
    """The libraries that can run a case (sparsify has TopK only), floor last."""
    return [lib for lib in libraries if lib != "sparsify" or CASES[case][0] == "topk"]


def summarise(results: list[dict]) -> dict:
    """Median tokens/s over the repeats; EV and L0 of the first (runs are deterministic); max peak RSS."""
    return {"tok_s": statistics.median(r["tok_s"] for r in results), "runs": [r["tok_s"] for r in results],
            "ev": results[0]["ev"], "l0": results[0]["l0"], "rss": max(r["peak_rss_mib"] for r in results)}


def _both(ours: dict | None, theirs: dict | None, key: str, spec: str) -> str:
    """'a / b' of one field for saeflow and sparsify ('-' where a library did not run)."""
    return " / ".join("-" if r is None else format(r[key], spec) for r in (ours, theirs))


def _multiple(floor: dict | None, run: dict | None) -> str:
    """A library's step time as a multiple of the floor's."""
    return "-" if floor is None or run is None else f"{floor['tok_s'] / run['tok_s']:.2f}x"


def table(rows: dict) -> list[str]:
    """Markdown rows: tokens/s, ratio, EV, L0, RSS and floor multiples per case."""
    lines = ["| case | batch | precision | tok/s saeflow / sparsify | saeflow / sparsify | EV saeflow / sparsify "
             "| L0 | peak RSS MiB | floor tok/s | saeflow step / floor | sparsify step / floor |",
             "|---" * 11 + "|"]
    for (case, batch, precision), libs in rows.items():
        ours, theirs, floor = libs.get("saeflow"), libs.get("sparsify"), libs.get("floor")
        ratio = f"**{ours['tok_s'] / theirs['tok_s']:.2f}x**" if ours and theirs else "-"
        floor_cell = "-" if floor is None else f"{floor['tok_s']:,.0f}"
        lines.append(f"| {case} | {batch:,} | {precision} | {_both(ours, theirs, 'tok_s', ',.0f')} | {ratio} "
                     f"| {_both(ours, theirs, 'ev', '.3f')} | {_both(ours, theirs, 'l0', '.0f')} "
                     f"| {_both(ours, theirs, 'rss', ',.0f')} | {floor_cell} | {_multiple(floor, ours)} "
                     f"| {_multiple(floor, theirs)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65_536, help="tokens harvested")
    parser.add_argument("--held-out", type=int, default=4096)
    parser.add_argument("--budget", type=int, default=65_536, help="training tokens per run (equal for all)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each run")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--libraries", nargs="+", default=["saeflow", "sparsify", "floor"],
                        choices=["saeflow", "sparsify", "floor"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    pythons = {"saeflow": sys.executable, "floor": sys.executable}
    if "sparsify" in args.libraries:
        pythons["sparsify"] = str(sparsify_python())
    data_path = activations_file(args.tokens, args.held_out)
    print(f"# {date.today()} {platform.node()} {platform.processor() or platform.machine()} torch {torch.__version__} "
          f"threads {args.threads or torch.get_num_threads()} sparsify {SPARSIFY_VERSION}")
    print(f"# {args.tokens - args.held_out} train rows, {args.held_out} held out, {args.budget:,} training tokens per run, "
          f"{args.warmup} warm-up steps untimed, {args.repeats} repeats, d_in 576", flush=True)
    raw: dict = {}
    for repeat in range(args.repeats):
        for case in args.cases:
            for batch in args.batches:
                for precision in args.precisions:
                    libraries = runs_for(case, args.libraries)
                    for library in libraries if repeat % 2 == 0 else libraries[::-1]:
                        result = in_fresh_process(
                            pythons[library], library=library, case=case, data_path=data_path, batch=batch,
                            steps=args.budget // batch, warmup=args.warmup, bf16=precision == "bf16",
                            threads=args.threads)
                        raw.setdefault((case, batch, precision), {}).setdefault(library, []).append(result)
                        print(f"#   repeat {repeat} {case} {batch} {precision} {library}: {result['tok_s']:,.0f} tok/s "
                              f"EV {result['ev']:.3f}", flush=True)
    rows = {key: {lib: summarise(results) for lib, results in libs.items()} for key, libs in raw.items()}
    print("\n".join(table(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps({" ".join(map(str, key)): value for key, value in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
