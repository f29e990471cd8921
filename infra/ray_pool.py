"""Ray: a local, loopback-only runtime by default, and a fault-tolerant pool of shard workers."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm.auto import tqdm

from infra.quiet_env import apply_quiet_defaults
from infra.storage import storage_env

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process: local on 127.0.0.1 unless a cluster address is given."""
    if ray.is_initialized():
        return
    # Local Ray is unauthenticated: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps it on 127.0.0.1.
    apply_quiet_defaults()
    address = address or os.environ.get("SAEFLOW_RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True)


class PoolWorker:
    """Actor shell: applies the driver's storage environment, then builds the real worker.

    Credentials travel as a constructor argument (Ray's object store), not in a runtime_env
    (which Ray records in its state API and logs), so workers of an already running Ray
    still see credentials the flow loaded after Ray started (e.g. from a Prefect Secret).
    """

    def __init__(self, env: dict[str, str], worker_class: type, args: tuple[Any, ...], num_threads: int | None) -> None:
        os.environ.update(env)
        self.worker = worker_class(*args, num_threads=num_threads)

    def call(self, method: str, item: int) -> Any:
        """worker.method(item)."""
        return getattr(self.worker, method)(item)


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
) -> dict[int, Any]:
    """Run worker.method(item) for every item over a pool of actors; returns {item: result}.

    One GPU per actor when the cluster has GPUs, else an even share of the CPUs. An actor that
    dies is restarted by Ray (max_restarts) and its task retried (max_task_retries); if it stays
    dead its item goes back on the queue for another actor, up to max_attempts times. Items must
    be idempotent (shard writes are: a committed shard is returned, not rewritten).
    """
    gpus = gpu_count()
    num_workers = max(1, min(num_workers, len(items) or 1))
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // num_workers)
    options = {"max_restarts": 2, "max_task_retries": 2, "num_gpus": 1 if gpus else 0, "num_cpus": 0 if gpus else cpus}
    remote_class = ray.remote(PoolWorker)
    env = storage_env()

    generation = {"count": 0}

    def spawn(slot: int) -> Any:
        # Unique names: a replacement must not collide with a dying actor of the same slot.
        generation["count"] += 1
        name = f"{name_prefix}-{slot}-{generation['count']}"
        threads = None if gpus else cpus
        return remote_class.options(name=name, **options).remote(env, worker_class, worker_args, threads)

    workers = {slot: spawn(slot) for slot in range(num_workers)}
    # Progress of long work (shards harvested, groups trained) on the driver's terminal/log.
    progress = tqdm(total=len(items), desc=name_prefix, unit="item", mininterval=2.0, disable=None)
    queue, results, attempts = deque(items), {}, dict.fromkeys(items, 0)
    in_flight: dict[Any, tuple[int, int]] = {}
    try:
        while queue or in_flight:
            busy = {slot for slot, _ in in_flight.values()}
            for slot in [s for s in workers if s not in busy]:
                if not queue:
                    break
                item = queue.popleft()
                attempts[item] += 1
                in_flight[workers[slot].call.remote(method, item)] = (slot, item)
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            slot, item = in_flight.pop(ready[0])
            try:
                results[item] = ray.get(ready[0])
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
            progress.update(1)
            if on_result is not None:
                on_result(item, results[item])
    finally:
        progress.close()
        for worker in workers.values():
            ray.kill(worker, no_restart=True)
    return results
