"""pandera schemas of the steering stage's tables, checked before each table is written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa

from infra.parquet_io import write_parquet_atomic
from infra.schema_errors import describe_schema_error

CONDITIONS = ["add", "clamp", "caa"]
MODES = ["zero", "mean", "resample"]


def finite(column: str) -> pa.Check:
    """Every value of the column is finite."""
    return pa.Check(lambda s: np.isfinite(s.astype(float)).all(), element_wise=False, error=f"{column} is finite")


def generations_schema(prompts: int) -> pa.DataFrameSchema:
    """generations.parquet: one row per prompt and condition."""
    return pa.DataFrameSchema(
        {
            "prompt_index": pa.Column("int32", pa.Check.in_range(0, prompts - 1)),
            "prompt": pa.Column(str),
            "condition": pa.Column(str, pa.Check.isin(CONDITIONS)),
            "description": pa.Column(str),
            "baseline_text": pa.Column(str),
            "steered_text": pa.Column(str),
            "baseline_ids": pa.Column(object),
            "steered_ids": pa.Column(object),
            "changed": pa.Column(bool),
            "kl_next": pa.Column(float, [pa.Check.ge(0 - 1e-6), finite("kl_next")]),
            "top_base": pa.Column(str),
            "top_steered": pa.Column(str),
            "promoted_ids": pa.Column(object),
            "promoted_tokens": pa.Column(object),
            "promoted_deltas": pa.Column(object),
        },
        strict=True, unique=["prompt_index", "condition"], name="steering generations",
    )


def cosines_schema(d_sae: int) -> pa.DataFrameSchema:
    """caa_cosines.parquet: one row per latent."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1), unique=True),
            "cosine": pa.Column("float32", [pa.Check.in_range(-1.0 - 1e-4, 1.0 + 1e-4), finite("cosine")]),
            "rank": pa.Column("int32", pa.Check.in_range(0, d_sae - 1), unique=True),
        },
        strict=True, checks=pa.Check(lambda df: len(df) == d_sae, error=f"one row per latent ({d_sae})"), name="CAA cosines",
    )


def hookpoint_ablation_schema() -> pa.DataFrameSchema:
    """hookpoint_ablation.parquet: one row per ablation mode."""
    return pa.DataFrameSchema(
        {
            "mode": pa.Column(str, pa.Check.isin(MODES), unique=True),
            "ce_clean": pa.Column(float, finite("ce_clean")),
            "ce_ablated": pa.Column(float, finite("ce_ablated")),
            "kl_ablated": pa.Column(float, [pa.Check.ge(-1e-6), finite("kl_ablated")]),
            "ce_spliced": pa.Column(float, nullable=True),
            "ce_loss_recovered": pa.Column(float, nullable=True),
            "n_predictions": pa.Column("int64", pa.Check.ge(1)),
        },
        strict=True, name="hookpoint ablation",
    )


def latent_ablation_schema(d_sae: int) -> pa.DataFrameSchema:
    """latent_ablation.parquet: one row per latent, mode and scored prediction."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1)),
            "mode": pa.Column(str, pa.Check.isin(MODES)),
            "example": pa.Column("int32", pa.Check.ge(0)),
            "pos": pa.Column("int32", pa.Check.ge(0)),
            "target_id": pa.Column("int32", pa.Check.ge(0)),
            "activation": pa.Column("float32", finite("activation")),
            "loss_clean": pa.Column("float32", finite("loss_clean")),
            "loss_ablated": pa.Column("float32", finite("loss_ablated")),
            "delta": pa.Column("float32", finite("delta")),
        },
        strict=True, unique=["latent", "mode", "example", "pos"], name="latent ablation",
    )


def write_table(uri: str, frame: pd.DataFrame, schema: pa.DataFrameSchema) -> str:
    """Validate, then write atomically; a ValueError names the file, the table and the broken rule, and nothing is written."""
    try:
        schema.validate(frame, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"{uri}: {schema.name}: {describe_schema_error(error)}") from error
    write_parquet_atomic(uri, frame)
    return uri
