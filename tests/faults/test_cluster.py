"""A real multi-node Ray cluster (head + 2 workers on 127.0.0.1), S3 the only shared storage.

The flows run in a driver process joined to the cluster (this process keeps its own local Ray
for the single-node reference runs). Where each item ran comes from run_pool's log line
"<pool>: item i done on node <id>"; each worker node has a custom resource naming it, mapped
to its node id when the cluster starts. Every wait is bounded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from flows.harvest import HarvestSpec
from flows.sweep import SweepSpec, sweep
from infra.activations.store import open_activations
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.storage import filesystem, read_json
from infra.sweep.run import read_results
from tests.infra.tiny_models import build_tiny_model
from tests.ray_cluster import ray_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]
REPO = Path(__file__).resolve().parents[2]
HOOKPOINT = "blocks.1.hook_resid_post"
TIMING = {"group_wall_seconds", "device_seconds"}
LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1"}
PLACED = re.compile(r"^(\S+): item (\d+) done on node (\w+) \(attempt \d+\)$")
DRIVER = """
import dataclasses, json, logging, sys
handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(message)s"))
pool_log = logging.getLogger("infra.ray_pool")
pool_log.setLevel(logging.INFO)
pool_log.addHandler(handler)
from flows.harvest import HarvestSpec, harvest
from flows.sweep import SweepSpec, sweep
flow, spec = (harvest, HarvestSpec) if sys.argv[1] == "harvest" else (sweep, SweepSpec)
print("RESULT", json.dumps(dataclasses.asdict(flow(spec.model_validate_json(sys.argv[2])))), flush=True)
"""


class Driver:
    """A flow run in a driver process joined to the cluster; its output is collected as it comes."""

    def __init__(self, cluster, flow: str, spec) -> None:
        from prefect.settings import PREFECT_API_URL

        env = {**cluster.driver_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, flow, spec.model_dump_json()], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait(self, timeout: float) -> dict[str, str]:
        """The flow's result (its fields); fails with the driver's output when it fails or outlives timeout."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.reader.join(10)
        output = "".join(self.lines)
        result = [line.split(" ", 1)[1].strip() for line in self.lines if line.startswith("RESULT ")]
        assert self.proc.returncode == 0 and result, output[-6000:]
        return json.loads(result[0])

    def placements(self, prefix: str) -> dict[tuple[str, int], str]:
        """{(pool, item): node id} of the items of pools whose name starts with prefix."""
        found = {}
        for line in self.lines:
            match = PLACED.match(line.strip())
            if match and match[1].startswith(prefix):
                found[(match[1], int(match[2]))] = match[3]
        return found


@pytest.fixture
def tiny_model(tmp_path) -> str:
    # A model directory on the one machine's disk: every node reads it; activations and SAEs go to S3 only.
    return str(build_tiny_model("gpt2", tmp_path / "gpt2"))


def s3_root(server, name: str) -> str:
    return f"s3://{server.bucket}/{name}-{uuid.uuid4().hex[:8]}"


def sweep_spec(harvest: str | None, root: str, steps: int, **overrides) -> SweepSpec:
    values = dict(name="cluster", harvest=harvest, hookpoint=HOOKPOINT, architectures=["topk"], expansion_factors=[4.0], ks=[4, 8],
                  lrs=[3e-3], train_tokens=256 * steps, batch_size=256, warmup_steps=10, eval_contexts=8, splice_contexts=0,
                  checkpoint_every=50, shuffle_buffer=2048, max_group_size=1, num_actors=2, root=root, wandb_mode="disabled")
    return SweepSpec(**{**values, **overrides})


def comparable(results_uri: str):
    frame = read_results(results_uri).sort_values("sae_id").reset_index(drop=True)
    return frame.drop(columns=[c for c in frame if c in TIMING or c.endswith("_uri")])


def checkpoints(root: str) -> dict[str, int]:
    """{sae_id: batches_consumed} of every committed checkpoint under an S3 root."""
    fs, path = filesystem(root)
    fs.invalidate_cache()
    found = {}
    for key in fs.glob(f"{path}/checkpoints/*/*/state.json"):
        try:
            found[key.split("/")[-2]] = int(read_json(f"s3://{key}")["extra"]["batches_consumed"])
        except (OSError, ValueError, KeyError):
            continue
    return found


def finished(root: str) -> set[str]:
    fs, path = filesystem(root)
    fs.invalidate_cache()
    return {key.split("/")[-2] for key in fs.glob(f"{path}/saes/*/*/metrics.json")}


