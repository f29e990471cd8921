"""The sparse latent table: one row per non-zero (latent, seq_id, pos, value), and its two queries.

Layout (chosen for the two questions a researcher asks):
  latents/sae={name}/part-{i:05d}.parquet, one file per harvest shard, rows sorted by
  (latent, value descending), row groups of ROW_GROUP_ROWS rows with min/max statistics.
- "top contexts of latent j": every file's row groups carry latent min/max, so a filter on
  latent == j reads only the one or two row groups per file that hold j (pushdown, no full scan);
  within them the rows are already in descending value order.
- "every latent active at token (s, t)": a file holds one harvest shard's contiguous seq_ids, so
  its seq_id statistics rule out every other file; only one shard's file is read.
bench/features_queries.py measures both against a full scan. DuckDB reads the same files with
`read_parquet('{features}/latents/*/*.parquet', hive_partitioning=true)`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from infra.activations.split import SeqSelection
from infra.features.inputs import FeaturesInputError, check_latent
from infra.storage import filesystem, join, read_json, write_bytes_atomic

LATENTS_DIR = "latents"
ROW_GROUP_ROWS = 8192
SCHEMA = arrow.schema([("latent", arrow.int32()), ("seq_id", arrow.int64()), ("pos", arrow.int32()), ("value", arrow.float32())])


def latent_key(sae: str, shard: int) -> str:
    """Path of one SAE's latent file for one harvest shard, relative to the stage folder."""
    return f"{LATENTS_DIR}/sae={sae}/part-{shard:05d}.parquet"


def latent_frame_schema(d_sae: int, seqs: SeqSelection, context_length: int) -> pa.DataFrameSchema:
    """pandera schema of a latent file: indices in range, strictly positive finite values."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1)),
            "seq_id": pa.Column("int64", [pa.Check.ge(0), pa.Check(lambda s: pd.Series(seqs.mask(s.to_numpy()), index=s.index),
                                                                    error=f"seq_id in {seqs.describe()}")]),
            "pos": pa.Column("int32", pa.Check.in_range(0, context_length - 1)),
            "value": pa.Column("float32", [pa.Check.gt(0), pa.Check(lambda s: np.isfinite(s), element_wise=False)]),
        },
        strict=True, name="sparse latent table",
    )


def validate_frame(frame: pd.DataFrame, schema: pa.DataFrameSchema, where: str) -> None:
    """pandera validation; ValueError naming the file and the broken rule."""
    try:
        schema.validate(frame, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"{where}: {schema.name}: column {getattr(error.schema, 'name', '?')!r} breaks {error.check}") from error


def sparse_table(latent_N: np.ndarray, seq_N: np.ndarray, pos_N: np.ndarray, value_N: np.ndarray) -> arrow.Table:
    """The rows sorted by (latent, value descending, seq_id, pos): the order both queries rely on.

    Rows arrive in (seq_id, pos) order (a shard's rows, row-major non-zeros) and lexsort is stable,
    so sorting on two keys gives the four-key order at half the cost.
    """
    order = np.lexsort((-value_N, latent_N))
    return arrow.Table.from_arrays(
        [arrow.array(latent_N[order].astype(np.int32)), arrow.array(seq_N[order].astype(np.int64)),
         arrow.array(pos_N[order].astype(np.int32)), arrow.array(value_N[order].astype(np.float32))], schema=SCHEMA,
    )


def write_latent_file(features: str, sae: str, shard: int, table: arrow.Table) -> dict[str, Any]:
    """Write one latent file atomically; returns its entry (path, rows, bytes)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=ROW_GROUP_ROWS, write_statistics=True)
    key = latent_key(sae, shard)
    write_bytes_atomic(join(features, key), sink.getvalue())
    return {"path": key, "rows": table.num_rows, "bytes": sink.tell()}


def open_latents(features: str, sae: str | None = None) -> ds.Dataset:
    """A pyarrow dataset over the latent files the manifest lists (`sae` is a hive partition column)."""
    manifest = read_json(join(features, "_manifest.json"))
    names = [s["name"] for s in manifest["saes"]]
    if sae is not None and sae not in names:
        raise FeaturesInputError(f"{features}: no SAE named {sae!r} (has {names})")
    fs, base = filesystem(features)
    paths = [f"{base}/{entry['path']}" for shard in manifest["shards"] for name, entry in shard["files"].items()
             if sae is None or name == sae]
    partitioning = ds.partitioning(arrow.schema([("sae", arrow.string())]), flavor="hive")
    return ds.dataset(paths, filesystem=fs, format="parquet", partitioning=partitioning, partition_base_dir=f"{base}/{LATENTS_DIR}")


def _d_sae(features: str, sae: str) -> int:
    manifest = read_json(join(features, "_manifest.json"))
    return next(s["d_sae"] for s in manifest["saes"] if s["name"] == sae)


def top_contexts(features: str, sae: str, latent: int, limit: int = 20) -> pd.DataFrame:
    """The `limit` highest activations of one latent (seq_id, pos, value), by pushdown on latent."""
    check_latent(latent, _d_sae(features, sae), f"query of {features} SAE {sae}")
    table = open_latents(features, sae).to_table(filter=ds.field("latent") == latent, columns=["seq_id", "pos", "value"])
    frame = table.to_pandas().sort_values(["value", "seq_id", "pos"], ascending=[False, True, True], kind="stable")
    return frame.head(limit).reset_index(drop=True)


def active_at(features: str, sae: str, seq_id: int, pos: int) -> pd.DataFrame:
    """Every latent active at token (seq_id, pos), strongest first, by pushdown on seq_id."""
    table = open_latents(features, sae).to_table(
        filter=(ds.field("seq_id") == seq_id) & (ds.field("pos") == pos), columns=["latent", "value"]
    )
    return table.to_pandas().sort_values("value", ascending=False, kind="stable").reset_index(drop=True)
