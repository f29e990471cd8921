"""Child processes saeflow supervises (Prefect servers, workers): own session, logs in a known place."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_home(env: Mapping[str, str] | None = None) -> Path:
    """PREFECT_HOME as a child started with env would see it (Prefect's default: ~/.prefect)."""
    value = (env or {}).get("PREFECT_HOME") or os.environ.get("PREFECT_HOME")
    return Path(value).expanduser() if value else Path.home() / ".prefect"


class Managed:
    """A child process in its own session, stopped with its whole process group on exit.

    Its own session keeps a terminal's Ctrl-C away from it: the parent decides when it stops
    (a server killed by the same SIGINT as the flow would leave the flow's last state
    updates hanging on a dead socket). Output goes to `log_path`, never a pipe, so a chatty
    child never blocks.
    """

    def __init__(self, args: list[str], env: Mapping[str, str], name: str, log_path: Path, cwd: Path | None = None):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log_tail(self, chars: int = 4000) -> str:
        """The last characters of the child's output."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit; returns its exit code (raises subprocess.TimeoutExpired)."""
        return self.proc.wait(timeout)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
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
        self._log.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> Managed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(api_url: str, timeout: float = 180.0, process: Managed | None = None) -> None:
    """Poll `{api_url}/health` until it answers 200; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode} (log {process.log_path}):\n"
                               f"{process.log_tail()}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    where = f" (log {process.log_path})" if process is not None else ""
    raise TimeoutError(f"Prefect API {api_url} not healthy after {timeout:.0f}s{where}")


def api_reachable(api_url: str, timeout: float = 3.0) -> bool:
    """Whether a Prefect API answers at api_url right now."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False
