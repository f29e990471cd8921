"""Runnable examples and demo helpers; not part of saeflow's packages."""
