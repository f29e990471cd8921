"""Killing training mid-sweep: a dead training actor, and a SIGKILLed flow process.

Both must end with every grid point trained exactly once, interrupted points resumed from
their group checkpoint (never from scratch), and a valid results table. See
docs/RELIABILITY.md, "Killing training mid-sweep".
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from flows.sweep import SweepSpec, sweep
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.sweep.run import read_results
from tests.infra.tiny_models import build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "ray_local")]
HOOKPOINT = "blocks.1.hook_resid_post"
REPO = Path(__file__).resolve().parents[2]
TOTAL_STEPS = 400
CHECKPOINT_EVERY = 20
# Timing/derived metrics differ between runs by nature; everything else must match.
TIMING_KEYS = {"group_wall_seconds", "device_seconds"}


@pytest.fixture(scope="module")
def stored_harvest(tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("kill_sweep")
    model = build_tiny_model("gpt2", base / "gpt2")
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=32, num_tokens=32 * 80)
    job = plan_harvest(str(model), [HOOKPOINT], spec, str(base / "harvest"), dtype="float32", contexts_per_shard=16)
    harvest_in_process(job, device="cpu")
    return job.harvest


def make_spec(harvest: str, root: Path, **overrides) -> SweepSpec:
    values = {
        "name": "kill",
        "harvest": harvest,
        "hookpoint": HOOKPOINT,
        "architectures": ["topk"],
        "expansion_factors": [4.0],
        "ks": [4, 8],
        "lrs": [3e-3],
        "train_tokens": 256 * TOTAL_STEPS,
        "batch_size": 256,
        "warmup_steps": 10,
        "eval_contexts": 8,
        "splice_contexts": 0,
        "checkpoint_every": CHECKPOINT_EVERY,
        "shuffle_buffer": 2048,
        "root": str(root),
        "wandb_mode": "disabled",
    }
    return SweepSpec(**{**values, **overrides})


def checkpoint_steps(root: Path) -> dict[str, int]:
    """{sae_id: batches_consumed} of every committed checkpoint under root."""
    steps = {}
    for meta in root.glob("checkpoints/*/*/state.json"):
        try:
            steps[meta.parent.name] = int(json.loads(meta.read_text())["extra"]["batches_consumed"])
        except (OSError, ValueError, KeyError):
            continue  # mid-replace; the next poll sees it
    return steps


def finished(root: Path) -> set[str]:
    return {p.parent.name for p in root.glob("saes/*/*/metrics.json")}


class CheckpointWatcher(threading.Thread):
    """Polls checkpoints; records every batches_consumed value seen per point, in order."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.seen, self.stop = root, {}, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for sae_id, step in checkpoint_steps(self.root).items():
                if not self.seen.get(sae_id) or self.seen[sae_id][-1] != step:
                    self.seen.setdefault(sae_id, []).append(step)
            time.sleep(0.01)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metrics_of(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.glob("saes/*/*/metrics.json")}


def assert_same_metrics(resumed: dict[str, dict], reference: dict[str, dict]) -> None:
    assert resumed.keys() == reference.keys()
    for sae_id, metrics in resumed.items():
        assert metrics["steps"] == TOTAL_STEPS
        assert abs(metrics["explained_variance"] - reference[sae_id]["explained_variance"]) < 0.02
        # Training is deterministic on CPU and a checkpoint restores the trainer exactly
        # (weights, Adam moments, step, stream position), so the numbers are identical.
        for key, value in metrics.items():
            if key not in TIMING_KEYS:
                assert value == pytest.approx(reference[sae_id][key], rel=1e-6, abs=1e-9), (sae_id, key)


def assert_history_complete(root: Path) -> None:
    for history in root.glob("saes/*/*/history.json"):
        steps = [entry["step"] for entry in json.loads(history.read_text())]
        assert steps == list(range(50, TOTAL_STEPS + 1, 50)), (history, steps)


@pytest.mark.timeout(300)
def test_killed_training_actor_resumes_from_checkpoint(stored_harvest, tmp_path, ray_local):
    import ray

    reference_root, root = tmp_path / "reference", tmp_path / "killed"
    sweep(make_spec(stored_harvest, reference_root))
    reference = metrics_of(reference_root)
    assert len(reference) == 2

    watcher = CheckpointWatcher(root)
    killed: dict = {}

    def killer() -> None:
        try:
            at = wait_for(lambda: checkpoint_steps(root), 120, "a first checkpoint")
            names = [a["name"] if isinstance(a, dict) else a for a in ray.util.list_named_actors()]
            names = [n for n in names if n.startswith("sweep-")]
            killed.update(names=names, steps=dict(at), finished=finished(root), t=time.monotonic())
            for name in names:
                ray.kill(ray.get_actor(name), no_restart=False)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            killed["error"] = error

    thread = threading.Thread(target=killer, daemon=True)
    watcher.start()
    thread.start()
    started = time.monotonic()
    sweep(make_spec(stored_harvest, root))
    elapsed = time.monotonic() - started
    watcher.stop.set()
    thread.join(5)
    watcher.join(5)
    assert "error" not in killed, killed.get("error")
    assert killed["names"], "no sweep actor was found to kill"
    assert not killed["finished"], "the kill came after training had finished"
    assert 0 < min(killed["steps"].values()) < TOTAL_STEPS
    # Resumed, not restarted: no point's checkpoint ever went backwards after the kill.
    for sae_id, seen in watcher.seen.items():
        assert seen == sorted(seen), (sae_id, seen)
    mtimes = {p: p.stat().st_mtime_ns for p in root.glob("saes/*/*/metrics.json")}
    assert len(mtimes) == 2
    assert_same_metrics(metrics_of(root), reference)
    assert_history_complete(root)
    assert len(read_results(str(next(root.glob("evals/*/results.parquet"))))) == 2
    # Finished points are never trained again: a re-run touches no metrics.json.
    sweep(make_spec(stored_harvest, root))
    assert {p: p.stat().st_mtime_ns for p in root.glob("saes/*/*/metrics.json")} == mtimes
    print(f"KILL actor: killed {killed['names']} at checkpoints {killed['steps']}; sweep took {elapsed:.1f}s; seen {watcher.seen}")


