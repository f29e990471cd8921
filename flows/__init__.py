"""Prefect flows: compose tasks; parameters are pydantic specs that become forms in the UI."""
