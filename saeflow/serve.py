"""Serve saeflow: a local Prefect server + a process worker + every deployment in deployments/prefect.yaml.

`python -m flows.serve` starts a Prefect server on http://127.0.0.1:4200 (loopback only), creates
the `saeflow-local` process pool if missing, starts a worker on it, registers the deployments and
keeps running until Ctrl-C; every process it started is stopped on the way out.

Shared server / Prefect Cloud: set PREFECT_API_URL (and PREFECT_API_KEY for Cloud) and run
`python -m flows.serve --no-server`: no local server is started; the pool, the worker and the
deployments go to that API. These functions back the future `saeflow serve` / `saeflow deploy`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = REPO_ROOT / "deployments" / "prefect.yaml"
DEFAULT_POOL = "saeflow-local"
# Nothing started here phones home or binds beyond loopback (see DESIGN.md).
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def prefect_executable() -> str:
    """The `prefect` CLI of this interpreter's environment (falls back to PATH)."""
    local = Path(sys.executable).parent / "prefect"
    found = str(local) if local.exists() else shutil.which("prefect")
    if not found:
        raise RuntimeError("the `prefect` CLI is not installed next to this Python nor on PATH")
    return found


def child_env(api_url: str | None = None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours + quiet defaults + the API URL + overrides."""
    env = dict(os.environ)
    for key, value in QUIET_ENV.items():
        env.setdefault(key, value)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra or {})
    return env


class Managed:
    """A child process in its own session, stopped with its whole process group on exit."""

    def __init__(self, args: list[str], env: Mapping[str, str], name: str, cwd: Path = REPO_ROOT):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"saeflow-{name}-", suffix=".log", delete=False)
        # Output goes to a file, not a pipe: a chatty child never blocks on a full pipe.
        self.proc = subprocess.Popen(args, env=dict(env), cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        """The last characters of the child's output."""
        return Path(self.log.name).read_text(errors="replace")[-chars:]

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit; returns its exit code (raises subprocess.TimeoutExpired)."""
        return self.proc.wait(timeout)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds."""
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # Grandchildren (a flow run's process, Ray) may outlive the leader: kill what is left.
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "Managed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(api_url: str, timeout: float = 120.0, process: Managed | None = None) -> None:
    """Poll `{api_url}/health` until it answers 200; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    tail = process.log_tail() if process is not None else ""
    raise TimeoutError(f"Prefect API {api_url} not healthy after {timeout:.0f}s\n{tail}")


def start_server(host: str = "127.0.0.1", port: int = 4200, env: Mapping[str, str] | None = None,
                 timeout: float = 120.0) -> Managed:
    """Start `prefect server start` on host:port and return it once /api/health answers."""
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"host={host!r}: saeflow serves on loopback only (127.0.0.1)")
    api_url = f"http://{host}:{port}/api"
    server_env = child_env(extra={**(env or {}), "PREFECT_UI_API_URL": api_url})
    server_env.pop("PREFECT_API_URL", None)
    server = Managed([prefect_executable(), "server", "start", "--host", host, "--port", str(port)],
                     server_env, name="server")
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
                           timeout=120, cwd=REPO_ROOT)
    if found.returncode == 0:
        return
    made = subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=penv,
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    if made.returncode != 0:
        raise RuntimeError(f"creating work pool {pool!r} failed:\n{made.stdout}\n{made.stderr}")


def create_pool_and_worker(pool: str = DEFAULT_POOL, api_url: str = "http://127.0.0.1:4200/api",
                           env: Mapping[str, str] | None = None, run_once: bool = False) -> Managed:
    """Ensure the process pool exists and start a worker polling it (stop it, or use `with`)."""
    ensure_pool(pool, api_url, env)
    args = [prefect_executable(), "worker", "start", "--pool", pool, "--type", "process"]
    if run_once:
        args.append("--run-once")
    return Managed(args, child_env(api_url, env), name="worker")


def deployment_names(prefect_file: Path = PREFECT_FILE) -> list[str]:
    """Names of the deployments declared in a prefect.yaml."""
    config = yaml.safe_load(prefect_file.read_text())
    return [d["name"] for d in config.get("deployments") or []]


def deploy_all(api_url: str, prefect_file: Path = PREFECT_FILE, env: Mapping[str, str] | None = None,
               timeout: float = 300.0) -> list[str]:
    """Register every deployment of `prefect_file` (run from the repo root); returns their names."""
    result = subprocess.run(
        [prefect_executable(), "--no-prompt", "deploy", "--prefect-file", str(prefect_file), "--all"],
        env=child_env(api_url, env), capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return deployment_names(prefect_file)


def main(argv: list[str] | None = None) -> None:
    """Start server + worker, deploy everything, print the UI URL; run until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4200, help="Port of the local server (127.0.0.1).")
    parser.add_argument("--pool", default=DEFAULT_POOL, help="Process work pool of the worker.")
    parser.add_argument("--no-server", action="store_true",
                        help="Use the server at PREFECT_API_URL (shared server / Prefect Cloud).")
    args = parser.parse_args(argv)
    server: Managed | None = None
    if args.no_server:
        api_url = os.environ.get("PREFECT_API_URL")
        if not api_url:
            parser.error("--no-server needs PREFECT_API_URL")
        ui_url = api_url.removesuffix("/api")
    else:
        api_url, ui_url = f"http://127.0.0.1:{args.port}/api", f"http://127.0.0.1:{args.port}"
        server = start_server(port=args.port)
    try:
        with create_pool_and_worker(args.pool, api_url) as worker:
            names = deploy_all(api_url)
            print(f"deployed: {', '.join(names)}")
            print(f"Prefect UI: {ui_url}  (Ctrl-C stops the worker{' and server' if server else ''})")
            try:
                while worker.proc.poll() is None:
                    time.sleep(1)
                print(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
            except KeyboardInterrupt:
                pass
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
