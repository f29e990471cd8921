"""The harvest stage: plan and id (tokens, shards), the Ray worker that runs the model and writes shards."""
