"""Stored activations: Arrow queries over the manifest, and every kind of bad shard caught by name."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from infra.activations.schemas import ShardValidationError, validate_harvest
from infra.activations.store import activations_numpy, open_activations, read_manifest
from tests.infra.fake_harvest import CONTEXT, CONTEXTS, D_MODEL, HOOKPOINTS, write_fake_harvest


@pytest.fixture
def harvest(tmp_path):
    return write_fake_harvest(str(tmp_path))


def test_query_with_pushed_down_filters(harvest):
    uri, _ = harvest
    table = open_activations(uri).to_table(
        filter=(ds.field("hookpoint") == HOOKPOINTS[1]) & (ds.field("seq_id") == 5) & (ds.field("pos") > 0)
    )
    assert table.num_rows == CONTEXT - 1
    acts_ND = activations_numpy(table)
    assert acts_ND.shape == (CONTEXT - 1, D_MODEL)
    assert np.allclose(acts_ND[:, 0], 500 + np.arange(1, CONTEXT) + 0.5)


def test_schema_metadata_and_any_parquet_reader(harvest, tmp_path):
    uri, manifest = harvest
    path = tmp_path / "activations" / manifest["harvest_id"] / manifest["shards"][0]["files"][HOOKPOINTS[0]]["path"]
    table = pq.read_table(path)  # a plain Parquet reader needs nothing of saeflow
    assert table.schema.field("activation").type == pa.list_(pa.float16(), D_MODEL)
    assert table.schema.metadata[b"hookpoint"].decode() == HOOKPOINTS[0]
    assert validate_harvest(uri, read_manifest(uri))["rows"] == CONTEXTS * CONTEXT


def test_reader_ignores_files_not_in_manifest(harvest, tmp_path):
    uri, manifest = harvest
    stray = tmp_path / "activations" / manifest["harvest_id"] / "activations" / f"hookpoint={HOOKPOINTS[0]}" / "part-00099.parquet"
    stray.write_bytes(b"half-written garbage")
    assert open_activations(uri, HOOKPOINTS[0]).count_rows() == CONTEXTS * CONTEXT


def shard_path(tmp_path, manifest, index=0, hookpoint=HOOKPOINTS[0]):
    return tmp_path / "activations" / manifest["harvest_id"] / manifest["shards"][index]["files"][hookpoint]["path"]


def rewrite(path, mutate):
    table = pq.read_table(path)
    pq.write_table(mutate(table), path)


def expect(uri, pattern):
    with pytest.raises(ShardValidationError, match=pattern):
        validate_harvest(uri, read_manifest(uri))


def test_corrupt_shard(harvest, tmp_path):
    uri, manifest = harvest
    path = shard_path(tmp_path, manifest)
    data = bytearray(path.read_bytes())
    data[-10:] = b"\x00" * 10  # break the footer
    path.write_bytes(bytes(data))
    expect(uri, r"part-00000.parquet: not a readable Parquet file, corrupt or truncated")


def test_truncated_shard(harvest, tmp_path):
    uri, manifest = harvest
    path = shard_path(tmp_path, manifest)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    expect(uri, r"part-00000.parquet: not a readable Parquet file")


def test_empty_shard(harvest, tmp_path):
    uri, manifest = harvest
    shard_path(tmp_path, manifest).write_bytes(b"")
    expect(uri, r"part-00000.parquet: not a readable Parquet file")


def test_missing_shard(harvest, tmp_path):
    uri, manifest = harvest
    shard_path(tmp_path, manifest, index=1).unlink()
    expect(uri, r"part-00001.parquet: listed in the manifest but missing")


def test_wrong_column_type(harvest, tmp_path):
    uri, manifest = harvest
    rewrite(shard_path(tmp_path, manifest), lambda t: t.set_column(1, "pos", t.column("pos").cast(pa.int64())))
    expect(uri, r"column 'pos' has type int64, expected int32")


def test_wrong_activation_width(harvest, tmp_path):
    uri, manifest = harvest

    def narrower(table):
        acts = activations_numpy(table)[:, :-1].copy()
        column = pa.FixedSizeListArray.from_arrays(pa.array(acts.ravel()), D_MODEL - 1)
        return table.set_column(4, "activation", column)

    rewrite(shard_path(tmp_path, manifest), narrower)
    expect(uri, rf"activation width {D_MODEL - 1} != d_model {D_MODEL}")


def test_missing_column(harvest, tmp_path):
    uri, manifest = harvest
    rewrite(shard_path(tmp_path, manifest), lambda t: t.drop(["token_id"]))
    expect(uri, r"missing column 'token_id'")


def test_out_of_range_values(harvest, tmp_path):
    uri, manifest = harvest
    rewrite(shard_path(tmp_path, manifest), lambda t: t.set_column(1, "pos", pa.array(np.full(t.num_rows, 99, np.int32))))
    expect(uri, r"part-00000.parquet: column 'pos' breaks")


def test_nan_activations(harvest, tmp_path):
    uri, manifest = harvest

    def poison(table):
        acts = activations_numpy(table).copy()
        acts[3, 2] = np.nan
        return table.set_column(4, "activation", pa.FixedSizeListArray.from_arrays(pa.array(acts.ravel()), D_MODEL))

    rewrite(shard_path(tmp_path, manifest), poison)
    expect(uri, r"activation values include NaN or inf")


def test_manifest_counts_disagree(harvest, tmp_path):
    uri, manifest = harvest
    manifest_path = tmp_path / "activations" / manifest["harvest_id"] / "_manifest.json"
    edited = json.loads(manifest_path.read_text())
    edited["shards"][0]["files"][HOOKPOINTS[0]]["rows"] += 1
    manifest_path.write_text(json.dumps(edited))
    expect(uri, r"has 16 rows, the manifest lists 17")


def test_unfinished_harvest_has_no_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no _manifest.json; the harvest is missing or unfinished"):
        open_activations(str(tmp_path / "activations" / "nope"))
