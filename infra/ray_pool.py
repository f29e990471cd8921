"""Ray: a local, loopback-only runtime by default, and a fault-tolerant pool of shard workers."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm.auto import tqdm

from infra.progress import PoolProgress, ProgressBoard, install_board
from infra.quiet_env import apply_quiet_defaults
from infra.storage import storage_env

log = logging.getLogger(__name__)
# Seconds between two polls of the progress board while results are awaited.
POLL_S = 1.0
# Mapped Prefect task runs (one per sweep group) start pools from several threads at once.
_init_lock = threading.Lock()


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process: local on 127.0.0.1 unless a cluster address is given."""
    with _init_lock:
        if not ray.is_initialized():
            _init_ray(address, num_cpus)


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    # Local Ray is unauthenticated: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it on 127.0.0.1.
    apply_quiet_defaults()
    address = address or os.environ.get("SAEFLOW_RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True, **driver_node_ip(address))
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)


def driver_node_ip(address: str) -> dict[str, str]:
    """ray.init's _node_ip_address for a driver joining the cluster at address (host:port)."""
    if address == "auto" or "://" in address:
        return {}  # Ray Client (ray://) or a cluster found by Ray itself: nothing to say
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("127.0.0.1", "localhost"):
        return {"_node_ip_address": "127.0.0.1"}
    # With the multi-node switch off (saeflow's loopback default, read by Ray at import) Ray takes
    # this machine to be 127.0.0.1 and finds no raylet there: name the address on which this machine
    # reaches the cluster's head instead (a UDP connect sends nothing, it only picks the route).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 1))
        return {"_node_ip_address": probe.getsockname()[0]}


class PoolWorker:
    """Actor shell: applies the driver's storage environment, then builds the real worker.

    Credentials travel as a constructor argument (Ray's object store), not in a runtime_env
    (which Ray records in its state API and logs), so workers of an already running Ray
    still see credentials the flow loaded after Ray started (e.g. from a Prefect Secret).
    """

    def __init__(
        self, env: dict[str, str], worker_class: type, args: tuple[Any, ...], num_threads: int | None, board: Any = None
    ) -> None:
        os.environ.update(env)
        install_board(board)  # the worker's ItemReporters send to the driver's board (None: to nobody)
        self.worker = worker_class(*args, num_threads=num_threads)

    def call(self, method: str, item: int) -> tuple[str, Any]:
        """(the Ray node it ran on, worker.method(item)): where work ran is logged by the driver."""
        return ray.get_runtime_context().get_node_id(), getattr(self.worker, method)(item)


def gpu_count() -> int:
    """GPUs Ray can hand out (0 on a CPU machine)."""
    return int(ray.cluster_resources().get("GPU", 0))


def run_pool(
    worker_class: type,
    worker_args: tuple[Any, ...],
    method: str,
    items: Sequence[int],
    num_workers: int,
    name_prefix: str,
    max_attempts: int = 3,
    on_result: Callable[[int, Any], None] | None = None,
    progress: PoolProgress | None = None,
    cpu_share: int | None = None,
) -> dict[int, Any]:
    """Run worker.method(item) for every item over a pool of actors; returns {item: result}.

    One GPU per actor when the cluster has GPUs, else an even share of the CPUs. An actor that
    dies is restarted by Ray (max_restarts) and its task retried (max_task_retries); if it stays
    dead its item goes back on the queue for another actor, up to max_attempts times. Items must
    be idempotent (shard writes are: a committed shard is returned, not rewritten).
    With progress, the workers' ItemReporters are polled and drawn while results are awaited.
    cpu_share: how many such actors the cluster should hold at once (default num_workers); pools
    started side by side (one per mapped task run) pass the total so Ray's CPU accounting, not
    the number of threads, decides how many run together.
    """
    gpus = gpu_count()
    num_workers = max(1, min(num_workers, len(items) or 1))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // (cpu_share or num_workers))
    options = {"max_restarts": 2, "max_task_retries": 2, "num_gpus": 1 if gpus else 0, "num_cpus": 0 if gpus else cpus}
    remote_class = ray.remote(PoolWorker)
    env = storage_env()

    generation = {"count": 0}
    board = None
    if progress is not None:
        # Restartable and CPU-free; a lost board only costs progress reports, never results.
        board = ray.remote(ProgressBoard).options(num_cpus=0, max_restarts=-1).remote()

    def spawn(slot: int) -> Any:
        # Unique names: a replacement must not collide with a dying actor of the same slot.
        generation["count"] += 1
        name = f"{name_prefix}-{slot}-{generation['count']}"
        threads = None if gpus else cpus
        return remote_class.options(name=name, **options).remote(env, worker_class, worker_args, threads, board)

    workers = {slot: spawn(slot) for slot in range(num_workers)}
    # Without finer progress (a PoolProgress), at least the items done, on the driver's terminal.
    counter = tqdm(total=len(items), desc=name_prefix, unit="item", mininterval=2.0, disable=True if progress else None)
    queue, results, attempts = deque(items), {}, dict.fromkeys(items, 0)
    in_flight: dict[Any, tuple[int, int]] = {}
    finished = False
    try:
        while queue or in_flight:
            busy = {slot for slot, _ in in_flight.values()}
            for slot in [s for s in workers if s not in busy]:
                if not queue:
                    break
                item = queue.popleft()
                attempts[item] += 1
                in_flight[workers[slot].call.remote(method, item)] = (slot, item)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S if board is not None else None)
            if not ready:
                _poll(board, progress)
                continue
            slot, item = in_flight.pop(ready[0])
            try:
                node, results[item] = ray.get(ready[0])
            except RayActorError as error:
                if attempts[item] >= max_attempts:
                    raise RuntimeError(f"{name_prefix}: item {item} lost its actor {attempts[item]} times; giving up") from error
                log.warning("%s: actor %d died on item %d (%s); requeueing", name_prefix, slot, item, error)
                ray.kill(workers[slot], no_restart=True)
                workers[slot] = spawn(slot)
                queue.append(item)
                continue
            except RayTaskError as error:
                # A bug or bad input inside the task: retrying elsewhere would fail the same way.
                raise error.as_instanceof_cause() from None
            # One line per item and node: on a cluster, where each item ran (and re-ran) is in the log.
            log.info("%s: item %d done on node %s (attempt %d)", name_prefix, item, node, attempts[item])
            counter.update(1)
            if progress is not None:
                _poll(board, progress)  # the item's last numbers (its loss) before it is marked complete
                progress.complete(item)
            if on_result is not None:
                on_result(item, results[item])
        finished = True
    finally:
        counter.close()
        if progress is not None:
            progress.close(finished)
            ray.kill(board, no_restart=True)
        for worker in workers.values():
            ray.kill(worker, no_restart=True)
    return results


def _poll(board: Any, progress: PoolProgress | None) -> None:
    """One snapshot of the board into progress; a board that is being restarted is skipped."""
    if board is None or progress is None:
        return
    try:
        progress.update(ray.get(board.snapshot.remote(), timeout=10))
    except (RayActorError, ray.exceptions.GetTimeoutError) as error:
        log.debug("progress board unavailable: %s", error)
