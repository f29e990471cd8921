"""Retry policy shared by saeflow's tasks: retry what may heal (storage, network, lost workers),
never what cannot (bad input: a wrong spec or a corrupt artifact fails the same way every time)."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

STORAGE_RETRY = {"retries": 3, "retry_delay_seconds": exponential_backoff(backoff_factor=2), "retry_jitter_factor": 0.5}
"""Task options: 3 retries after ~2, 4, 8 s (jittered)."""


def retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: False for ValueError/KeyError/TypeError (bad specs, bad artifacts)."""
    error = getattr(state, "data", None)
    return not isinstance(error, (ValueError, KeyError, TypeError))
