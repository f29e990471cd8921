"""Language models: loading (hub, local, packaged), hookpoints, token packing, spliced CE/KL evaluation."""
