"""The activation stream: coverage per epoch, filters, determinism, resume, mixing, errors, threads."""

from __future__ import annotations

import itertools
import threading
import time
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch

import infra.activations.stream_plan as stream_plan_module
from infra.activations.split import SeqSelection
from infra.activations.store import harvest_uri, shard_schema, shard_table, write_manifest, write_shard_file
from infra.activations.stream import THREAD_PREFIX, StreamSpec, StreamSpecError, count_rows, iter_batches
from tests.infra.fake_harvest import HOOKPOINTS, write_fake_harvest

SHARDS, CONTEXTS_PER_SHARD, CONTEXT, D = 8, 4, 16, 4
CONTEXTS = SHARDS * CONTEXTS_PER_SHARD
HP = "blocks.3.hook_resid_post"


def write_coded_harvest(root: str) -> str:
    """SHARDS shards whose float32 rows read (seq_id, pos, shard, special); pos 0 and pos 9 are special."""
    harvest = harvest_uri(root, "coded-0123456789")
    schema = shard_schema(D, "float32", {"hookpoint": HP})
    shards = []
    for index in range(SHARDS):
        start, stop = index * CONTEXTS_PER_SHARD, (index + 1) * CONTEXTS_PER_SHARD
        seq_N = np.repeat(np.arange(start, stop, dtype=np.int64), CONTEXT)
        pos_N = np.tile(np.arange(CONTEXT, dtype=np.int32), CONTEXTS_PER_SHARD)
        special_N = (pos_N == 0) | (pos_N == 9)
        acts_ND = np.stack([seq_N, pos_N, np.full_like(seq_N, index), special_N], axis=1).astype(np.float32)
        table = shard_table(seq_N, pos_N, np.zeros_like(pos_N), special_N, acts_ND, schema)
        files = {HP: write_shard_file(harvest, HP, index, table)}
        shards.append({"index": index, "rows": len(seq_N), "seq_start": start, "seq_stop": stop, "files": files})
    write_manifest(harvest, {"harvest_id": "coded-0123456789", "hookpoints": [HP], "d_model": D, "dtype": "float32",
                             "context_length": CONTEXT, "num_contexts": CONTEXTS, "num_rows": CONTEXTS * CONTEXT, "shards": shards})
    return harvest


@pytest.fixture(scope="module")
def coded(tmp_path_factory) -> str:
    return write_coded_harvest(str(tmp_path_factory.mktemp("stream")))


def spec(harvest: str, **overrides) -> StreamSpec:
    values = dict(harvest=harvest, hookpoint=HP, batch_size=32, shuffle_buffer=128, seed=3)
    return StreamSpec(**{**values, **overrides})


def rows_of(batches) -> np.ndarray:
    return torch.cat(list(batches)).numpy()


def keys(rows_ND: np.ndarray) -> list[tuple[int, int]]:
    return [(int(s), int(p)) for s, p in rows_ND[:, :2]]


KEPT = {(s, p) for s in range(CONTEXTS) for p in range(CONTEXT) if p not in (0, 9)}


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_each_kept_row_once_per_epoch_in_float32_batches(coded):
    batches = list(iter_batches(spec(coded, batch_size=56)))
    assert all(b.dtype == torch.float32 and b.shape == (56, D) for b in batches)
    got = keys(rows_of(batches))
    assert len(got) == len(KEPT) == 8 * 56 and set(got) == KEPT, "each non-special row exactly once"
    assert not rows_of(batches)[:, 3].any(), "special rows excluded"


