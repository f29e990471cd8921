"""Harvest flow: run a language model over text and store its activations at chosen hookpoints.

`python -m flows.harvest` harvests the packaged SmolLM2-135M on Python's own docs, offline.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.harvest import harvest_task, plan_harvest_task, validate_harvest_task


class HarvestSpec(BaseModel):
    """What to harvest, on which tokens, and where to put it."""

    model: str = Field("smollm2-135m", description="Hugging Face id, local model directory, or 'smollm2-135m' (packaged, offline).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit), e.g. 'step3000' for Pythia.")
    hookpoints: list[str] = Field(["blocks.6.hook_resid_post"], min_length=1, description="SAELens-style names, e.g. blocks.6.hook_resid_post.")
    source: str = Field("builtin:pydoc", description="Text: file / directory / glob (.txt .jsonl .parquet), 'hf:NAME[:SPLIT]' or 'builtin:pydoc'.")
    tokenizer: str | None = Field(None, description="Model whose tokenizer to use; defaults to the model itself.")
    context_length: int = Field(128, ge=2, description="Tokens per context, BOS included.")
    num_tokens: int = Field(32_768, ge=2, description="Tokens to harvest (whole contexts).")
    seed: int = Field(0, description="Seed of the context shuffle.")
    text_column: str = Field("text", description="Text column / key of .jsonl, .parquet and HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype (Parquet has no bfloat16).")
    root: str = Field("./artifacts", description="Storage root: a path, file:// or s3:// URL.")
    num_actors: int = Field(1, ge=1, description="Ray actors (one GPU each where there are GPUs).")
    contexts_per_shard: int = Field(64, ge=1, description="Contexts per Parquet shard.")
    batch_contexts: int = Field(16, ge=1, description="Contexts per forward pass.")
    ray_address: str | None = Field(None, description="Ray cluster address; local loopback-only Ray when empty.")
    storage_secret: str | None = Field(
        None, description="Prefect Secret block with S3 credentials / endpoint (JSON: AWS_ACCESS_KEY_ID, ...); else the environment."
    )

    def model_ref(self) -> str:
        """model@revision."""
        return f"{self.model}@{self.revision}" if self.revision else self.model


@flow(name="harvest", log_prints=True)
def harvest(spec: HarvestSpec = HarvestSpec()) -> str:
    """Plan (validate + tokens) -> harvest on Ray -> validate; returns the harvest folder URI."""
    apply_storage_secret(spec.storage_secret)
    values = spec.model_dump()
    values["model"] = spec.model_ref()
    values["root"] = absolute_root(values["root"])
    job = plan_harvest_task(values)
    summary = harvest_task(job, num_actors=spec.num_actors, ray_address=spec.ray_address)
    checked = validate_harvest_task(job["harvest"])
    print(f"harvest {job['harvest_id']}: {checked['rows']} rows x {len(checked['hookpoints'])} hookpoints, "
          f"{checked['shards']} shards ({'cached' if summary['cached'] else 'harvested'}) -> {job['harvest']}")
    return job["harvest"]


if __name__ == "__main__":
    harvest()
