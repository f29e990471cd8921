"""Prefect flows: compose tasks; parameters are pydantic specs that become forms in the UI."""

from infra.quiet_env import apply_quiet_defaults

# Before Prefect or Ray is imported anywhere: offline, loopback-only, a patient first start.
apply_quiet_defaults()
