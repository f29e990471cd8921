"""The harvest flow's parameters: which model, hookpoints and tokens, and where the shards go."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flows.specs.fields import (
    RayAddress,
    StorageRoot,
    check_hookpoints,
    check_order,
)


class HarvestSpec(BaseModel):
    """What to harvest, on which tokens, and where to put it."""

    model: str = Field("smollm2-135m", min_length=1, description="Hugging Face id, local model directory, or 'smollm2-135m' (packaged, offline).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit), e.g. 'step3000' for Pythia.")
    hookpoints: list[str] = Field(["blocks.6.hook_resid_post"], min_length=1, description="SAELens-style names, e.g. blocks.6.hook_resid_post.")
    source: str = Field(
        "builtin:pydoc", min_length=1,
        description="Text: file / directory / glob (.txt .jsonl .parquet), 'hf:NAME[:SPLIT]' or 'builtin:pydoc'.",
    )
    tokenizer: str | None = Field(None, description="Model whose tokenizer to use; defaults to the model itself.")
    context_length: int = Field(128, ge=2, description="Tokens per context, BOS included.")
    num_tokens: int = Field(32_768, ge=2, description="Tokens to harvest (whole contexts).")
    seed: int = Field(0, description="Seed of the context shuffle.")
    text_column: str = Field("text", description="Text column / key of .jsonl, .parquet and HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype (Parquet has no bfloat16).")
    root: StorageRoot = "./artifacts"
    num_actors: int = Field(1, ge=1, description="Ray actors (one GPU each where there are GPUs).")
    contexts_per_shard: int = Field(64, ge=1, description="Contexts per Parquet shard.")
    batch_contexts: int = Field(16, ge=1, description="Contexts per forward pass.")
    ray_address: RayAddress = None
    storage_secret: str | None = Field(
        None, description="Prefect Secret block with S3 credentials / endpoint (JSON: AWS_ACCESS_KEY_ID, ...); else the environment."
    )

    _hookpoints = field_validator("hookpoints")(lambda cls, names: check_hookpoints(names))

    @model_validator(mode="after")
    def _whole_context(self) -> HarvestSpec:
        check_order(self, "context_length", "num_tokens", "at least one whole context")
        return self

    def model_ref(self) -> str:
        """model@revision."""
        return f"{self.model}@{self.revision}" if self.revision else self.model
