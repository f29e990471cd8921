"""One temporary Prefect server (SQLite, 127.0.0.1) for every flow test."""

import pytest
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_server():
    with prefect_test_harness(server_startup_timeout=120):
        yield
