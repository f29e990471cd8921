"""Not code: makes deployments/ (prefect.yaml) install with saeflow, so `saeflow deploy` works from a wheel."""
