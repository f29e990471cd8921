"""Harvest: stored activations equal the model's own, resume, actor death, S3, and bad inputs."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch
from safetensors.torch import load_file, save_file

from infra.activations.schemas import validate_harvest
from infra.activations.store import activations_numpy, open_activations, read_manifest, read_tokens_table
from infra.harvest.plan import HarvestSpecError, harvest_in_process, plan_harvest, run_harvest
from infra.harvest.worker import ShardHarvester
from infra.lm.hookpoints import HookpointError
from infra.lm.models import load_model
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec, tokens_from_table
from tests.infra.tiny_models import CORPUS, FAMILIES, MAX_POSITIONS, N_LAYERS, build_tiny_model

SOURCE = str(CORPUS.parent) if CORPUS.is_file() else BUILTIN_PYDOC
CONTEXT, CONTEXTS, PER_SHARD = 16, 12, 4
HOOKPOINTS = ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", f"blocks.{N_LAYERS - 1}.hook_mlp_out"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("models")
    return {family: build_tiny_model(family, base / family) for family in FAMILIES}


def plan(model_dir: Path, root: str, hookpoints=HOOKPOINTS, context=CONTEXT, dtype="float32"):
    spec = TokenSpec(source=SOURCE, tokenizer=str(model_dir), context_length=context, num_tokens=CONTEXTS * context)
    return plan_harvest(str(model_dir), hookpoints, spec, root, dtype=dtype, contexts_per_shard=PER_SHARD, batch_contexts=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_stored_activations_equal_the_models_own(models, family, tmp_path):
    job = plan(models[family], str(tmp_path))
    harvest_in_process(job, device="cpu")
    manifest = read_manifest(job.harvest)
    assert validate_harvest(job.harvest, manifest)["rows"] == CONTEXTS * CONTEXT
    tokens = tokens_from_table(read_tokens_table(job.harvest))
    assert tokens.special_NS[:, 0].all(), "BOS positions are marked special"

    model, _ = load_model(models[family], device="cpu")
    captured = {}
    mlp = model.get_submodule({"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama": "model.layers"}[family])[2].mlp
    handle = mlp.register_forward_hook(lambda module, args, output: captured.setdefault("mlp", output))
    with torch.no_grad():
        hidden = model(torch.from_numpy(tokens.token_ids_NS.astype(np.int64)), output_hidden_states=True).hidden_states
    handle.remove()
    expected = {HOOKPOINTS[0]: hidden[0], HOOKPOINTS[1]: hidden[2], HOOKPOINTS[2]: captured["mlp"]}
    for hookpoint, want_NSD in expected.items():
        table = open_activations(job.harvest, hookpoint).to_table().sort_by([("seq_id", "ascending"), ("pos", "ascending")])
        assert np.array_equal(table.column("token_id").to_numpy(), tokens.token_ids_NS.ravel())
        got_ND = activations_numpy(table)
        assert np.allclose(got_ND, want_NSD.reshape(-1, want_NSD.shape[-1]).numpy(), atol=1e-5), hookpoint
    assert manifest["norm_stats"][HOOKPOINTS[1]]["mean_norm"] > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_in_and_out_are_harvested_row_aligned(models, family, tmp_path):
    """One harvest of an MLP's input and output: row i of both is the same token, and the MLP maps one to the other."""
    pair = ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"]
    job = plan(models[family], str(tmp_path), hookpoints=pair)
    harvest_in_process(job, device="cpu")
    tables = [open_activations(job.harvest, hp).to_table() for hp in pair]  # stored order, unsorted
    for column in ("seq_id", "pos", "token_id"):
        assert np.array_equal(tables[0].column(column).to_numpy(), tables[1].column(column).to_numpy())
    x_ND, y_ND = (torch.tensor(activations_numpy(t)) for t in tables)
    model, _ = load_model(models[family], device="cpu")
    mlp = model.get_submodule({"gpt2": "transformer.h", "gpt_neox": "gpt_neox.layers", "llama": "model.layers"}[family])[1].mlp
    with torch.no_grad():
        torch.testing.assert_close(mlp(x_ND), y_ND, atol=1e-5, rtol=1e-4)


@pytest.mark.e2e
def test_resume_rewrites_no_finished_shard(models, tmp_path, ray_local):
    job = plan(models["gpt2"], str(tmp_path), dtype="float16")
    ShardHarvester(job, device="cpu").harvest(0)  # the run that "stopped" after one shard
    first = Path(job.harvest) / "activations" / f"hookpoint={HOOKPOINTS[0]}" / "part-00000.parquet"
    stamp = first.stat().st_mtime_ns
    summary = run_harvest(job, num_actors=2)
    assert summary["harvested_shards"] == job.num_shards - 1
    assert first.stat().st_mtime_ns == stamp
    assert validate_harvest(job.harvest, read_manifest(job.harvest))["shards"] == job.num_shards
    assert run_harvest(job, num_actors=2)["cached"] is True


def test_commit_removes_what_a_killed_writer_left(models, tmp_path):
    """A writer killed between its temporary file and the move leaves `.tmp-*.partial`; the commit deletes it."""
    job = plan(models["gpt_neox"], str(tmp_path), hookpoints=["blocks.1.hook_resid_post"])
    folder = Path(job.harvest) / "activations" / "hookpoint=blocks.1.hook_resid_post"
    folder.mkdir(parents=True)
    left = folder / ".tmp-0123456789abcdef-part-00001.parquet.partial"
    left.write_bytes(b"half a shard")
    harvest_in_process(job, device="cpu")
    assert not left.exists() and not list(Path(job.harvest).rglob(".tmp-*"))
    assert validate_harvest(job.harvest, read_manifest(job.harvest))["shards"] == job.num_shards


