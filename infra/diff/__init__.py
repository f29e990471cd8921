"""The diff stage: plan and id, the crosscoder worker, its store, the latent table and report."""
