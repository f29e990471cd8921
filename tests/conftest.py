"""Test-wide settings: nothing reaches the internet, W&B and Prefect analytics stay off."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


import pytest  # noqa: E402 - the environment above must be set before anything imports Ray


@pytest.fixture(scope="session")
def ray_local():
    """One loopback-only local Ray for the whole session, shut down at the end."""
    import ray

    from infra.ray_pool import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()