def test_a_shard_write_undone_by_a_concurrent_commit_returns_the_committed_marker(models, tmp_path, monkeypatch):
    """Two runs of one harvest id: the first commits and removes the second's temporary file mid-write."""
    import infra.harvest.worker as worker

    job = plan(models["gpt_neox"], str(tmp_path), hookpoints=["blocks.1.hook_resid_post"])
    harvester = ShardHarvester(job, device="cpu")
    committed = harvester.harvest(0)
    real_read_marker, reads = worker.read_marker, []

    def read_marker(harvest, index):  # the second run started before the first's marker existed
        reads.append(index)
        return None if len(reads) == 1 else real_read_marker(harvest, index)

    def removed_under_us(*args, **kwargs):
        raise FileNotFoundError("the temporary file was removed by the other run's commit")

    monkeypatch.setattr(worker, "read_marker", read_marker)
    monkeypatch.setattr(worker, "write_shard_file", removed_under_us)
    assert harvester.harvest(0) == committed and reads == [0, 0]  # it wrote, lost its file, read the marker
    monkeypatch.setattr(worker, "read_marker", lambda harvest, index: None)  # no marker: the error is real
    with pytest.raises(FileNotFoundError):
        harvester.harvest(0)


@pytest.mark.e2e
def test_actor_killed_mid_run_still_yields_every_shard_once(models, tmp_path, ray_local):
    job = plan(models["llama"], str(tmp_path))
    markers = Path(job.harvest) / "_shards"

    def kill_first_actor():
        deadline = time.time() + 120
        while time.time() < deadline and not (markers.exists() and any(markers.iterdir())):
            time.sleep(0.05)
        for name in ray_local.util.list_named_actors():
            if name.startswith(f"harvest-{job.harvest_id}"):
                ray_local.kill(ray_local.get_actor(name), no_restart=False)
                return

    killer = threading.Thread(target=kill_first_actor)
    killer.start()
    run_harvest(job, num_actors=2)
    killer.join(timeout=120)
    manifest = read_manifest(job.harvest)
    assert [s["index"] for s in manifest["shards"]] == list(range(job.num_shards))
    validate_harvest(job.harvest, manifest)
    for hookpoint in HOOKPOINTS:
        seq_ids = open_activations(job.harvest, hookpoint).to_table(columns=["seq_id"]).column("seq_id").to_numpy()
        assert np.array_equal(np.sort(seq_ids), np.repeat(np.arange(CONTEXTS), CONTEXT)), "a row was lost or duplicated"
    assert not list(Path(job.harvest).rglob(".tmp-*"))  # a kill mid-write leaves one; the commit removes it


@pytest.mark.e2e
def test_round_trip_through_real_s3(models, s3_env):
    root = s3_env.uri(f"harvest-{time.time_ns()}")
    job = plan(models["gpt_neox"], root, hookpoints=["blocks.1.hook_resid_post"])
    harvest_in_process(job, device="cpu")
    validate_harvest(job.harvest, read_manifest(job.harvest))
    table = open_activations(job.harvest).to_table(filter=(ds.field("seq_id") == 3) & (ds.field("pos") >= 1))
    assert table.num_rows == CONTEXT - 1
    assert activations_numpy(table).shape == (CONTEXT - 1, 32)


def test_unknown_hookpoint_fails_before_any_work(models, tmp_path):
    with pytest.raises(HookpointError, match=r"blocks\.7\.hook_resid_post"):
        plan(models["gpt2"], str(tmp_path), hookpoints=["blocks.7.hook_resid_post"])
    with pytest.raises(HookpointError, match=r"hook_resid_middle"):
        plan(models["gpt2"], str(tmp_path), hookpoints=["blocks.0.hook_resid_middle"])
    assert not (tmp_path / "activations").exists()


def test_context_longer_than_the_model_allows(models, tmp_path):
    with pytest.raises(HarvestSpecError, match=rf"context_length={MAX_POSITIONS + 1} exceeds .* limit of {MAX_POSITIONS}"):
        plan(models["llama"], str(tmp_path), context=MAX_POSITIONS + 1)


def test_bfloat16_is_not_a_stored_dtype(models, tmp_path):
    with pytest.raises(HarvestSpecError, match=r"dtype='bfloat16' is not storable"):
        plan(models["gpt2"], str(tmp_path), dtype="bfloat16")


def test_nan_activations_write_nothing(models, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(models["gpt2"], broken)
    weights = load_file(broken / "model.safetensors")
    name = next(n for n in weights if n.endswith("h.0.mlp.c_fc.weight"))
    weights[name][0, 0] = float("nan")
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    job = plan(broken, str(tmp_path / "root"), hookpoints=["blocks.1.hook_resid_post"])
    with pytest.raises(FloatingPointError, match=r"shard 0 of blocks\.1\.hook_resid_post has NaN/inf activations"):
        ShardHarvester(job, device="cpu").harvest(0)
    assert not list(Path(job.harvest).glob("activations/hookpoint=*/*"))
    assert not (Path(job.harvest) / "_shards").exists()
