"""A real multi-node Ray cluster on one machine, loopback only, for tests and benchmarks.

    with ray_cluster(workers=2) as cluster:     # head (no CPUs) + 2 worker nodes of 1 CPU each
        run something with ray_address=cluster.address and env=cluster.driver_env()
        cluster.kill("worker1")                 # SIGKILL the node's whole process group

Each node is `ray start --block` in its own session (so killing its process group stops exactly
that node: never `ray stop`, which stops every Ray on the machine), with its own short temp dir
(Ray's unix socket paths must stay short), its own free loopback ports and a custom resource
named after it. The head checks node health every second, so a dead node is noticed in ~3 s.

Loopback only: every node is `--node-ip-address 127.0.0.1`, and Ray's servers then listen on
127.0.0.1 alone (`listening_addresses` lets a test check it). Two Ray rules stand in the way and
NODE_SCRIPT works around both: a worker node refuses to join unless multi-node is switched on
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1), and with it on, `ray start` rewrites 127.0.0.1 to the
machine's outward address (`services.resolve_ip_for_localhost`), where its servers bind 0.0.0.0.
NODE_SCRIPT runs Ray's own `ray start` with that one rewrite disabled. Drivers keep saeflow's
defaults: the switch off, so Ray resolves nothing away from 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 180.0
NODE_ENV_DROP = ("RAY_ADDRESS", "SAEFLOW_RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
MULTI_NODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# `ray start` itself (Ray's click entry point), with 127.0.0.1 kept as given instead of being
# rewritten to the outward address: see the module docstring.
NODE_SCRIPT = """
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""
# One auth mode everywhere (head, workers, drivers): token auth would need a shared token file.
CLUSTER_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
}
NODES_SCRIPT = """
import json, sys, time, ray
deadline = time.monotonic() + float(sys.argv[3])
while True:  # the GCS may answer before the head's raylet has registered: retry, bounded
    try:
        ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", log_to_driver=False)
        break
    except ConnectionError:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print("NODES", json.dumps({n["NodeID"]: sorted(k for k in n["Resources"] if k.startswith("node_")) for n in alive}))
"""


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    """One `ray start --block` process group."""

    name: str
    proc: subprocess.Popen
    temp_dir: str
    log: Path


@dataclass
class RayCluster:
    """A head and worker nodes on 127.0.0.1; node_ids maps each node name to its Ray node id."""

    address: str
    nodes: dict[str, Node] = field(default_factory=dict)
    node_ids: dict[str, str] = field(default_factory=dict)

    def driver_env(self) -> dict[str, str]:
        """Environment of a driver process joining this cluster: saeflow's own default (switch off)."""
        env = {k: v for k, v in os.environ.items() if k not in NODE_ENV_DROP}
        return {**env, **CLUSTER_ENV, MULTI_NODE: "0"}

    def listening_addresses(self) -> set[str]:
        """The IP addresses the cluster's processes (every node's) listen on."""
        addresses = set()
        for node in self.nodes.values():
            for proc in processes_using(node.temp_dir, node.proc.pid):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    addresses |= {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        return addresses

    def kill(self, name: str) -> None:
        """SIGKILL a node's process group (its raylet, workers and agents), as a machine failure would."""
        node = self.nodes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(30)
        kill_using(node.temp_dir)

    def alive_nodes(self, expected: int, timeout: float = START_TIMEOUT_S) -> dict[str, list[str]]:
        """{node id: its node_* resources} of the alive nodes, once `expected` are (bounded)."""
        out = subprocess.run(
            [sys.executable, "-c", NODES_SCRIPT, self.address, str(expected), str(timeout)],
            env=self.driver_env(), capture_output=True, text=True, timeout=timeout + 120,
        )
        line = next((x for x in out.stdout.splitlines() if x.startswith("NODES ")), None)
        if line is None:
            raise RuntimeError(f"could not list the cluster's nodes:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        return json.loads(line[6:])


def processes_using(temp_dir: str, pid: int | None = None) -> list[psutil.Process]:
    """Processes whose command line names temp_dir (Ray daemonizes some of its own), and pid's tree."""
    found = {}
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
    if pid is not None:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            found.update({proc.pid: proc for proc in [root, *root.children(recursive=True)]})
    return list(found.values())


def kill_using(temp_dir: str) -> None:
    """SIGKILL every process whose command line names temp_dir."""
    for proc in processes_using(temp_dir):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()


def node_command(name: str, temp_dir: str, head_address: str | None, gcs_port: int) -> list[str]:
    """The `ray start --block` command of one node, every port picked free on loopback."""
    worker_base = random.randrange(20000, 29000, 50)
    command = [
        sys.executable, "-c", NODE_SCRIPT, "start", "--block", "--node-ip-address", LOOPBACK, "--temp-dir", temp_dir,
        "--num-cpus", "0" if head_address is None else "1", "--object-store-memory", "200000000",
        "--resources", json.dumps({f"node_{name}": 1}), "--disable-usage-stats",
        "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port()),
        "--min-worker-port", str(worker_base), "--max-worker-port", str(worker_base + 49),
    ]
    if head_address is None:
        return [*command, "--head", "--port", str(gcs_port), "--include-dashboard", "false"]
    return [*command, "--address", head_address]


@contextlib.contextmanager
def ray_cluster(workers: int = 2) -> Iterator[RayCluster]:
    """Head + `workers` worker nodes; every node's process group is killed on exit."""
    gcs_port = free_port()
    cluster = RayCluster(address=f"{LOOPBACK}:{gcs_port}")
    env = {**{k: v for k, v in os.environ.items() if k not in NODE_ENV_DROP}, **CLUSTER_ENV}
    # The head needs no multi-node switch; a worker node refuses to join without it.
    node_env = {"head": {**env, MULTI_NODE: "0"}}
    try:
        for index, name in enumerate(["head", *[f"worker{i + 1}" for i in range(workers)]]):
            temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
            log = Path(temp_dir) / "start.log"
            with log.open("w") as out:
                proc = subprocess.Popen(node_command(name, temp_dir, None if index == 0 else cluster.address, gcs_port),
                                        env=node_env.get(name, {**env, MULTI_NODE: "1"}), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            cluster.nodes[name] = Node(name, proc, temp_dir, log)
            if index == 0:
                time.sleep(3)  # the GCS must listen before workers dial it
        time.sleep(2)
        dead = {n.name: n.log.read_text()[-2000:] for n in cluster.nodes.values() if n.proc.poll() is not None}
        if dead:
            raise RuntimeError(f"ray start failed: {dead}")
        nodes = cluster.alive_nodes(workers + 1, timeout=90)
        for node_id, resources in nodes.items():
            for resource in resources:
                cluster.node_ids[resource.removeprefix("node_")] = node_id
        if len(cluster.node_ids) != workers + 1:
            logs = "\n".join(f"--- {n.name}\n{n.log.read_text()[-1500:]}" for n in cluster.nodes.values())
            raise RuntimeError(f"only {sorted(cluster.node_ids)} of {workers + 1} nodes joined:\n{logs}")
        yield cluster
    finally:
        for node in reversed(list(cluster.nodes.values())):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(30)
            kill_using(node.temp_dir)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
