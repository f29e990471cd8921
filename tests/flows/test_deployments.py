"""deployments/prefect.yaml end to end through `saeflow serve`: a REAL Prefect server + process worker on 127.0.0.1.

serve starts the server, the pool's worker and `prefect deploy --all`; the test checks every
deployment and the nightly schedule, triggers the synthetic demo through the API the UI uses,
lets the worker execute it, and stops serve with SIGTERM. Not the session `prefect_server`
fixture: that is an in-process harness, here the worker runs the flow in its own process from
this checkout, as in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path
from uuid import UUID

import psutil
import pytest

from saeflow.processes import api_reachable, free_port

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Poll often, so the run is picked up within seconds rather than the default 15 s.
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "5",
    # The server's scheduler creates the nightly runs; let it loop every 2 s instead of every minute.
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
}
SCHEDULER_TIMEOUT_S = 60
EXPECTED = {"synthetic-demo": "synthetic-demo", "saeflow-demo": "saeflow-demo", "harvest": "harvest", "sweep": "sweep", "diff": "diff",
            "features": "features", "steer": "steer"}
RUN_TIMEOUT_S = 240


class Serve:
    """`saeflow serve --port P` in a process of its own, as a researcher starts it; its output is kept."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(tmp_path / "prefect-home")}
        env.pop("PREFECT_API_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "saeflow", "serve", "--port", str(self.port)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []

    def wait_ready(self, timeout: float) -> None:
        """Read its output until the UI line (server up, worker started, every deployment registered)."""
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:  # blocks per line; the deadline bounds a serve that prints and hangs
            self.lines.append(line)
            if line.startswith("Prefect UI:") or time.monotonic() > deadline:
                break
        assert self.lines and self.lines[-1].startswith("Prefect UI:"), "".join(self.lines)

    def log(self, name: str) -> Path:
        """The server's or the worker's log file, as serve printed it."""
        prefix = f"{name} log: "
        (line,) = [line for line in self.lines if line.startswith(prefix)]
        return Path(line.removeprefix(prefix).strip())

    def worker_tail(self) -> str:
        return self.log("worker").read_text()[-4000:]


def wait_final(client, flow_run_id: UUID, serve: Serve, timeout: float):
    """Poll the flow run until it is final; fails with the worker's log on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        if serve.proc.poll() is not None:
            pytest.fail(f"saeflow serve exited with {serve.proc.returncode}:\n{serve.worker_tail()}")
        time.sleep(2)
    pytest.fail(f"flow run {flow_run_id} not final after {timeout}s (state {run.state_name})\n{serve.worker_tail()}")


def wait_scheduled_runs(client, deployment_id: UUID, timeout: float, serve: Serve) -> list:
    """The deployment's SCHEDULED flow runs, once the server's scheduler has created some."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
        )
        if runs:
            return runs
        time.sleep(1)
    server_log = serve.log("server").read_text()[-4000:]
    pytest.fail(f"the server's scheduler created no run of the nightly sweep in {timeout:.0f} s\n{server_log}")


def check_deployments_and_run_the_demo(serve: Serve, root: Path) -> None:
    """Every deployment registered on the pool, the nightly schedule producing runs, and the demo run by the worker."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deployed = [line for line in serve.lines if line.startswith("deployed: ")]
    assert deployed and sorted(deployed[0].removeprefix("deployed: ").strip().split(", ")) == sorted(EXPECTED), serve.lines
    with temporary_settings({PREFECT_API_URL: serve.api_url}), get_client(sync_client=True) as client:
        deployments = {}
        for name, flow_name in EXPECTED.items():
            deployment = client.read_deployment_by_name(f"{flow_name}/{name}")
            assert deployment.work_pool_name == "saeflow-local"
            deployments[name] = deployment
        # The pull step Prefect inserts: this checkout, so the worker imports flows/*.py from here.
        pull = deployments["synthetic-demo"].pull_steps
        assert pull and pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)
        assert len(deployments["diff"].parameters["spec"]["models"]) == 2

        schedules = client.read_deployment_schedules(deployments["sweep"].id)
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in schedules] == [("0 2 * * *", "UTC", True)]
        # The schedule must produce runs, not only exist: the server's scheduler service creates them
        # (with SQLAlchemy 2.1 it failed every loop and the UI's Upcoming tab stayed empty).
        upcoming = wait_scheduled_runs(client, deployments["sweep"].id, SCHEDULER_TIMEOUT_S, serve)
        assert all(run.expected_start_time.astimezone(UTC).strftime("%H:%M") == "02:00" for run in upcoming)
        # Keep the nightly sweep out of this worker's way should the test run at 02:00 UTC.
        client.pause_deployment(deployments["sweep"].id)

        flow_run = client.create_flow_run_from_deployment(
            deployments["synthetic-demo"].id,
            parameters={"spec": {"architectures": ["topk"], "steps": 200, "checkpoint_every": 100, "root": str(root)}},
        )
        final = wait_final(client, flow_run.id, serve, RUN_TIMEOUT_S)
        assert final.state.is_completed(), f"{final.state}\n{serve.worker_tail()}"

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
        markdown = [a for a in artifacts if a.type == "markdown"]
        assert markdown, f"no markdown artifact for flow run {flow_run.id}: {artifacts}"
        assert markdown[0].key == "synthetic-demo-report"
    assert list(root.glob("saes/*/*/cfg.json")), sorted(str(p) for p in root.rglob("*"))
    assert list(root.glob("demo/*/report.md"))


def test_serve_deploys_everything_a_worker_runs_the_demo_and_sigterm_stops_it_all(tmp_path: Path):
    """`saeflow serve`, then what the UI does (read deployments, trigger the demo), then `kill` (SIGTERM) as systemd does.

    One serve for both halves: each start of a server, its migrations, a worker and `prefect deploy`
    costs this 2-core machine about 35 s."""
    serve = Serve(tmp_path)
    try:
        serve.wait_ready(300)
        assert serve.log("server").is_file() and serve.log("worker").is_file()
        assert api_reachable(serve.api_url)
        check_deployments_and_run_the_demo(serve, tmp_path / "artifacts")
        children = psutil.Process(serve.proc.pid).children(recursive=True)
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(60) == 0
    finally:
        if serve.proc.poll() is None:  # a failure above: stop serve its own way, then whatever it left
            leftover = psutil.Process(serve.proc.pid).children(recursive=True)
            serve.proc.send_signal(signal.SIGTERM)
            try:
                serve.proc.wait(60)
            except subprocess.TimeoutExpired:
                serve.proc.kill()
            for proc in psutil.wait_procs(leftover, timeout=20)[1]:
                proc.kill()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline()[:4] for p in alive if p.is_running()]
    assert not api_reachable(serve.api_url)
