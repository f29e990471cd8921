"""Schemas of stored activations and the checks that decide whether a harvest can be trusted.

Scalar columns are validated with pandera (types and value ranges that depend on the harvest:
vocabulary, context length, number of contexts); the activation column's Arrow type is checked
against the manifest, and a sample of its values must be finite.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandera.errors
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.parquet as pq

from infra.activations.store import activations_numpy
from infra.schema_errors import describe_schema_error
from infra.storage import filesystem, join

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


def _non_decreasing() -> pa.Check:
    return pa.Check(lambda s: bool((s.diff().dropna() >= 0).all()), error="non-decreasing along the rows")


def tokens_row_schema(num_contexts: int, context_length: int, vocab_size: int) -> pa.DataFrameSchema:
    """pandera schema of tokens.parquet: the shard's id columns plus doc_id, in (seq_id, pos) order.

    doc_id and chunk_id must never decrease along the rows: contexts keep corpus order, and the
    held-out split (infra.activations.split) relies on it to find which contexts share a document.
    """
    return pa.DataFrameSchema(
        {
            "seq_id": pa.Column("int64", pa.Check.in_range(0, num_contexts - 1), nullable=False),
            "pos": pa.Column("int32", pa.Check.in_range(0, context_length - 1), nullable=False),
            "token_id": pa.Column("int32", pa.Check.in_range(0, vocab_size - 1), nullable=False),
            "special": pa.Column("bool", nullable=False),
            "doc_id": pa.Column("int64", [pa.Check.ge(0), _non_decreasing()], nullable=False),
            "chunk_id": pa.Column("int64", [pa.Check.ge(0), _non_decreasing()], nullable=False),
        },
        strict=True,
        name="tokens table",
    )


def validate_tokens_table(uri: str, table: arrow.Table, num_contexts: int, context_length: int, vocab_size: int) -> None:
    """Check a harvest's packed tokens before they are written; ShardValidationError names the file and the rule."""
    schema = tokens_row_schema(num_contexts, context_length, vocab_size)
    try:
        schema.validate(table.to_pandas(), lazy=False)
    except pandera.errors.SchemaError as error:
        raise ShardValidationError(f"{uri}: {describe_schema_error(error)}") from error
    if table.num_rows != num_contexts * context_length:
        raise ShardValidationError(f"{uri}: {table.num_rows} rows, the token spec gives {num_contexts} contexts x {context_length}")


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
        raise ShardValidationError(f"{uri}: {describe_schema_error(error)}") from error
    if not np.isfinite(activations_numpy(sample).astype(np.float32)).all():
        raise ShardValidationError(f"{uri}: activation values include NaN or inf (checked the first {sample.num_rows} rows)")


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
