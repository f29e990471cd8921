"""Running a flow from a terminal: a temporary Prefect API of saeflow's own, and a Ctrl-C that ends in seconds.

Prefect's ephemeral server is a child in the terminal's process group, so Ctrl-C killed it along
with the flow, and the flow's last state updates then hung ~150 s on its dead socket. Here the
temporary server runs in its own session: Ctrl-C reaches only this process, the flow records
its crash on a live API, and the server is stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from saeflow.processes import Managed, free_port, wait_healthy

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a Ctrl-C'd command
STARTUP_TIMEOUT_S = 180.0  # a first start migrates a fresh SQLite database: ~30 s on 2 busy cores
T = TypeVar("T")


@contextmanager
def flow_api(timeout: float = STARTUP_TIMEOUT_S, while_starting: Callable[[], object] | None = None) -> Iterator[str]:
    """PREFECT_API_URL when one is configured; else a temporary loopback API server for the block.

    while_starting() runs while the server boots (e.g. the flow's imports), so the two overlap.
    """
    import prefect
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if PREFECT_API_URL.value():
        if while_starting is not None:
            while_starting()
        yield PREFECT_API_URL.value()
        return
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log_dir = Path(tempfile.mkdtemp(prefix="saeflow-api-"))
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True),
           # What Prefect's own ephemeral server sets: API only, no UI build, no scheduler services.
           "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    server = Managed([sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
                      "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                      "--log-level", "error", "--lifespan", "on"], env, "temporary Prefect API", log_dir / "server.log")
    try:
        if while_starting is not None:
            while_starting()
        wait_healthy(api_url, timeout, server)
        with temporary_settings({PREFECT_API_URL: api_url}):
            try:
                yield api_url
            finally:
                drain_prefect_clients()
    finally:
        server.stop(grace=10)
        shutil.rmtree(log_dir, ignore_errors=True)


def drain_prefect_clients(timeout: float = 10.0) -> None:
    """Flush Prefect's background log and event senders while their server is still up."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception:  # noqa: BLE001 - best effort: nothing left to lose on the way out
            pass


def ray_running() -> bool:
    """Whether this process is connected to Ray (without importing it)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def shutdown_ray() -> None:
    """Stop the Ray this process started (or joined), so no worker outlives the command."""
    if ray_running():
        sys.modules["ray"].shutdown()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_from_terminal(run: Callable[[], T], label: str, while_starting: Callable[[], object] | None = None) -> T | int:
    """run() under a temporary API; Ctrl-C or SIGTERM -> a one-line note and EXIT_INTERRUPTED in seconds."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    ray_before = ray_running()  # a caller's Ray (a test session, a notebook) is the caller's to stop
    try:
        with flow_api(while_starting=while_starting):
            return run()
    except KeyboardInterrupt:
        print(f"saeflow {label}: interrupted. Finished work is kept in storage: run the same command again to "
              f"resume where it stopped.", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if not ray_before:
            shutdown_ray()
        signal.signal(signal.SIGTERM, previous)
