"""Storage credentials from a Prefect Secret block, so flows triggered from the UI need no env setup."""

from __future__ import annotations

import os

from prefect.blocks.system import Secret

from infra.storage import STORAGE_ENV_KEYS


def apply_storage_secret(block_name: str | None) -> None:
    """Load a Secret block holding {"AWS_ACCESS_KEY_ID": ..., ...} into this process's environment.

    Only the block's NAME is a flow parameter; values never enter parameters, results, logs or
    artifacts. Ray workers receive them from infra.ray_pool like any other storage variable.
    """
    if not block_name:
        return
    values = Secret.load(block_name).get()
    if not isinstance(values, dict):
        raise ValueError(f"Secret block {block_name!r} must hold a JSON object with keys among {list(STORAGE_ENV_KEYS)}")
    unknown = sorted(set(values) - set(STORAGE_ENV_KEYS))
    if unknown:
        raise ValueError(f"Secret block {block_name!r} has unknown key(s) {unknown}; allowed: {list(STORAGE_ENV_KEYS)}")
    os.environ.update({key: str(value) for key, value in values.items()})