def test_looping_covers_every_epoch_exactly_and_reshuffles(coded):
    per_epoch = len(KEPT)
    with closing(iter_batches(spec(coded, batch_size=50, loop=True))) as stream:  # 50 does not divide 448: batches span epochs
        rows = rows_of(itertools.islice(stream, 3 * per_epoch // 50 + 1))
    epochs = [keys(rows[e * per_epoch : (e + 1) * per_epoch]) for e in range(3)]
    assert all(set(epoch) == KEPT and len(epoch) == per_epoch for epoch in epochs)
    assert epochs[0] != epochs[1] != epochs[2], "a new order each epoch"


def test_special_rows_kept_on_request_and_last_partial_batch_dropped(coded):
    got = keys(rows_of(iter_batches(spec(coded, exclude_special=False, batch_size=100))))
    assert len(got) == 500 and len(set(got)) == 500 and {p for _, p in got} == set(range(CONTEXT))


def test_fake_harvest_in_float16(tmp_path):
    harvest, manifest = write_fake_harvest(str(tmp_path))
    rows = rows_of(iter_batches(StreamSpec(harvest, HOOKPOINTS[1], batch_size=6, shuffle_buffer=8)))
    assert rows.shape == (18, 8)
    seq, pos = np.divmod(rows[:, 0] - 0.5, 100)  # the fake encodes seq*100 + pos + 0.5 for the 2nd hookpoint
    assert sorted(zip(seq.astype(int), pos.astype(int))) == [(s, p) for s in range(6) for p in range(1, 4)]


HELD = (29, 3, 4, 17, 30, 31)
"""Scattered held-out seq_ids: shards 0 and 1 partly, 4 partly, 7 in part (30, 31 of 28..31)."""


def test_seq_selection_and_its_complement_partition_the_rows(coded):
    held_out, train = SeqSelection(HELD), SeqSelection(HELD, complement=True)
    held = keys(rows_of(iter_batches(spec(coded, seqs=held_out, batch_size=14))))
    trained = keys(rows_of(iter_batches(spec(coded, seqs=train, batch_size=14))))
    assert {s for s, _ in held} == set(HELD) and len(held) == len(set(held)) == 6 * 14
    assert {s for s, _ in trained} == set(range(CONTEXTS)) - set(HELD) and len(trained) == len(set(trained)) == 26 * 14
    assert set(held) | set(trained) == KEPT, "the two sides cover every kept row, and nothing twice"
    assert count_rows(spec(coded, seqs=held_out)) == 6 * 14 and count_rows(spec(coded, seqs=train)) == 26 * 14


def test_a_selection_opens_only_the_shards_it_needs(coded, monkeypatch):
    opened = []
    real = stream_plan_module._read_columns
    monkeypatch.setattr(stream_plan_module, "_read_columns", lambda plan, shard, *a: opened.append(shard.path) or real(plan, shard, *a))
    list(iter_batches(spec(coded, seqs=SeqSelection((5, 6)), batch_size=4, shuffle_buffer=0)))
    assert [Path(p).name for p in opened] == ["part-00001.parquet"], "shards without a selected context are not read"


@pytest.mark.parametrize("loop", [False, True])
def test_resumed_selection_stream_continues_exactly(coded, loop):
    train = spec(coded, seqs=SeqSelection(HELD, complement=True), batch_size=20, loop=loop)
    total = 40 if loop else 26 * 14 // 20
    with closing(iter_batches(train)) as full:
        reference = list(itertools.islice(full, total))
    for start in (1, 9, total - 1):
        with closing(iter_batches(train, start_batch=start)) as resumed:
            tail = list(itertools.islice(resumed, total - start))
        assert all(torch.equal(a, b) for a, b in zip(tail, reference[start:], strict=True)), start


def test_same_spec_same_batches_other_seed_other_batches(coded):
    first = rows_of(iter_batches(spec(coded)))
    assert np.array_equal(first, rows_of(iter_batches(spec(coded, prefetch=0))))
    assert not np.array_equal(first, rows_of(iter_batches(spec(coded, seed=4))))


@pytest.mark.parametrize("loop", [False, True])
def test_resume_yields_the_tail_of_the_full_stream(coded, loop):
    total = 30 if loop else len(KEPT) // 32  # looping: 30 x 32 rows = 2.1 epochs
    with closing(iter_batches(spec(coded, loop=loop))) as full:
        reference = list(itertools.islice(full, total))
    for start in (1, 7, 13, 26, 29) if loop else (1, 5, total - 1, total):
        with closing(iter_batches(spec(coded, loop=loop), start_batch=start)) as resumed:
            tail = list(itertools.islice(resumed, total - start))
            assert loop or next(resumed, None) is None
        assert len(tail) == total - start and all(torch.equal(a, b) for a, b in zip(tail, reference[start:])), start


def test_batches_mix_many_shards(coded):
    for batch in iter_batches(spec(coded, batch_size=32, shuffle_buffer=256)):
        assert len(set(batch[:, 2].tolist())) >= 3, "a batch draws from several shards"
    unbuffered = list(iter_batches(spec(coded, batch_size=32, shuffle_buffer=0)))
    assert all(len(set(b[:, 2].tolist())) <= 2 for b in unbuffered), "without the buffer batches follow shards"


def test_spec_and_harvest_errors(coded, tmp_path):
    with pytest.raises(StreamSpecError, match=r"coded-0123456789: hookpoint 'blocks\.9\.hook_mlp_out' was not harvested; available: \['blocks\.3"):
        iter_batches(spec(coded, hookpoint="blocks.9.hook_mlp_out"))
    with pytest.raises(StreamSpecError, match=r"StreamSpec\.batch_size=0 is invalid: an integer >= 1"):
        spec(coded, batch_size=0)
    with pytest.raises(StreamSpecError, match=r"StreamSpec\.seqs=\(5, 6\) is invalid: a SeqSelection"):
        spec(coded, seqs=(5, 6))
    with pytest.raises(FileNotFoundError, match=r"no _manifest\.json"):
        iter_batches(spec(str(tmp_path / "nothing")))
    with pytest.raises(StreamSpecError, match=r"2 held-out contexts \(seq_ids \[40, 41\]\.\.\.\) selects no rows; the harvest has 32 contexts"):
        iter_batches(spec(coded, seqs=SeqSelection((40, 41))))
    with pytest.raises(StreamSpecError, match=r"at most 32 rows .* fewer than batch_size=33"):
        iter_batches(spec(coded, seqs=SeqSelection((30, 31)), batch_size=33))
    with pytest.raises(ValueError, match=r"28 rows, fewer than batch_size=30; use loop=True"):  # known only after reading `special`
        list(iter_batches(spec(coded, seqs=SeqSelection((30, 31)), batch_size=30)))
    with closing(iter_batches(spec(coded, seqs=SeqSelection((30, 31)), batch_size=30, loop=True))) as looping:  # batches span epochs
        assert [b.shape for b in itertools.islice(looping, 3)] == [(30, D)] * 3


@pytest.mark.e2e
def test_stream_from_s3_equals_the_local_one(coded, s3_env):
    remote = write_coded_harvest(s3_env.uri(f"stream-{time.time_ns()}"))
    for loop, start in ((False, 0), (True, 20)):
        with closing(iter_batches(spec(coded, loop=loop), start_batch=start)) as local, \
                closing(iter_batches(spec(remote, loop=loop), start_batch=start)) as from_s3:
            pairs = list(itertools.islice(zip(local, from_s3), 12))
        assert len(pairs) == 12 and all(torch.equal(a, b) for a, b in pairs)


def test_reader_error_reaches_the_consumer(tmp_path):
    harvest = write_coded_harvest(str(tmp_path))
    shard_dir = Path(harvest) / "activations" / f"hookpoint={HP}"
    (shard_dir / "part-00005.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="part-00005"):
        list(iter_batches(spec(harvest)))
    (shard_dir / "part-00002.parquet").write_bytes(b"not parquet")
    with pytest.raises(Exception) as caught:
        list(iter_batches(spec(harvest, seqs=SeqSelection(tuple(range(20))))))
    assert any("while streaming shard" in note and "part-00002.parquet" in note for note in caught.value.__notes__)
    assert not stream_threads()


def test_closing_early_stops_every_thread(coded):
    before = len(stream_threads())
    stream = iter_batches(spec(coded, batch_size=8, loop=True))
    next(stream)
    assert len(stream_threads()) > before
    stream.close()
    assert not stream_threads(), "close joins the pipeline and reader threads"
    for _ in iter_batches(spec(coded, batch_size=8, loop=True)):
        break  # the abandoned generator is closed when dropped
    deadline = time.time() + 5
    while stream_threads() and time.time() < deadline:
        time.sleep(0.01)
    assert not stream_threads()


def test_drop_last_false_keeps_every_row_for_evaluation(tmp_path):
    harvest, manifest = write_fake_harvest(str(tmp_path))
    spec = StreamSpec(harvest=harvest, hookpoint=manifest["hookpoints"][0], batch_size=7, shuffle_buffer=0, drop_last=False)
    batches = list(iter_batches(spec))
    kept = manifest["num_rows"] - manifest["num_contexts"]  # every position but the BOS
    assert sum(len(b) for b in batches) == kept
    assert len(batches[-1]) == kept % 7 or len(batches[-1]) == 7


def test_aligned_harvests_stream_as_sources(tmp_path):
    a, manifest = write_fake_harvest(str(tmp_path / "a"))
    b, _ = write_fake_harvest(str(tmp_path / "b"))
    hookpoint = manifest["hookpoints"][1]
    spec = StreamSpec(harvest=a, hookpoint=hookpoint, batch_size=5, shuffle_buffer=8, aligned_harvests=(b,), drop_last=False)
    batches = list(iter_batches(spec))
    assert all(batch.shape[1:] == (2, manifest["d_model"]) for batch in batches)
    rows = torch.cat(batches)
    assert torch.equal(rows[:, 0], rows[:, 1]), "both sources carry the same token in every row"
    single = torch.cat(list(iter_batches(StreamSpec(harvest=a, hookpoint=hookpoint, batch_size=5, shuffle_buffer=8, drop_last=False))))
    assert torch.equal(rows[:, 0], single), "source 0 is exactly the single-harvest stream"


# -- (input, target) pairs for transcoders ---------------------------------------------------
def test_target_hookpoint_streams_row_aligned_pairs_with_one_shuffle(tmp_path):
    harvest, _ = write_fake_harvest(str(tmp_path), dtype="float32")  # hookpoint i's rows read seq*100 + pos + 0.5*i
    paired = dict(harvest=harvest, hookpoint=HOOKPOINTS[0], batch_size=4, shuffle_buffer=6, seed=5, loop=True)
    pairs = list(itertools.islice(iter_batches(StreamSpec(**paired, target_hookpoint=HOOKPOINTS[1])), 9))
    singles = list(itertools.islice(iter_batches(StreamSpec(**paired)), 9))
    for (x_BD, y_BD), alone_BD in zip(pairs, singles, strict=True):
        assert x_BD.shape == y_BD.shape == (4, 8)
        torch.testing.assert_close(y_BD - x_BD, torch.full_like(x_BD, 0.5))  # the same token, row for row
        torch.testing.assert_close(x_BD, alone_BD)  # the input's order is the single-hookpoint stream's
    # Resuming mid-stream gives the same pairs.
    resumed = list(itertools.islice(iter_batches(StreamSpec(**paired, target_hookpoint=HOOKPOINTS[1]), start_batch=5), 4))
    for (x_BD, y_BD), (x2_BD, y2_BD) in zip(pairs[5:], resumed, strict=True):
        assert torch.equal(x_BD, x2_BD) and torch.equal(y_BD, y2_BD)


def test_bad_target_hookpoints_are_one_line_errors(tmp_path):
    harvest, _ = write_fake_harvest(str(tmp_path), dtype="float32")
    with pytest.raises(StreamSpecError, match=r"fake-0123456789: target_hookpoint 'blocks\.0\.hook_mlp_out' was not harvested; available"):
        iter_batches(StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], batch_size=4, target_hookpoint="blocks.0.hook_mlp_out"))
    with pytest.raises(StreamSpecError, match="a hookpoint other than hookpoint"):
        StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], target_hookpoint=HOOKPOINTS[0])
    with pytest.raises(StreamSpecError, match="cannot be combined"):
        StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], target_hookpoint=HOOKPOINTS[1], aligned_harvests=(harvest,))


