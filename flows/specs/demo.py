"""The two demos' budget knobs: the offline end-to-end demo and the synthetic known-answer demo."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flows.specs.fields import (
    ARCHITECTURES,
    Architecture,
)


class SyntheticDemoSpec(BaseModel):
    """What to train: the synthetic feature set, the SAE grid and the training budget."""

    d: int = Field(64, ge=2, description="Dimension of the synthetic activation space.")
    num_features: int = Field(128, ge=1, description="True features (more than d: superposition).")
    firing_probability: float = Field(0.03, gt=0, le=1, description="Chance each feature is active on a token.")
    architectures: list[Architecture] = Field(list(ARCHITECTURES[:5]), min_length=1, description="SAE architectures of the grid.")
    expansion_factors: list[float] = Field([4.0], min_length=1, description="Dictionary sizes as multiples of d.")
    k: int = Field(6, ge=1, description="k of TopK / BatchTopK.")
    sparsity_coefficients: dict[str, float] = Field(
        {"relu": 1.0, "jumprelu": 1.0, "gated": 1.0}, description="L1 / L0 weight per architecture."
    )
    steps: int = Field(1500, ge=1, description="Optimiser steps per SAE.")
    batch_size: int = Field(512, ge=1, description="Tokens per batch.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between resumable checkpoints.")
    seed: int = Field(0, description="Seed of the features, the stream and the SAE initialisation.")
    root: str = Field("./artifacts", description="Storage root: a path, file:// or s3:// URL.")


class DemoSpec(BaseModel):
    """Budget knobs of the demo; defaults finish in a few minutes on 2 CPU cores."""

    root: str = Field("./artifacts", description="Storage root for every stage.")
    harvest_tokens: int = Field(24_576, ge=256, description="Tokens harvested from SmolLM2-135M.")
    hookpoints: list[str] = Field(["blocks.6.hook_resid_post", "blocks.12.hook_resid_post"], min_length=1, description="Hookpoints harvested.")
    sweep_tokens: int = Field(131_072, ge=1024, description="Training tokens per SAE of the sweep.")
    diff_tokens: int = Field(8_192, ge=512, description="Tokens harvested per checkpoint for the diff.")
