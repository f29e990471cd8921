"""Sweep flow: train, evaluate and compare a grid of SAEs on stored activations.

`python -m flows.sweep` harvests SmolLM2-135M (cached after the first run) and sweeps a small grid.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from pydantic import BaseModel, Field

from flows.harvest import HarvestSpec, harvest
from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.sweep import plan_sweep_task, report_task, track_task, train_groups_task, write_results_task


class SweepSpec(BaseModel):
    """The grid, its data, its budget and where results go."""

    name: str = Field("sweep", description="Readable name; part of the sweep id.")
    harvest: str | None = Field(None, description="URI of a stored harvest; when empty, harvest_spec is run first (cached).")
    harvest_spec: HarvestSpec = Field(default_factory=HarvestSpec, description="Harvest to run when no stored harvest is given.")
    hookpoint: str = Field("blocks.6.hook_resid_post", description="Hookpoint whose activations the SAEs learn.")
    architectures: list[str] = Field(["topk", "relu"], min_length=1, description="relu, topk, batchtopk, jumprelu, gated.")
    expansion_factors: list[float] = Field([8.0], min_length=1, description="Dictionary sizes as multiples of d_model.")
    ks: list[int] = Field([32], min_length=1, description="k values (topk, batchtopk).")
    sparsity_coefficients: list[float] = Field([5.0], min_length=1, description="L1 / L0 weights (relu, jumprelu, gated).")
    lrs: list[float] = Field([3e-4], min_length=1, description="Peak learning rates.")
    seeds: list[int] = Field([0], min_length=1, description="Initialisation seeds.")
    stream_seed: int = Field(
        0, ge=0, description="Seed of the training stream (shard order, shuffle). One per sweep, apart from the init seeds, "
        "so SAEs that differ only in seed saw identical batches; part of every id."
    )
    train_tokens: int = Field(2_000_000, ge=1, description="Training tokens per SAE.")
    batch_size: int = Field(4096, ge=1, description="Tokens per batch.")
    warmup_steps: int = Field(100, ge=0, description="Learning-rate warm-up steps.")
    autocast_bf16: Literal["cuda", "always", "never"] = Field(
        "cuda", description="bf16 autocast of the SAE products: on CUDA, also on CPUs (fast on AVX512-BF16/AMX), or never."
    )
    eval_contexts: int = Field(16, ge=1, description="Held-out contexts (never trained on) for evaluation.")
    splice_contexts: int = Field(8, ge=0, description="Held-out contexts for CE loss recovered / KL (0 skips the model).")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    shuffle_buffer: int = Field(65_536, ge=1, description="Rows in the shuffle buffer mixing shards.")
    max_group_size: int = Field(8, ge=1, description="Most SAEs trained on one shared stream.")
    # From here on: where and how the sweep runs and is logged, never what it computes, so none of
    # these enters an id (nor max_group_size / checkpoint_every: see infra.sweep_grid.NOT_IN_IDS).
    num_actors: int = Field(1, ge=1, description="Training actors (one GPU each where there are GPUs).")
    root: str = Field("./artifacts", description="Storage root: a path, file:// or s3:// URL.")
    ray_address: str | None = Field(None, description="Ray cluster address; local loopback-only Ray when empty.")
    storage_secret: str | None = Field(None, description="Prefect Secret block with S3 credentials; else the environment.")
    wandb_project: str = Field("saeflow", description="W&B project; runs are grouped by sweep id.")
    wandb_mode: str | None = Field(None, description="online / offline / disabled; offline unless WANDB_API_KEY is set.")


@flow(name="sweep", log_prints=True)
def sweep(spec: SweepSpec = SweepSpec()) -> str:
    """Harvest (cached) -> plan grid -> train groups on Ray -> results table -> report -> W&B."""
    apply_storage_secret(spec.storage_secret)
    values = spec.model_dump()
    values["root"] = absolute_root(spec.root)
    harvest_uri = spec.harvest or harvest(spec.harvest_spec.model_copy(update={"root": values["root"]}))
    planned = plan_sweep_task(values, harvest_uri)
    train_groups_task(planned, spec.num_actors, spec.ray_address)
    results_uri = write_results_task(planned)
    report_uri = report_task(planned, results_uri)
    logged = track_task(planned, spec.wandb_project, spec.wandb_mode)
    print(f"sweep {planned['plan']['sweep_id']}: {len(planned['plan']['points'])} SAEs, "
          f"{logged} newly logged to W&B; results {results_uri}; report {report_uri}")
    return report_uri


if __name__ == "__main__":
    sweep()
