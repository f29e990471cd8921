"""Serve saeflow: a local Prefect server + a process worker + every deployment in deployments/prefect.yaml.

`saeflow serve` starts a Prefect server on http://127.0.0.1:4200 (loopback only), creates the
`saeflow-local` process pool if missing, starts a worker on it, registers the deployments and
keeps running until Ctrl-C or SIGTERM; every process it started is stopped on the way out.
The server's and the worker's output go to $PREFECT_HOME/saeflow-serve/{server,worker}.log
(printed at start, kept after exit, overwritten by the next `saeflow serve`).

Shared server / Prefect Cloud: set PREFECT_API_URL (and PREFECT_API_KEY for Cloud) and run
`saeflow serve --no-server`: no local server is started; the pool, the worker and the
deployments go to that API. `saeflow deploy` only registers the deployments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from infra.quiet_env import apply_quiet_defaults
from saeflow.processes import Managed, prefect_home, wait_healthy

# deployments/ is installed with the packages, so this resolves from a checkout and from a wheel.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_ROOT / "deployments" / "prefect.yaml"
DEFAULT_POOL = "saeflow-local"


def prefect_executable() -> str:
    """The `prefect` CLI of this interpreter's environment (falls back to PATH)."""
    local = Path(sys.executable).parent / "prefect"
    found = str(local) if local.exists() else shutil.which("prefect")
    if not found:
        raise RuntimeError("the `prefect` CLI is not installed next to this Python nor on PATH")
    return found


def child_env(api_url: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours + quiet defaults + the API URL + overrides."""
    env = apply_quiet_defaults(dict(os.environ))
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


def log_path(name: str, env: Mapping[str, str] | None = None) -> Path:
    """Where a served process writes its output: $PREFECT_HOME/saeflow-serve/{name}.log."""
    return prefect_home(env) / "saeflow-serve" / f"{name}.log"


def start_server(host: str = "127.0.0.1", port: int = 4200, env: Mapping[str, str] | None = None,
                 timeout: float = 180.0) -> Managed:
    """Start `prefect server start` on host:port and return it once /api/health answers."""
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"host={host!r}: saeflow serves on loopback only (127.0.0.1)")
    api_url = f"http://{host}:{port}/api"
    server_env = child_env(extra={**(env or {}), "PREFECT_UI_API_URL": api_url})
    server_env.pop("PREFECT_API_URL", None)
    server = Managed([prefect_executable(), "server", "start", "--host", host, "--port", str(port)],
                     server_env, "server", log_path("server", server_env), cwd=PROJECT_ROOT)
    try:
        wait_healthy(api_url, timeout, server)
    except BaseException:
        server.stop()
        raise
    return server


def ensure_pool(pool: str, api_url: str, env: Mapping[str, str] | None = None) -> None:
    """Create the process work pool `pool` unless it exists."""
    prefect, penv = prefect_executable(), child_env(api_url, env)
    found = subprocess.run([prefect, "work-pool", "inspect", pool], env=penv, capture_output=True, text=True,
                           timeout=120, cwd=PROJECT_ROOT)
    if found.returncode == 0:
        return
    made = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=penv,
                          capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
    if made.returncode != 0:
        raise RuntimeError(f"creating work pool {pool!r} failed:\n{made.stdout}\n{made.stderr}")


def create_pool_and_worker(pool: str = DEFAULT_POOL, api_url: str = "http://127.0.0.1:4200/api",
                           env: Mapping[str, str] | None = None, run_once: bool = False) -> Managed:
    """Ensure the process pool exists and start a worker polling it (stop it, or use `with`)."""
    ensure_pool(pool, api_url, env)
    args = [prefect_executable(), "worker", "start", "--pool", pool, "--type", "process"]
    if run_once:
        args.append("--run-once")
    worker_env = child_env(api_url, env)
    return Managed(args, worker_env, "worker", log_path("worker", worker_env), cwd=PROJECT_ROOT)


def deployment_names(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """Names of the deployments declared in a prefect.yaml."""
    config = yaml.safe_load(prefect_file.read_text())
    return [d["name"] for d in config.get("deployments") or []]


def deploy_all(api_url: str, prefect_file: Path = PREFECT_FILE, env: Mapping[str, str] | None = None,
               timeout: float = 300.0) -> list[str]:
    """Register every deployment of `prefect_file` (run from the project root); returns their names."""
    result = subprocess.run(
        [prefect_executable(), "--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all"],
        env=child_env(api_url, env), capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return deployment_names(prefect_file)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # SIGTERM (systemd, docker stop, kill) takes Ctrl-C's path, so the finally blocks stop the children.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Start server + worker, deploy everything, print the UI URL; run until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200, help="Port of the local server (127.0.0.1).")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="Process work pool of the worker.")
    parser.add_argument("--no-server", action="store_true",
                        help="Use the server at PREFECT_API_URL (shared server / Prefect Cloud).")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    server: Managed | None = None
    try:
        if args.no_server:
            api_url = os.environ.get("PREFECT_API_URL")
            if not api_url:
                parser.error("--no-server needs PREFECT_API_URL")
            ui_url = api_url.removesuffix("/api")
        else:
            api_url, ui_url = f"http://127.0.0.1:{args.port}/api", f"http://127.0.0.1:{args.port}"
            server = start_server(port=args.port)
            print(f"server log: {server.log_path}", flush=True)
        with create_pool_and_worker(args.pool, api_url) as worker:
            print(f"worker log: {worker.log_path}", flush=True)
            names = deploy_all(api_url)
            print(f"deployed: {', '.join(names)}")
            print(f"Prefect UI: {ui_url}  (Ctrl-C stops the worker{' and server' if server else ''})", flush=True)
            try:
                while worker.proc.poll() is None:
                    time.sleep(1)
                print(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
            except KeyboardInterrupt:
                print("stopping ...", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
