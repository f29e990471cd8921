"""Prefect tasks: retryable, idempotent units of work that return references, never tensors."""
