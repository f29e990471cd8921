"""Schema of a sweep's results.parquet: one row per grid point."""

from __future__ import annotations

import pandas as pd
import pandera.errors
import pandera.pandas as pa

from infra.schema_errors import describe_schema_error
from infra.sweep.grid import K_ARCHITECTURES
from sae_core import ARCHITECTURES
from sae_core.config import KINDS


def results_schema() -> pa.DataFrameSchema:
    """pandera schema of a sweep's results.parquet: one row per grid point."""
    fraction = pa.Check.in_range(0.0, 1.0)
    return pa.DataFrameSchema(
        {
            "sae_id": pa.Column(str, unique=True),
            "architecture": pa.Column(str, pa.Check.isin(list(ARCHITECTURES))),
            "kind": pa.Column(str, pa.Check.isin(list(KINDS)), required=False),  # sae, transcoder, skip_transcoder
            "d_sae": pa.Column("int64", pa.Check.gt(0)),
            "expansion_factor": pa.Column(float, pa.Check.gt(0)),
            # Null where the architecture ignores the knob (k: relu/jumprelu/gated; coefficient: the K_ARCHITECTURES).
            "k": pa.Column("Int64", pa.Check.gt(0), nullable=True),
            "sparsity_coefficient": pa.Column(float, pa.Check.ge(0), nullable=True),
            "lr": pa.Column(float, pa.Check.gt(0)),
            "seed": pa.Column("int64"),
            "status": pa.Column(str, pa.Check.isin(["finished", "failed"])),
            # Metrics are empty (NaN) exactly for failed points; the frame-level check below says so.
            "mse": pa.Column(float, pa.Check.ge(0), nullable=True, required=False),
            "explained_variance": pa.Column(float, pa.Check.le(1.0), nullable=True, required=False),
            "l0": pa.Column(float, pa.Check.ge(0), nullable=True, required=False),
            "dead_fraction": pa.Column(float, fraction, nullable=True, required=False),
            # The tokens dead_fraction was measured on: the last min(dead window, trained) training tokens.
            "dead_fraction_tokens": pa.Column(float, pa.Check.ge(1), nullable=True, required=False),
            "dense_fraction": pa.Column(float, fraction, nullable=True, required=False),
            "l2_ratio": pa.Column(float, pa.Check.ge(0), nullable=True, required=False),
            "device_seconds": pa.Column(float, pa.Check.ge(0), nullable=True, required=False),
            "train_tokens": pa.Column("Int64", pa.Check.gt(0), nullable=True, required=False),
            # Training tokens / training rows: above 1 the point saw its data more than once.
            "epochs": pa.Column(float, pa.Check.gt(0), nullable=True),
            "sae_uri": pa.Column(str),
            "features_uri": pa.Column(str),
        },
        strict=False,  # splice metrics and extra reconstruction metrics ride along
        checks=[
            pa.Check(
                lambda df: (df["status"] == "failed") | df.get("explained_variance", pd.Series(float("nan"), index=df.index)).notna(),
                error="every finished point has metrics",
            ),
            pa.Check(
                lambda df: (df["status"] == "failed") | df.get("dead_fraction", pd.Series(float("nan"), index=df.index)).isna()
                | df.get("dead_fraction_tokens", pd.Series(float("nan"), index=df.index)).notna(),
                error="every dead_fraction says how many tokens it was measured on (dead_fraction_tokens)",
            ),
            pa.Check(
                lambda df: df["k"].isna() == ~df["architecture"].isin(K_ARCHITECTURES),
                error="k is set exactly for the points of K_ARCHITECTURES",
            ),
            pa.Check(
                lambda df: df["sparsity_coefficient"].isna() == df["architecture"].isin(K_ARCHITECTURES),
                error="sparsity_coefficient is set exactly for relu/jumprelu/gated points",
            ),
        ],
        name="sweep results",
    )


def validate_results(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Validate a results table; raises ValueError naming the source, column and failing check."""
    try:
        return results_schema().validate(frame, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"{source}: results table {describe_schema_error(error)}") from error
