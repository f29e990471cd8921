"""Diff flow: which features two (or more) checkpoints share, and which are new or gone.

Each checkpoint is harvested on IDENTICAL tokens (the harvest flow, cached), the harvests are
checked row-aligned, a crosscoder is trained on them, and latents are classified by the
relative norm of their per-source decoders (Lindsey et al. 2024).
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from flows.harvest import HarvestSpec, harvest
from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.diff import check_alignment_task, check_models_task, diff_report_task, plan_diff_task, train_crosscoder_task


class DiffSpec(BaseModel):
    """The checkpoints, the shared token spec, the crosscoder and where the diff goes."""

    models: list[str] = Field(..., min_length=1, description="Two or more refs: name@revision or local checkpoint dirs (A first, B last).")
    hookpoint: str = Field("blocks.1.hook_resid_post", description="Hookpoint compared across the checkpoints.")
    source: str = Field("builtin:pydoc", description="Text for the shared token spec (see the harvest flow).")
    context_length: int = Field(64, ge=2, description="Tokens per context.")
    num_tokens: int = Field(65_536, ge=2, description="Tokens harvested per checkpoint.")
    text_column: str = Field("text", description="Text column of .jsonl / .parquet / HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype.")
    architecture: Literal["relu", "batchtopk"] = Field("relu", description="relu (L1 on summed decoder norms) or batchtopk.")
    expansion_factor: float = Field(8.0, gt=0, description="Latents as a multiple of d_model.")
    k: int = Field(32, ge=1, description="k of the BatchTopK crosscoder.")
    sparsity_coefficient: float = Field(1.0, ge=0, description="L1 weight of the relu crosscoder.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    train_tokens: int = Field(1_000_000, ge=1, description="Training tokens.")
    batch_size: int = Field(1024, ge=1, description="Tokens per batch.")
    warmup_steps: int = Field(50, ge=0, description="Learning-rate warm-up steps.")
    eval_contexts: int = Field(32, ge=1, description="Held-out contexts for the diff statistics.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    shuffle_buffer: int = Field(65_536, ge=0, description="Rows in the shuffle buffer.")
    shared_band: tuple[float, float] = Field((0.3, 0.7), description="Relative-norm band of shared latents.")
    exclusive_margin: float = Field(0.1, ge=0, le=0.5, description="Relative norm below which a latent is A-only (above 1 - it: B-only).")
    seed: int = Field(0, description="Seed of tokens, stream and initialisation.")
    root: str = Field("./artifacts", description="Storage root: a path, file:// or s3:// URL.")
    num_actors: int = Field(1, ge=1, description="Harvest actors per checkpoint.")
    ray_address: str | None = Field(None, description="Ray cluster address; local loopback-only Ray when empty.")
    storage_secret: str | None = Field(None, description="Prefect Secret block with S3 credentials; else the environment.")
    wandb_project: str = Field("saeflow", description="W&B project.")
    wandb_mode: str | None = Field(None, description="online / offline / disabled; offline unless WANDB_API_KEY is set.")


@flow(name="diff", log_prints=True)
def diff(spec: DiffSpec) -> str:
    """Check models -> harvest each on identical tokens -> check alignment -> crosscoder -> report."""
    apply_storage_secret(spec.storage_secret)
    values = spec.model_dump()
    values["root"] = absolute_root(spec.root)
    d_model = check_models_task(spec.models, spec.hookpoint)
    harvests = [
        harvest(HarvestSpec(model=model, tokenizer=spec.models[0], hookpoints=[spec.hookpoint], source=spec.source,
                            context_length=spec.context_length, num_tokens=spec.num_tokens, seed=spec.seed,
                            text_column=spec.text_column, dtype=spec.dtype, root=values["root"], num_actors=spec.num_actors,
                            ray_address=spec.ray_address))
        for model in spec.models
    ]
    check_alignment_task(harvests, spec.hookpoint)
    plan = plan_diff_task(values, harvests, d_model)
    summary = train_crosscoder_task(plan, spec.ray_address)
    report = diff_report_task(plan, summary, spec.wandb_project, spec.wandb_mode)
    counts = summary["counts"]
    print(f"diff {plan['diff_id']}: {counts['shared']} shared, {counts['a_only']} A-only, {counts['b_only']} B-only latents; report {report}")
    return report
