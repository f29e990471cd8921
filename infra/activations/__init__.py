"""Stored activations: the harvest layout and manifest (store), the training stream, row alignment, schemas."""
