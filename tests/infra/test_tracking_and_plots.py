"""W&B tracking (offline, and failures swallowed) and the sweep plots."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from infra import tracking
from infra.sweep.plots import pareto_frontier, sweep_plots


def test_offline_run_records_config_history_and_metrics(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    path = tracking.log_grid_point(
        "saeflow-test", "sweep-1", "topk-abc", {"k": 4}, [{"step": 10, "loss": 1.0}, {"step": 20, "loss": 0.5}],
        {"explained_variance": 0.9}, mode="offline", directory=str(tmp_path),
    )
    assert path is not None
    assert list(tmp_path.glob("wandb/offline-run-*")), "an offline run directory was written"


def test_each_artifact_is_logged_once_and_nothing_lands_in_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    marker = str(root / "saes" / "sweep-1" / "topk-abc" / tracking.MARKER_FILE)
    args = ("saeflow-test", "sweep-1", "topk-abc", {"k": 4}, [{"step": 10, "loss": 1.0}], {"explained_variance": 0.9}, None)

    first = tracking.log_once(marker, *args, tracking.run_files_dir(str(root)))
    second = tracking.log_once(marker, *args, tracking.run_files_dir(str(root)))

    assert first is not None and second is None
    assert len(list(root.glob("wandb/offline-run-*"))) == 1
    assert json.loads(Path(marker).read_text())["path"] == first
    assert not list(cwd.iterdir()), "W&B wrote into the current directory"


def test_a_failed_log_writes_no_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "log_grid_point", lambda *a, **k: None)
    marker = tmp_path / tracking.MARKER_FILE
    assert tracking.log_once(str(marker), "p", "g", "n", {}, [], {}, "offline", str(tmp_path)) is None
    assert not marker.exists()


def test_object_store_roots_keep_run_files_in_a_temp_dir(monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    assert tracking.run_files_dir("s3://bucket/root").startswith(tempfile.gettempdir())


def test_online_without_key_falls_back_to_offline(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert tracking.wandb_mode("online") == "offline"
    assert tracking.wandb_mode("disabled") == "disabled"


def test_tracking_failure_never_raises(monkeypatch):
    import wandb

    def broken_init(**kwargs):
        raise ConnectionError("W&B is down")

    monkeypatch.setattr(wandb, "init", broken_init)
    assert tracking.log_grid_point("p", "s", "id", {}, [], {}, mode="offline") is None


def test_pareto_frontier_keeps_only_undominated_points():
    frame = pd.DataFrame({"l0": [5, 10, 20, 8, 30], "explained_variance": [0.5, 0.7, 0.9, 0.6, 0.85]})
    front = pareto_frontier(frame, "l0", "explained_variance")
    assert front["l0"].tolist() == [5, 8, 10, 20]


@pytest.mark.parametrize("with_ce", [True, False])
def test_sweep_plots_are_pngs(with_ce):
    frame = pd.DataFrame(
        {
            "architecture": ["topk", "topk", "relu", "relu"],
            "l0": [4.0, 8.0, 6.0, 12.0],
            "explained_variance": [0.6, 0.8, 0.5, 0.75],
            "device_seconds": [1.0, 1.2, 0.9, 1.1],
        }
    )
    if with_ce:
        frame["ce_loss_recovered"] = [0.7, 0.9, 0.6, 0.85]
        frame["ce_loss_recovered_ci_low"] = frame["ce_loss_recovered"] - 0.05
        frame["ce_loss_recovered_ci_high"] = frame["ce_loss_recovered"] + 0.04  # drawn as error bars
    plots = sweep_plots(frame)
    assert ("l0_vs_ce_loss_recovered.png" in plots) == with_ce
    assert all(png.startswith(b"\x89PNG") for png in plots.values())
