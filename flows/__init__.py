"""Prefect flows: compose tasks; parameters are pydantic specs that become forms in the UI."""

import os

# saeflow runs offline (these machines reach no telemetry endpoint): without this the ephemeral
# server logs a failed analytics heartbeat each run and every cached re-run pays ~1.4 s for it.
# A value already in the environment still wins.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