CHILD = """
import sys, ray
from infra.ray_pool import ensure_ray
from flows.sweep import SweepSpec, sweep
ensure_ray()
print("CHILD_GCS", ray.get_runtime_context().gcs_address, flush=True)
sweep(SweepSpec.model_validate_json(sys.argv[1]))
"""


def child_env(ray_tmp: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SAEFLOW_RAY_ADDRESS")}
    from prefect.settings import PREFECT_API_URL

    env.update(
        HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PREFECT_SERVER_ANALYTICS_ENABLED="false",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=ray_tmp,
        PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONPATH=str(REPO),
    )
    return env


def processes_using(ray_tmp: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(ray_tmp in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.timeout(300)
def test_sigkilled_flow_process_restarts_and_resumes(stored_harvest, tmp_path, ray_local):
    root = tmp_path / "root"
    # Groups of one: the first point finishes, the second is killed mid-training.
    spec = make_spec(stored_harvest, root, max_group_size=1)
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's unix socket paths
    started = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, spec.model_dump_json()], cwd=REPO, env=child_env(ray_tmp),
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    try:
        def interrupted() -> dict[str, int] | None:
            assert child.poll() is None, "".join(lines)[-3000:]
            done = finished(root)
            pending = {k: v for k, v in checkpoint_steps(root).items() if k not in done}
            return pending if done and pending else None

        at = wait_for(interrupted, 240, "one finished point and a checkpoint of the other")
        done_before = finished(root)
        ray_pids = [p.pid for p in processes_using(ray_tmp)]
        os.killpg(child.pid, signal.SIGKILL)
        killed_after = time.monotonic() - started
        child.wait(30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(30)
    reader.join(10)
    output = "".join(lines)
    child_gcs = next(line.split()[1] for line in output.splitlines() if line.startswith("CHILD_GCS"))
    assert child_gcs != ray_local.get_runtime_context().gcs_address, "the child attached to the test session's Ray"
    assert ray_pids, "the child's Ray processes were not found"
    # Ray processes the child started may sit outside its process group (Ray daemonizes some);
    # they notice their driver/raylet died and exit. Anything left after that is a leak.
    try:
        wait_for(lambda: not processes_using(ray_tmp), 60, "the child's Ray processes to exit")
    finally:
        for proc in processes_using(ray_tmp):
            if proc.pid in ray_pids:
                proc.kill()
    assert ray_local.is_initialized() and ray_local.cluster_resources().get("CPU") == 2

    assert len(done_before) == 1 and len(at) == 1
    (resumed_id, resumed_from), = at.items()
    assert 0 < resumed_from < TOTAL_STEPS
    done_mtimes = {p: p.stat().st_mtime_ns for p in root.glob("saes/*/*/metrics.json")}
    watcher = CheckpointWatcher(root)
    watcher.start()
    rerun_started = time.monotonic()
    swept = sweep(spec)  # in-process, on the session's Ray
    rerun = time.monotonic() - rerun_started
    watcher.stop.set()
    watcher.join(5)
    for path, stamp in done_mtimes.items():
        assert path.stat().st_mtime_ns == stamp, f"{path.parent.name} was retrained"
    seen = watcher.seen.get(resumed_id, [])
    assert all(step >= resumed_from for step in seen), f"{resumed_id} restarted from scratch: {seen}"
    metrics = metrics_of(root)
    assert len(metrics) == 2 and all(m["steps"] == TOTAL_STEPS for m in metrics.values())
    assert_history_complete(root)
    results = read_results(swept.results)
    assert len(results) == 2 and (results["status"] == "finished").all()
    assert results["steps"].eq(TOTAL_STEPS).all() and results["explained_variance"].gt(0.5).all()
    print(f"KILL flow: SIGKILL at {killed_after:.1f}s, finished {sorted(done_before)}, {resumed_id} resumed from "
          f"{resumed_from}; re-run {rerun:.1f}s; checkpoints seen {seen}")
