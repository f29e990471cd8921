"""The one place for saeflow's quiet/offline process defaults (Prefect, Ray)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Values the environment already holds win; these are only defaults.
QUIET_DEFAULTS = {
    # These machines reach no telemetry endpoint: the analytics heartbeat would fail every run.
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Local Ray is unauthenticated: with this set every Ray process binds 127.0.0.1 only.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A first start migrates a new SQLite database; on 2 busy cores that alone can take ~30 s,
    # beyond Prefect's 20 s default. Waiting longer costs nothing when the server is quick.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def apply_quiet_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set every quiet default that env (os.environ by default) does not set yet; returns env."""
    target = os.environ if env is None else env
    for key, value in QUIET_DEFAULTS.items():
        target.setdefault(key, value)
    return target
