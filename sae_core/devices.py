"""Where tensors go: one rule for every trainer and worker."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
