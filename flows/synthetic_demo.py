"""Offline demo: train a small grid of SAEs on synthetic activations with known features.

Runs anywhere with no model, no network and no GPU: `python -m flows.synthetic_demo`.
"""

from __future__ import annotations

from prefect import flow
from pydantic import BaseModel, Field

from infra.storage import absolute_root
from tasks.synthetic import train_synthetic_grid, write_demo_report


class SyntheticDemoSpec(BaseModel):
    """What to train: the synthetic feature set, the SAE grid and the training budget."""

    d: int = Field(64, ge=2, description="Dimension of the synthetic activation space.")
    num_features: int = Field(128, ge=1, description="True features (more than d: superposition).")
    firing_probability: float = Field(0.03, gt=0, le=1, description="Chance each feature is active on a token.")
    architectures: list[str] = Field(["topk", "relu", "batchtopk", "jumprelu", "gated"], min_length=1, description="SAE architectures of the grid.")
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


@flow(name="synthetic-demo", log_prints=True)
def synthetic_demo(spec: SyntheticDemoSpec = SyntheticDemoSpec()) -> str:
    """Train the grid, then write the results table and report; returns the report's URI."""
    values = spec.model_dump()
    values["root"] = absolute_root(values["root"])
    records = train_synthetic_grid(values)
    report_uri = write_demo_report(values, records)
    for record in records:
        print(
            f"{record['sae_id']:<32} L0 {record['l0']:6.2f}  explained variance {record['explained_variance']:.3f}"
            f"  recovery {record['recovery']:.3f}"
        )
    print(f"report: {report_uri}")
    return report_uri


if __name__ == "__main__":
    synthetic_demo()
