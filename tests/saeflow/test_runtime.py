"""Running flows from a terminal as a newcomer does: a fresh machine, and Ctrl-C.

Both start real processes (the `saeflow` CLI, its temporary Prefect API, local Ray) and are
bounded in time; they are the checks that CI's warm home directory would otherwise hide.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.infra.tiny_models import build_tiny_model

pytestmark = pytest.mark.e2e
HOOKPOINT = "blocks.1.hook_resid_post"


def cli_env(tmp_path: Path) -> dict[str, str]:
    """This environment with HOME and PREFECT_HOME empty and no Prefect API configured."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    for name in ("home", "prefect-home"):
        (tmp_path / name).mkdir()
    env.update(HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect-home"), WANDB_MODE="disabled")
    return env


def test_first_run_on_an_empty_home(tmp_path: Path):
    """A first flow run migrates a fresh Prefect database and still succeeds (it timed out at 20 s before)."""
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-m", "saeflow", "synthetic-demo", "--set", "architectures=[topk]", "--set", "steps=60",
         "--set", "checkpoint_every=30", "--set", f"root={root}"],
        env=cli_env(tmp_path), capture_output=True, text=True, timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = [line for line in done.stdout.splitlines() if line.startswith("report: ")]
    assert report and Path(report[-1].removeprefix("report: ")).exists(), done.stdout
    assert (tmp_path / "prefect-home" / "prefect.db").exists()  # the run really used the empty home


def test_ctrl_c_on_a_harvest_exits_in_seconds(tmp_path: Path):
    """SIGINT to the terminal's whole process group -> exit 130 with a resume hint, nothing left running."""
    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    root = tmp_path / "root"
    argv = [sys.executable, "-m", "saeflow", "harvest", "--set", f"model={model}", "--set", f"hookpoints=[{HOOKPOINT}]",
            "--set", "context_length=32", "--set", f"num_tokens={32 * 4000}", "--set", "contexts_per_shard=2",
            "--set", "dtype=float32", "--set", f"root={root}"]
    proc = subprocess.Popen(argv, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        deadline = time.monotonic() + 300
        while not list(root.glob("activations/*/_shards/part-*.json")):  # Ray actors are writing shards
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no shard was written in 300 s"
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-2000:] + err[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s to stop"
    assert "interrupted" in err and "run the same command again" in err, err[-2000:]
    assert "ConnectError" not in err, err[-3000:]
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline()[:3] for p in alive if p.is_running()]
