"""Adapters between sae_core's math and the outside world: storage, models, schemas, actors, tracking."""