# -- several hookpoints of one harvest for cross-layer crosscoders ----------------------------
def test_aligned_hookpoints_stream_one_slice_per_layer_with_one_shuffle(tmp_path):
    harvest, _ = write_fake_harvest(str(tmp_path), dtype="float32")  # hookpoint i's rows read seq*100 + pos + 0.5*i
    stacked = dict(harvest=harvest, hookpoint=HOOKPOINTS[0], batch_size=4, shuffle_buffer=6, seed=5, loop=True)
    layers = list(itertools.islice(iter_batches(StreamSpec(**stacked, aligned_hookpoints=(HOOKPOINTS[1],))), 9))
    singles = list(itertools.islice(iter_batches(StreamSpec(**stacked)), 9))
    for x_BMD, alone_BD in zip(layers, singles, strict=True):
        assert x_BMD.shape == (4, 2, 8)
        torch.testing.assert_close(x_BMD[:, 1] - x_BMD[:, 0], torch.full_like(alone_BD, 0.5))  # the same token in both slices
        torch.testing.assert_close(x_BMD[:, 0], alone_BD)
    with pytest.raises(StreamSpecError, match="each once"):
        StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], aligned_hookpoints=(HOOKPOINTS[0],))
    with pytest.raises(StreamSpecError, match="are exclusive"):
        StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], aligned_hookpoints=(HOOKPOINTS[1],), aligned_harvests=(harvest,))
    with pytest.raises(StreamSpecError, match=r"aligned_hookpoints 'blocks\.7\.hook_resid_post' was not harvested"):
        iter_batches(StreamSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], batch_size=4, aligned_hookpoints=("blocks.7.hook_resid_post",)))
