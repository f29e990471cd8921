"""Training dictionaries on a stream: the group loop with checkpoints, shared by sweeps and diffs."""
