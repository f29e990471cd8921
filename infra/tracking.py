"""Weights & Biases: one run per grid point, grouped by sweep. Offline unless a key is configured,
and a tracking failure never fails training (the results are already in storage)."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None = None) -> str:
    """'disabled' if asked (tests), 'online' only with an API key, else 'offline'."""
    mode = requested or os.environ.get("WANDB_MODE")
    if mode in ("disabled", "offline", "online"):
        return "offline" if mode == "online" and not os.environ.get("WANDB_API_KEY") else mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def log_grid_point(
    project: str, sweep_id: str, sae_id: str, config: dict[str, Any], history: list[dict[str, float]], metrics: dict[str, Any], mode: str | None = None, directory: str | None = None
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
