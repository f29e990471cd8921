"""The diff flow's parameters: the checkpoints (or layers), the shared token spec and the crosscoder."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flows.specs.fields import (
    RayAddress,
    StorageRoot,
    StorageSecret,
    WandbModeSetting,
    check_hookpoint,
    check_order,
)


class DiffSpec(BaseModel):
    """The checkpoints, the shared token spec, the crosscoder and where the diff goes."""

    models: list[str] = Field(..., min_length=1, description="Two or more refs: name@revision or local checkpoint dirs (A first, B last); "
                              "or ONE model whose layers (hookpoints) are compared.")
    hookpoint: str = Field("blocks.1.hook_resid_post", description="Hookpoint compared across the checkpoints.")
    hookpoints: list[str] = Field([], description="Cross-layer crosscoder: two or more hookpoints of the one model in models, each a source "
                                                  "(A = the first, B = the last); empty compares the checkpoints at hookpoint.")
    source: str = Field("builtin:pydoc", min_length=1, description="Text for the shared token spec (see the harvest flow).")
    context_length: int = Field(64, ge=2, description="Tokens per context.")
    num_tokens: int = Field(65_536, ge=2, description="Tokens harvested per checkpoint.")
    text_column: str = Field("text", description="Text column of .jsonl / .parquet / HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype.")
    architecture: Literal["relu", "batchtopk"] = Field(
        "batchtopk", description="batchtopk (decoder-norm-weighted batch top-k + AuxK; Minder et al. 2025 find it far less prone to "
                                 "false exclusive latents) or relu (L1 on summed decoder norms, Lindsey et al. 2024).")
    source_normalization: Literal["centred_variance", "mean_norm"] = Field(
        "centred_variance", description="Per-source scaling: centred_variance (each source's variance around its mean = d_model, "
                                        "so every source counts in the loss) or mean_norm (mean norm sqrt(d_model), Lindsey et al.).")
    expansion_factor: float = Field(8.0, gt=0, description="Latents as a multiple of d_model.")
    k: int = Field(32, ge=1, description="k of the BatchTopK crosscoder.")
    sparsity_coefficient: float = Field(1.0, ge=0, description="L1 weight of the relu crosscoder.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    train_tokens: int = Field(1_000_000, ge=1, description="Training tokens.")
    batch_size: int = Field(1024, ge=1, description="Tokens per batch (<= train_tokens).")
    warmup_steps: int = Field(50, ge=0, description="Learning-rate warm-up steps.")
    eval_contexts: int = Field(32, ge=1, description="Held-out contexts for the diff statistics.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    shuffle_buffer: int = Field(65_536, ge=0, description="Rows in the shuffle buffer.")
    shared_band: tuple[float, float] = Field((0.3, 0.7), description="Relative-norm band of shared latents (0 <= low < high <= 1).")
    exclusive_margin: float = Field(0.1, ge=0, le=0.5, description="Relative norm below which a latent is A-only (above 1 - it: B-only).")
    exclusive_ratio: float = Field(0.3, gt=0, le=1, description="Latent scaling: an A-/B-only latent stays exclusive only when both "
                                                                 "beta ratios (other source / own) are below this; else shared or spurious.")
    presence_fraction: float = Field(0.3, gt=0, le=1, description="A latent is present in a checkpoint when its decoder norm there is "
                                                                   ">= this fraction of its largest (first_present_source).")
    seed: int = Field(0, description="Seed of tokens, stream and initialisation.")
    root: StorageRoot = "./artifacts"
    num_actors: int = Field(1, ge=1, description="Harvest actors per checkpoint.")
    ray_address: RayAddress = None
    storage_secret: StorageSecret = None
    wandb_project: str = Field("saeflow", description="W&B project.")
    wandb_mode: WandbModeSetting = None

    _hookpoint = field_validator("hookpoint")(check_hookpoint)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str]) -> list[str]:
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise ValueError(f"model reference(s) {repeated} repeat: each checkpoint once")
        return models

    _hookpoints = field_validator("hookpoints")(lambda cls, names: [check_hookpoint(name) for name in names])

    @model_validator(mode="after")
    def _sources(self) -> DiffSpec:
        if self.hookpoints:
            if len(self.models) != 1:
                raise ValueError(f"hookpoints {self.hookpoints} compare the layers of ONE model, got models {self.models}: "
                                 "compare checkpoints at one hookpoint, or layers of one model")
            if len(self.hookpoints) < 2 or len(set(self.hookpoints)) != len(self.hookpoints):
                raise ValueError(f"hookpoints {self.hookpoints}: a cross-layer diff needs two or more distinct hookpoints")
        elif len(self.models) < 2:
            raise ValueError(f"models {self.models}: a diff needs two or more checkpoints, or one model with two or more hookpoints")
        return self

    @model_validator(mode="after")
    def _sizes(self) -> DiffSpec:
        check_order(self, "context_length", "num_tokens", "at least one whole context")
        check_order(self, "batch_size", "train_tokens", "at least one training step")
        return self

    @field_validator("shared_band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 <= low < high <= 1:
            raise ValueError(f"({low}, {high}) is not a band: 0 <= low < high <= 1")
        return band
