"""Schema of the per-feature table every trained dictionary gets (one row per latent)."""

from __future__ import annotations

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from infra.schema_errors import describe_schema_error


def feature_schema(d_sae: int) -> pa.DataFrameSchema:
    """pandera schema of a per-feature table (one row per latent)."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1), unique=True),
            "fire_count": pa.Column("int64", pa.Check.ge(0)),
            "density": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
            "mean_activation": pa.Column(float),
            "max_activation": pa.Column("float32"),
        },
        strict=True,
        checks=pa.Check(lambda df: len(df) == d_sae, error=f"exactly {d_sae} rows (one per latent)"),
        name="feature table",
    )


def validate_features(frame: pd.DataFrame, source: str, d_sae: int) -> pd.DataFrame:
    """Validate a per-feature table before it is written; raises ValueError naming the source and rule."""
    try:
        return feature_schema(d_sae).validate(frame, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"{source}: feature table {describe_schema_error(error)}") from error
