"""Wall time of one 8-SAE sweep on a Ray cluster of 1 vs 2 worker nodes (all on this machine).

Each cluster is real (`tests.ray_cluster`: a head without CPUs plus 1-CPU worker nodes, each
`ray start --block` on 127.0.0.1); the sweep runs in a driver process joined to it, under a
temporary Prefect API that is up before the clock starts. Eight groups of one SAE (max_group_size
1), num_actors = the number of worker nodes, so each node trains one group at a time. The
harvest (a tiny GPT-2, 2,560 pydoc tokens) is made once beforehand; every run gets a fresh root
so nothing is cached. On a machine with fewer free cores than nodes the ratio says so.
Run: `.venv/bin/python -m bench.cluster_sweep`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from tests.infra.tiny_models import build_tiny_model
from tests.ray_cluster import ray_cluster

REPO = Path(__file__).resolve().parents[1]
HOOKPOINT = "blocks.1.hook_resid_post"
DRIVER = """
import sys, time
from saeflow.runtime import flow_api
from flows.sweep import SweepSpec, sweep
spec = SweepSpec.model_validate_json(sys.argv[1])
with flow_api():
    started = time.perf_counter()
    sweep(spec)
    print("SECONDS", time.perf_counter() - started, flush=True)
"""


def sweep_spec_json(harvest: str, root: str, address: str, workers: int, steps: int) -> str:
    """The benchmark's sweep: 2 ks x 2 expansion factors x 2 lrs = 8 TopK SAEs, one per group."""
    from flows.specs import SweepSpec

    return SweepSpec(
        name="bench-cluster", harvest=harvest, hookpoint=HOOKPOINT, architectures=["topk"], expansion_factors=[2.0, 4.0], ks=[4, 8],
        lrs=[1e-3, 3e-3], train_tokens=256 * steps, batch_size=256, warmup_steps=10, eval_contexts=8, splice_contexts=0,
        checkpoint_every=100, shuffle_buffer=2048, max_group_size=1, num_actors=workers, root=root, ray_address=address,
        wandb_mode="disabled",
    ).model_dump_json()


def timed_sweep(harvest: str, base: Path, workers: int, steps: int) -> float:
    """Seconds of the sweep flow on a fresh cluster of `workers` worker nodes."""
    with ray_cluster(workers=workers) as cluster:
        root = str(base / f"root-{workers}")
        env = {**cluster.driver_env(), "PYTHONPATH": str(REPO), "PREFECT_HOME": str(base / f"prefect-{workers}"),
               "SAEFLOW_PROGRESS": "0"}
        env.pop("PREFECT_API_URL", None)
        out = subprocess.run([sys.executable, "-c", DRIVER, sweep_spec_json(harvest, root, cluster.address, workers, steps)],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    line = next((x for x in out.stdout.splitlines() if x.startswith("SECONDS ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"sweep on {workers} node(s) failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return float(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per SAE (256 tokens each)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        model = build_tiny_model("gpt2", base / "gpt2")
        spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=32, num_tokens=32 * 80)
        job = plan_harvest(str(model), [HOOKPOINT], spec, str(base / "harvest"), dtype="float32", contexts_per_shard=16)
        harvest_in_process(job, device="cpu")
        seconds = {workers: timed_sweep(job.harvest, base, workers, args.steps) for workers in (1, 2)}
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"# {date.today()} {platform.node()} python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"8 TopK SAEs x {args.steps} steps: 1 worker node {seconds[1]:.1f} s, 2 worker nodes {seconds[2]:.1f} s, "
          f"ratio {seconds[1] / seconds[2]:.2f}x")


if __name__ == "__main__":
    main()
