"""Prefect progress artifacts fed by infra's pool progress (infra itself never imports Prefect)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact

log = logging.getLogger(__name__)


def progress_artifact(title: str) -> Callable[[float, str], None]:
    """A sink for infra.progress.PoolProgress: keeps one progress artifact of this task run up to date.

    Created at 0% now, so the run's page shows the bar from the start; the description carries
    tokens done/total, tokens/s, ETA and the latest loss. A failed update is logged, never
    raised: progress must not fail the work it describes.
    """
    artifact_id = create_progress_artifact(0.0, description=title)

    def sink(percent: float, description: str) -> None:
        try:
            update_progress_artifact(artifact_id, round(min(percent, 100.0), 2), description=f"{title}: {description}")
        except Exception as error:  # noqa: BLE001 - see above
            log.warning("progress artifact %s not updated: %s", artifact_id, error)

    return sink
