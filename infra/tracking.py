"""Weights & Biases: one run per grid point, grouped by sweep. Offline unless a key is configured,
and a tracking failure never fails training (the results are already in storage).

Each artifact is logged once: a marker (wandb.json) next to it in storage records the run and is
written after logging, so a cached re-run of a flow skips it. W&B's own run files go under the
storage root (local roots) or a temp dir (object stores), never the current directory.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

from infra.storage import exists, filesystem, read_json, write_json_atomic

log = logging.getLogger(__name__)
MARKER_FILE = "wandb.json"
"""Next to a logged artifact: {project, run, mode, path}. Delete it to log the artifact again."""


def wandb_mode(requested: str | None = None) -> str:
    """'disabled' if asked (tests), 'online' only with an API key, else 'offline'."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("disabled", "offline", "online"):
        return "offline" if mode == "online" and not os.environ.get("WANDB_API_KEY") else mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def log_grid_point(
    project: str, sweep_id: str, sae_id: str, config: dict[str, Any], history: list[dict[str, float]], metrics: dict[str, Any],
    mode: str | None = None, directory: str | None = None,
) -> str | None:
    """Log one SAE's config, loss curves and final metrics; returns the run's path, or None if skipped/failed."""
    mode = wandb_mode(mode)
    if mode == "disabled":
        return None
    try:
        import wandb

        run = wandb.init(
            project=project, group=sweep_id, name=sae_id, id=sae_id, config=config, mode=mode, dir=directory, reinit="create_new", resume="allow"
        )
        for row in history:
            step = int(row["step"])
            run.log({f"train/{k}": v for k, v in row.items() if k != "step"}, step=step)
        run.summary.update({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        path = run.dir
        run.finish()
        return path
    except Exception as error:  # noqa: BLE001 - tracking must never fail a finished training run
        log.warning("W&B logging of %s failed (%s); results are in storage regardless", sae_id, error)
        return None


def run_files_dir(root: str) -> str:
    """Where W&B writes its run files: $WANDB_DIR if set, a local storage root, else a temp dir."""
    if os.environ.get("WANDB_DIR"):
        return os.environ["WANDB_DIR"]
    if "://" not in root or root.startswith("file://"):
        directory = filesystem(root)[1]  # W&B adds its own wandb/ folder under it
    else:
        directory = os.path.join(tempfile.gettempdir(), "saeflow-wandb")
    os.makedirs(directory, exist_ok=True)
    return directory


def log_once(marker_uri: str, project: str, group: str, name: str, config: dict[str, Any], history: list[dict[str, float]],
             metrics: dict[str, Any], mode: str | None, directory: str) -> str | None:
    """log_grid_point unless marker_uri records a run in this project; returns the new run's path or None."""
    if exists(marker_uri) and read_json(marker_uri).get("project") == project:
        return None
    path = log_grid_point(project, group, name, config, history, metrics, mode, directory)
    if path is not None:  # disabled or failed: no marker, so a later run logs it
        write_json_atomic(marker_uri, {"project": project, "run": name, "group": group, "mode": wandb_mode(mode), "path": path})
    return path
