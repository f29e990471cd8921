"""Optimisers and schedules: Adam with warm-up and linear decay by default, Muon as an option."""

from __future__ import annotations

import torch
from torch import nn

from sae_core.config import SaeConfig, TrainConfig


def build_optimizers(sae: nn.Module, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """One Adam over every parameter, or Muon over weight matrices plus Adam over the rest."""
    named = [(name, p) for name, p in sae.named_parameters() if p.requires_grad]
    # Fused: one pass over each parameter instead of ~8. On CPU it measured 1.00-1.03x while dense
    # bookkeeping dominated the step; 1.03-1.05x once that was gone (docs/BENCHMARKS.md, issue 20).
    adam_kwargs = {"lr": cfg.lr, "betas": cfg.adam_betas, "fused": True}
    # Muon orthogonalises the updates of 2-D weight matrices only; biases, thresholds and a
    # crosscoder's 3-D per-source weights stay on Adam.
    matrices = [p for name, p in named if name.startswith("W_") and p.ndim == 2]
    if cfg.optimizer == "adam" or not matrices:
        return [torch.optim.Adam([p for _, p in named], **adam_kwargs)]
    vectors = [p for name, p in named if not (name.startswith("W_") and p.ndim == 2)]
    muon = torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    return [muon, torch.optim.Adam(vectors, **adam_kwargs)]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at an optimiser step: linear warm-up, constant, then linear decay to 0."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    decay_steps = int(cfg.decay_fraction * cfg.total_steps)
    decay_start = cfg.total_steps - decay_steps
    if decay_steps == 0 or step < decay_start:
        return cfg.lr
    return cfg.lr * max(0.0, (cfg.total_steps - step) / decay_steps)


def sparsity_scale_at(step: int, sae_cfg: SaeConfig, train_cfg: TrainConfig) -> float:
    """Weight of the sparsity loss: ramps from 0 to 1 over the warm-up fraction of training.

    Starting with a weak penalty lets latents find directions before the L1/L0 term kills
    the ones that have not yet (Anthropic, Apr 2024).
    """
    ramp_steps = int(sae_cfg.sparsity_warmup_fraction * train_cfg.total_steps)
    return 1.0 if ramp_steps == 0 else min(1.0, (step + 1) / ramp_steps)
