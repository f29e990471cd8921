"""Activation shards on object storage: layout, atomic shard writes, the manifest, Arrow reads.

{harvest} = {root}/activations/{harvest_id}
{harvest}/_manifest.json                                  written last: the commit marker
{harvest}/_shards/part-{i:05d}.json                       per-shard commit marker
{harvest}/tokens.parquet                                  the packed contexts, one row per (seq_id, pos), with doc_id
{harvest}/activations/hookpoint={hp}/part-{i:05d}.parquet one file per shard and hookpoint

The shards have a folder of their own, so `{harvest}/activations/*/*.parquet` matches shards and
nothing else: DuckDB and Polars read it with hive partitioning (a `hookpoint` column) without
tripping over the tokens file (format version 1 kept `_tokens.parquet` beside the `hookpoint=`
folders; pyarrow skips underscore files, DuckDB and Polars do not). Temporary files of atomic
writes end in `.partial`, never `.parquet`, so a killed writer cannot break the glob either, and
the commit deletes any it left.

Activations are stored as float16 by default (Parquet has no bfloat16; float16 keeps 11 bits of
mantissa, plenty for SAE training, and halves storage) or float32. A reader trusts only files
the manifest lists; a shard counts as done only once its marker exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

from infra.parquet_io import parquet_bytes, read_parquet
from infra.storage import exists, filesystem, join, read_json, write_bytes_atomic, write_json_atomic

MANIFEST_FILE = "_manifest.json"
TOKENS_FILE = "tokens.parquet"
ACTIVATIONS_DIR = "activations"
MANIFEST_FORMAT_VERSION = 3
"""3: tokens.parquet carries each token's doc_id (the held-out split keeps documents whole).
2: tokens.parquet (one row per token) + activations/hookpoint={hp}/ shards. 1: _tokens.parquet beside hookpoint={hp}/."""
OLD_LAYOUTS = {
    1: "_tokens.parquet beside the hookpoint= folders, which DuckDB/Polars globs cannot read",
    2: "tokens.parquet has no doc_id column, so the held-out split cannot keep documents whole",
}
"""Why each older format_version is refused."""
STORED_DTYPES = {"float16": np.float16, "float32": np.float32}


class HarvestFormatError(ValueError):
    """A harvest written in a storage layout this version does not read."""


def harvest_uri(root: str, harvest_id: str) -> str:
    """Folder of one harvest."""
    return join(root, "activations", harvest_id)


def shard_key(hookpoint: str, index: int) -> str:
    """Path of a shard file relative to its harvest folder."""
    return f"{ACTIVATIONS_DIR}/hookpoint={hookpoint}/part-{index:05d}.parquet"


def marker_uri(harvest: str, index: int) -> str:
    """Commit marker of one shard."""
    return join(harvest, "_shards", f"part-{index:05d}.json")


def shard_schema(d_model: int, dtype: str, metadata: dict[str, Any]) -> pa.Schema:
    """Arrow schema of a shard, its metadata carrying model, hookpoint, d_model, dtype, ..."""
    value_type = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            ("seq_id", pa.int64()),
            ("pos", pa.int32()),
            ("token_id", pa.int32()),
            ("special", pa.bool_()),
            ("activation", pa.list_(value_type, d_model)),
        ],
        metadata={key: str(value) for key, value in metadata.items()},
    )


def shard_table(
    seq_id_N: np.ndarray, pos_N: np.ndarray, token_id_N: np.ndarray, special_N: np.ndarray, acts_ND: np.ndarray, schema: pa.Schema
) -> pa.Table:
    """One shard's rows as an Arrow table with the fixed_size_list activation column."""
    d_model = schema.field("activation").type.list_size
    value_type = schema.field("activation").type.value_type
    flat = pa.array(np.ascontiguousarray(acts_ND).reshape(-1), type=value_type)
    columns = [
        pa.array(seq_id_N, pa.int64()),
        pa.array(pos_N, pa.int32()),
        pa.array(token_id_N, pa.int32()),
        pa.array(special_N, pa.bool_()),
        pa.FixedSizeListArray.from_arrays(flat, d_model),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def shard_bytes(table: pa.Table) -> bytes:
    """Serialise a shard: activation floats are incompressible noise to zstd, so only ids are compressed."""
    return parquet_bytes(
        table,
        compression={"seq_id": "zstd", "pos": "zstd", "token_id": "zstd", "special": "zstd", "activation": "none"},
        use_dictionary=["token_id"],
        row_group_size=8192,
        write_statistics=["seq_id", "pos", "token_id"],
    )


def write_shard_file(harvest: str, hookpoint: str, index: int, table: pa.Table) -> dict[str, Any]:
    """Write one hookpoint's shard atomically; returns its manifest entry (path, rows, bytes)."""
    payload = shard_bytes(table)
    key = shard_key(hookpoint, index)
    write_bytes_atomic(join(harvest, key), payload)
    return {"path": key, "rows": table.num_rows, "bytes": len(payload)}


def read_marker(harvest: str, index: int) -> dict[str, Any] | None:
    """A finished shard's record, or None when the shard has not been committed."""
    uri = marker_uri(harvest, index)
    return read_json(uri) if exists(uri) else None


def write_manifest(harvest: str, manifest: dict[str, Any]) -> str:
    """Write the manifest last: from this moment readers may trust the harvest."""
    uri = join(harvest, MANIFEST_FILE)
    write_json_atomic(uri, {"format_version": MANIFEST_FORMAT_VERSION, **manifest})
    return uri


def read_manifest(harvest: str) -> dict[str, Any]:
    """The manifest of a committed harvest; FileNotFoundError names the harvest when missing."""
    uri = join(harvest, MANIFEST_FILE)
    if not exists(uri):
        raise FileNotFoundError(f"{harvest}: no {MANIFEST_FILE}; the harvest is missing or unfinished")
    manifest = read_json(uri)
    version = manifest.get("format_version")
    if version in OLD_LAYOUTS:
        raise HarvestFormatError(
            f"{harvest}: harvest in an old storage layout (format_version {version}: {OLD_LAYOUTS[version]}); this saeflow reads "
            f"format_version {MANIFEST_FORMAT_VERSION}: re-harvest it (the same spec now writes a new harvest id) and delete this folder"
        )
    if version != MANIFEST_FORMAT_VERSION:
        raise HarvestFormatError(f"{uri}: format_version={version!r}, this saeflow reads {MANIFEST_FORMAT_VERSION}")
    return manifest


def read_tokens_table(harvest: str) -> pa.Table:
    """The packed contexts of a harvest: seq_id int64, pos int32, token_id int32, special bool, doc_id int64."""
    return read_parquet(join(harvest, TOKENS_FILE))


def open_activations(harvest: str, hookpoint: str | None = None) -> ds.Dataset:
    """A pyarrow dataset over the files the manifest lists (hookpoint is a hive partition column).

    DuckDB and Polars read the same files by glob (README, "Query with DuckDB / Polars"); this
    reader trusts only the files the manifest lists, so stray files never reach it.

    Filter with pyarrow expressions, pushed down to Parquet statistics:
    `open_activations(h).to_table(filter=(ds.field("hookpoint") == "blocks.3.hook_resid_post")
    & (ds.field("seq_id") < 10))`.
    """
    manifest = read_manifest(harvest)
    hookpoints = manifest["hookpoints"] if hookpoint is None else [hookpoint]
    unknown = sorted(set(hookpoints) - set(manifest["hookpoints"]))
    if unknown:
        raise KeyError(f"{harvest}: hookpoint(s) {unknown} not harvested; have {manifest['hookpoints']}")
    fs, base = filesystem(harvest)
    paths = [f"{base}/{shard['files'][hp]['path']}" for hp in hookpoints for shard in manifest["shards"]]
    partitioning = ds.partitioning(pa.schema([("hookpoint", pa.string())]), flavor="hive")
    return ds.dataset(
        paths, filesystem=fs, format="parquet", partitioning=partitioning, partition_base_dir=f"{base}/{ACTIVATIONS_DIR}"
    )


def activations_numpy(table: pa.Table) -> np.ndarray:
    """The activation column of a table as a [rows, d_model] numpy array (zero-copy where possible)."""
    column = table.column("activation").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)


def leading_rows(harvest: str, hookpoint: str, rows: int, exclude_seqs: tuple[int, ...] = ()) -> np.ndarray:
    """[M <= rows, d_model] float32: the first `rows` non-special activations at the hookpoint, in file
    order, skipping the contexts in exclude_seqs (a held-out split, so a baseline never sees them)."""
    keep = ~ds.field("special")
    if exclude_seqs:
        keep = keep & ~ds.field("seq_id").isin(list(exclude_seqs))
    chunks, total = [], 0
    for batch in open_activations(harvest, hookpoint).scanner(columns=["activation"], filter=keep).to_batches():
        if batch.num_rows == 0:
            continue
        chunks.append(activations_numpy(pa.Table.from_batches([batch])).astype(np.float32))
        total += len(chunks[-1])
        if total >= rows:
            break
    if not chunks:
        raise ValueError(f"{harvest} hookpoint {hookpoint}: no non-special rows outside the held-out contexts")
    return np.concatenate(chunks)[:rows]
