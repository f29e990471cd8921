"""Where a cached flow run's time goes, and what overlapping the flow import with the server start saves.

Each measurement is a fresh Python process running the model-free synthetic demo (one TopK SAE)
whose result is already committed in storage, so the flow only answers from storage:
- `phases`: import prefect, import the flow, start the temporary Prefect API
  (saeflow.runtime.flow_api), run the cached flow, flush and stop: seconds for each.
- `serial` vs `overlap`: the CLI's path (saeflow.runtime.run_from_terminal) with the flow's
  import after the server is up, or while it boots (what `saeflow` does), alternating in pairs.
Run: `.venv/bin/python -m bench.cached_flow_phases [--pairs 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

SPEC = 'SyntheticDemoSpec(architectures=["topk"], steps=60, checkpoint_every=30, root={root!r})'

PHASES = """
import sys, time
t0 = time.perf_counter()
import prefect
t1 = time.perf_counter()
from saeflow.cli import flow_function
fn = flow_function("synthetic-demo")
t2 = time.perf_counter()
from flows.specs import SyntheticDemoSpec
from saeflow.runtime import flow_api
with flow_api():
    t3 = time.perf_counter()
    fn({spec})
    t4 = time.perf_counter()
t5 = time.perf_counter()
print("PHASES", t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
"""

WHOLE = """
import time
t0 = time.perf_counter()
from flows.specs import SyntheticDemoSpec
from saeflow.cli import flow_function
from saeflow.runtime import run_from_terminal
overlap = {overlap}
run_from_terminal(lambda: flow_function("synthetic-demo")({spec}), "bench",
                  while_starting=(lambda: flow_function("synthetic-demo")) if overlap else None)
print("WHOLE", time.perf_counter() - t0)
"""


def run(code: str) -> list[float]:
    """Run code in a fresh interpreter; the numbers on its last tagged line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    tagged = [line for line in done.stdout.splitlines() if line.startswith(("PHASES", "WHOLE"))]
    if done.returncode != 0 or not tagged:
        raise RuntimeError(f"probe failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return [float(value) for value in tagged[-1].split()[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="serial/overlap pairs (alternating).")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="saeflow-bench-phases-")
    spec = SPEC.format(root=root)
    run(PHASES.format(spec=spec))  # the first run trains and commits; every later one is cached
    names = ("import prefect", "import the flow", "temporary API start", "cached flow", "flush + stop")
    for name, seconds in zip(names, run(PHASES.format(spec=spec))):
        print(f"| {name} | {seconds:.2f} s |")
    serial, overlap = [], []
    for _ in range(args.pairs):
        serial.append(run(WHOLE.format(overlap=False, spec=spec))[0])
        overlap.append(run(WHOLE.format(overlap=True, spec=spec))[0])
        print(f"| pair | {serial[-1]:.2f} s | {overlap[-1]:.2f} s |")
    ratio = statistics.median(overlap) / statistics.median(serial)
    print(f"| median | {statistics.median(serial):.2f} s | {statistics.median(overlap):.2f} s | {ratio:.2f}x |")
    print(f"({time.strftime('%Y-%m-%d')}, {args.pairs} pairs, root {root})")


if __name__ == "__main__":
    main()
