"""Test-wide settings: nothing reaches the internet, W&B and Prefect analytics stay off."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


import pytest  # noqa: E402 - the environment above must be set before anything imports Ray


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (SQLite, 127.0.0.1) for every in-process flow test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_local():
    """One loopback-only local Ray for the whole session, shut down at the end."""
    import ray

    from infra.ray_pool import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """The packaged SmolLM2 converted once (GGUF -> safetensors) into the session's own model cache.

    SAEFLOW_MODEL_CACHE points there for the rest of the session, child processes included, so
    the conversion (~27 s on 2 cores) is paid once for every test that loads the model, and no
    test depends on what the developer's home cache holds. Yields (cache root, conversion seconds).
    """
    import time

    from infra.lm.models import packaged_model_dir

    cache_root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAEFLOW_MODEL_CACHE", str(cache_root))
        start = time.perf_counter()
        packaged_model_dir()
        yield cache_root, time.perf_counter() - start


from tests.s3_server import S3Server, s3_server  # noqa: E402,F401 - one session-wide SeaweedFS server

# Variables that could point botocore somewhere else than the test server.
FOREIGN_AWS_ENV = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                    "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:  # noqa: F811
    """Production-style configuration: endpoint + credentials in the environment only."""
    for name in FOREIGN_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server
