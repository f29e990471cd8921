"""Wall time of a fully cached sweep re-run, next to the first run, as a researcher runs it.

Each run is a fresh `saeflow sweep` process (Python start-up, imports, an ephemeral Prefect
server, the flow), the second one finding every stage committed in storage: the harvest and
every grid point are answered from storage without starting Ray or training anything.
Issue 7 goal: the cached re-run <= 15 s.

Work: packaged SmolLM2-135M, blocks.6.hook_resid_post, 16,384 pydoc tokens; a grid of TopK
k=32 and ReLU at 8x (4,608 latents), 131,072 training tokens each, held-out evaluation with
CE loss recovered.
Run: `.venv/bin/python -m bench.cached_sweep [--reps N]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

SETTINGS = [
    "harvest_spec.num_tokens=16384",
    "architectures=[topk,relu]",
    "train_tokens=131072",
    "batch_size=1024",
    "warmup_steps=10",
    "checkpoint_every=64",
    "wandb_mode=disabled",
]


def timed_sweep(root: Path) -> float:
    """Seconds for one `saeflow sweep` process to finish."""
    command = [str(Path(sys.executable).with_name("saeflow")), "sweep", "--set", f"root={root}",
               "--set", f"harvest_spec.root={root}"]
    for setting in SETTINGS:
        command += ["--set", setting]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PREFECT_HOME": str(root / "prefect-home")})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="cached re-runs to time")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cached-sweep-"))
    try:
        first = timed_sweep(root)
        reruns = [timed_sweep(root) for _ in range(args.reps)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"# {date.today()} {platform.node()} python {platform.python_version()}")
    print("| run | wall time | ratio to first run |\n|---|---|---|")
    print(f"| first run (harvest + train 2 SAEs + evaluate) | {first:.1f} s | 1.00 |")
    for index, seconds in enumerate(reruns, 1):
        print(f"| cached re-run {index} | {seconds:.1f} s | {seconds / first:.2f} |")


if __name__ == "__main__":
    main()
