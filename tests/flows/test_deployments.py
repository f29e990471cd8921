"""deployments/prefect.yaml end to end: a REAL Prefect server + process worker on 127.0.0.1.

Deploys every deployment with `prefect deploy --all`, checks the nightly schedule, triggers the
synthetic demo through the API the UI uses and lets a worker execute it. Not the session
`prefect_server` fixture: that is an in-process harness, here the worker runs the flow in its
own process from this checkout, as in production.
"""

from __future__ import annotations

import time
from datetime import UTC
from pathlib import Path
from uuid import UUID

import pytest

from saeflow.processes import api_reachable, free_port
from saeflow.serve import create_pool_and_worker, deploy_all, start_server

pytestmark = pytest.mark.e2e

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


@pytest.fixture
def real_server(tmp_path: Path):
    """A `prefect server start` on 127.0.0.1 with its own PREFECT_HOME; stopped at the end."""
    env = {**OFFLINE_ENV, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    port = free_port()
    with start_server(port=port, env=env) as server:
        yield f"http://127.0.0.1:{port}/api", env, server


def wait_final(client, flow_run_id: UUID, worker, timeout: float):
    """Poll the flow run until it is final; fails with the worker's log on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
        time.sleep(2)
    pytest.fail(f"flow run {flow_run_id} not final after {timeout}s (state {run.state_name})\n{worker.log_tail()}")


def wait_scheduled_runs(client, deployment_id: UUID, timeout: float, server) -> list:
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
    pytest.fail(f"the server's scheduler created no run of the nightly sweep in {timeout:.0f} s\n{server.log_tail()}")


def test_deploy_all_then_a_worker_runs_the_demo(real_server, tmp_path: Path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, env, server = real_server
    with create_pool_and_worker("saeflow-local", api_url, env=env) as worker:
        names = deploy_all(api_url, env=env)
        assert sorted(names) == sorted(EXPECTED)

        with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
            deployments = {}
            for name, flow_name in EXPECTED.items():
                deployment = client.read_deployment_by_name(f"{flow_name}/{name}")
                assert deployment.work_pool_name == "saeflow-local"
                deployments[name] = deployment
            # The pull step Prefect inserts: this checkout, so the worker imports flows/*.py from here.
            pull = deployments["synthetic-demo"].pull_steps
            assert pull and pull[0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(
                Path(__file__).resolve().parents[2]
            )
            assert len(deployments["diff"].parameters["spec"]["models"]) == 2

            schedules = client.read_deployment_schedules(deployments["sweep"].id)
            assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in schedules] == [("0 2 * * *", "UTC", True)]
            # The schedule must produce runs, not only exist: the server's scheduler service creates them
            # (with SQLAlchemy 2.1 it failed every loop and the UI's Upcoming tab stayed empty).
            upcoming = wait_scheduled_runs(client, deployments["sweep"].id, SCHEDULER_TIMEOUT_S, server)
            assert all(run.expected_start_time.astimezone(UTC).strftime("%H:%M") == "02:00" for run in upcoming)
            # Keep the nightly sweep out of this worker's way should the test run at 02:00 UTC.
            client.pause_deployment(deployments["sweep"].id)

            root = tmp_path / "artifacts"
            flow_run = client.create_flow_run_from_deployment(
                deployments["synthetic-demo"].id,
                parameters={"spec": {"architectures": ["topk"], "steps": 200, "checkpoint_every": 100, "root": str(root)}},
            )
            final = wait_final(client, flow_run.id, worker, RUN_TIMEOUT_S)
            assert final.state.is_completed(), f"{final.state}\n{worker.log_tail()}"

            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
            )
            markdown = [a for a in artifacts if a.type == "markdown"]
            assert markdown, f"no markdown artifact for flow run {flow_run.id}: {artifacts}"
            assert markdown[0].key == "synthetic-demo-report"

    assert list(root.glob("saes/*/*/cfg.json")), sorted(str(p) for p in root.rglob("*"))
    assert list(root.glob("demo/*/report.md"))


def test_sigterm_stops_saeflow_serve_and_everything_it_started(tmp_path: Path):
    """`kill` (SIGTERM) on `saeflow serve` stops its server and worker, as Ctrl-C does."""
    import os
    import signal
    import subprocess
    import sys

    import psutil

    port = free_port()
    env = {**os.environ, **OFFLINE_ENV, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    serve = subprocess.Popen([sys.executable, "-m", "saeflow", "serve", "--port", str(port)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300
        for line in serve.stdout:  # blocks per line; the deadline bounds a serve that prints and hangs
            lines.append(line)
            if line.startswith("Prefect UI:") or time.monotonic() > deadline:
                break
        assert lines and lines[-1].startswith("Prefect UI:"), "".join(lines)
        assert any(line.startswith("server log: ") for line in lines) and any("worker log: " in line for line in lines)
        children = psutil.Process(serve.pid).children(recursive=True)
        assert api_reachable(f"http://127.0.0.1:{port}/api")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline()[:4] for p in alive if p.is_running()]
    assert not api_reachable(f"http://127.0.0.1:{port}/api")