def train_and_kill(cluster, spec: SweepSpec, victim: str, timeout: float) -> tuple[dict, dict, dict[str, list[int]], Driver]:
    """Run the sweep (its harvest first) on the cluster; once every group has checkpointed, SIGKILL node `victim`.

    Returns (the flow's result, the checkpoints at the kill, every checkpoint step seen per SAE, the driver)."""
    trainer = Driver(cluster, "sweep", spec)
    seen: dict[str, list[int]] = {}
    at_kill = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and trainer.proc.poll() is None:
        current = checkpoints(spec.root)
        for sae_id, step in current.items():
            if seen.get(sae_id, [None])[-1] != step:
                seen.setdefault(sae_id, []).append(step)
        # Both groups are training and have checkpointed: stop a node now. Each worker node has
        # one CPU and the head none, so two groups training at once are on the two worker nodes.
        if at_kill is None and len(current) == 2 and not finished(spec.root):
            at_kill = dict(current)
            cluster.kill(victim)
        time.sleep(0.3)
    assert at_kill is not None, "".join(trainer.lines)[-4000:]
    return trainer.wait(max(10.0, deadline - time.monotonic())), at_kill, seen, trainer


@pytest.mark.timeout(600)
def test_cluster_spreads_the_work_survives_a_lost_node_and_matches_one_node(s3_env, tiny_model, ray_local):
    """Harvest and sweep on head + 2 worker nodes, a worker node killed mid-sweep; then the same on one node."""
    import pandas as pd

    steps = 600  # long enough that both groups are mid-training when one has just checkpointed
    spec = HarvestSpec(model=tiny_model, hookpoints=[HOOKPOINT], source="builtin:pydoc", context_length=32, num_tokens=32 * 64,
                       contexts_per_shard=16, num_actors=2, dtype="float32", root=s3_root(s3_env, "cluster"))
    started = time.monotonic()
    with ray_cluster(workers=2) as cluster:
        workers = {cluster.node_ids["worker1"], cluster.node_ids["worker2"]}
        # Every server of every node listens on loopback only (IPv4, or IPv4-mapped on an IPv6 socket).
        listening = cluster.listening_addresses()
        assert listening and listening <= LOOPBACK_IPS, listening
        # One driver: the sweep flow runs its harvest_spec first, both on the cluster.
        sweep_on_cluster = sweep_spec(None, spec.root, steps=steps, ray_address=cluster.address,
                                      harvest_spec=spec.model_copy(update={"ray_address": cluster.address}))
        result, at_kill, seen, trainer = train_and_kill(cluster, sweep_on_cluster, "worker2", timeout=420)
        shards, groups = trainer.placements("harvest-"), trainer.placements("sweep-")
    elapsed = time.monotonic() - started
    assert len(shards) == 4 and set(shards.values()) == workers, shards  # both worker nodes harvested, the head none
    fs, path = filesystem(spec.root)
    (manifest,) = fs.glob(f"{path}/activations/*/_manifest.json")
    harvest_uri = "s3://" + manifest.rsplit("/", 1)[0]
    # Both groups finished on the surviving node (the victim's group moved there), each resumed from
    # its checkpoint on S3: the checkpoint steps of every SAE only ever grow.
    assert len(groups) == 2 and set(groups.values()) == {cluster.node_ids["worker1"]}, groups
    for sae_id, steps_seen in seen.items():
        assert steps_seen == sorted(steps_seen), f"{sae_id} restarted from scratch: {steps_seen}"
    results = read_results(result["results"])
    assert len(results) == 2 and (results["status"] == "finished").all() and results["steps"].eq(steps).all()

    # One node: the same harvest in this process, the same sweep on this process's local Ray.
    job = plan_harvest(tiny_model, [HOOKPOINT], TokenSpec(source=BUILTIN_PYDOC, tokenizer=tiny_model, context_length=32, num_tokens=32 * 64),
                       s3_root(s3_env, "single"), dtype="float32", contexts_per_shard=16)
    harvest_in_process(job, device="cpu")
    order = [("seq_id", "ascending"), ("pos", "ascending")]
    cluster_acts = open_activations(harvest_uri, HOOKPOINT).to_table().sort_by(order)
    single_acts = open_activations(job.harvest, HOOKPOINT).to_table().sort_by(order)
    assert cluster_acts.num_rows == 32 * 64
    for column in ("seq_id", "pos", "token_id", "activation"):
        assert cluster_acts[column].equals(single_acts[column]), column
    # Training resumed on another node ends where an uninterrupted one-node run does: nothing lost,
    # nothing trained twice.
    single = sweep(sweep_spec(harvest_uri, s3_root(s3_env, "single"), steps=steps))
    pd.testing.assert_frame_equal(comparable(result["results"]), comparable(single.results), rtol=1e-6)
    print(f"CLUSTER: killed worker2 with checkpoints {at_kill}; cluster part green after {elapsed:.1f}s; checkpoints seen {seen}")
