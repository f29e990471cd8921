"""Schemas of stored activations and the checks that decide whether a harvest can be trusted.

Scalar columns are validated with pandera (types and value ranges that depend on the harvest:
vocabulary, context length, number of contexts); the activation column's Arrow type is checked
against the manifest, and a sample of its values must be finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.parquet as pq

from infra.activation_store import activations_numpy
from infra.storage import filesystem, join
from infra.sweep_grid import K_ARCHITECTURES

SCALAR_COLUMNS = {"seq_id": arrow.int64(), "pos": arrow.int32(), "token_id": arrow.int32(), "special": arrow.bool_()}


class ShardValidationError(ValueError):
    """A stored shard breaks a rule of its harvest's schema; the message names shard and rule."""


def shard_row_schema(num_contexts: int, context_length: int, vocab_size: int) -> pa.DataFrameSchema:
    """pandera schema of a shard's scalar columns for one harvest."""
    return pa.DataFrameSchema(
        {
            "seq_id": pa.Column("int64", pa.Check.in_range(0, num_contexts - 1), nullable=False),
            "pos": pa.Column("int32", pa.Check.in_range(0, context_length - 1), nullable=False),
            "token_id": pa.Column("int32", pa.Check.in_range(0, vocab_size - 1), nullable=False),
            "special": pa.Column("bool", nullable=False),
        },
        strict=True,
        name="activation shard",
    )


def _check_arrow_schema(uri: str, schema: arrow.Schema, d_model: int, dtype: str) -> None:
    for name, expected in SCALAR_COLUMNS.items():
        if name not in schema.names:
            raise ShardValidationError(f"{uri}: missing column {name!r} (has {schema.names})")
        if schema.field(name).type != expected:
            raise ShardValidationError(f"{uri}: column {name!r} has type {schema.field(name).type}, expected {expected}")
    if "activation" not in schema.names:
        raise ShardValidationError(f"{uri}: missing column 'activation' (has {schema.names})")
    act_type = schema.field("activation").type
    if not arrow.types.is_fixed_size_list(act_type):
        raise ShardValidationError(f"{uri}: column 'activation' has type {act_type}, expected fixed_size_list<{dtype}>[{d_model}]")
    if act_type.list_size != d_model:
        raise ShardValidationError(f"{uri}: activation width {act_type.list_size} != d_model {d_model} of the manifest")
    if str(act_type.value_type) != {"float16": "halffloat", "float32": "float"}[dtype]:
        raise ShardValidationError(f"{uri}: activation values are {act_type.value_type}, the manifest says {dtype}")


def validate_shard_file(harvest: str, entry: dict[str, Any], manifest: dict[str, Any], sample_rows: int = 512) -> None:
    """Check one shard file against its manifest entry; raises ShardValidationError."""
    uri = join(harvest, entry["path"])
    fs, path = filesystem(uri)
    try:
        with fs.open(path, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            _check_arrow_schema(uri, parquet.schema_arrow, manifest["d_model"], manifest["dtype"])
            if parquet.metadata.num_rows != entry["rows"]:
                raise ShardValidationError(f"{uri}: has {parquet.metadata.num_rows} rows, the manifest lists {entry['rows']}")
            scalars = parquet.read(columns=list(SCALAR_COLUMNS)).to_pandas()
            sample = parquet.read_row_group(0, columns=["activation"]).slice(0, sample_rows)
    except FileNotFoundError as error:
        raise ShardValidationError(f"{uri}: listed in the manifest but missing") from error
    except (arrow.ArrowInvalid, OSError) as error:
        raise ShardValidationError(f"{uri}: not a readable Parquet file, corrupt or truncated ({error})") from error
    schema = shard_row_schema(manifest["num_contexts"], manifest["context_length"], manifest["vocab_size"])
    try:
        schema.validate(scalars, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ShardValidationError(f"{uri}: {_describe(error)}") from error
    if not np.isfinite(activations_numpy(sample).astype(np.float32)).all():
        raise ShardValidationError(f"{uri}: activation values include NaN or inf (checked the first {sample.num_rows} rows)")


def _describe(error: pandera.errors.SchemaError) -> str:
    cases = error.failure_cases
    if isinstance(cases, str):  # e.g. a missing column: pandera names it as a bare string
        return f"column {cases!r} breaks {error.check}"
    examples = "" if cases is None else f"; failing values e.g. {list(getattr(cases, 'failure_case', cases))[:3]}"
    return f"column {getattr(error.schema, 'name', '?')!r} breaks {error.check}{examples}"


def validate_harvest(harvest: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Validate every shard of a committed harvest and its row counts; returns a small summary."""
    expected_rows = manifest["num_contexts"] * manifest["context_length"]
    for hookpoint in manifest["hookpoints"]:
        rows = 0
        for shard in manifest["shards"]:
            entry = shard["files"].get(hookpoint)
            if entry is None:
                raise ShardValidationError(f"{harvest}: shard {shard['index']} lists no file for {hookpoint}")
            validate_shard_file(harvest, entry, manifest)
            rows += entry["rows"]
        if rows != expected_rows:
            raise ShardValidationError(
                f"{harvest}: {hookpoint} has {rows} rows, the token spec gives {expected_rows} "
                f"({manifest['num_contexts']} contexts x {manifest['context_length']})"
            )
    return {"harvest": harvest, "hookpoints": manifest["hookpoints"], "shards": len(manifest["shards"]), "rows": expected_rows}


def results_schema() -> pa.DataFrameSchema:
    """pandera schema of a sweep's results.parquet: one row per grid point."""
    fraction = pa.Check.in_range(0.0, 1.0)
    return pa.DataFrameSchema(
        {
            "sae_id": pa.Column(str, unique=True),
            "architecture": pa.Column(str, pa.Check.isin(["relu", "topk", "batchtopk", "jumprelu", "gated"])),
            "d_sae": pa.Column("int64", pa.Check.gt(0)),
            "expansion_factor": pa.Column(float, pa.Check.gt(0)),
            # Null where the architecture ignores the knob (k: relu/jumprelu/gated; coefficient: topk/batchtopk).
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
                lambda df: df["k"].isna() == ~df["architecture"].isin(K_ARCHITECTURES),
                error="k is set exactly for topk/batchtopk points",
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
        raise ValueError(f"{source}: results table {_describe(error)}") from error


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
