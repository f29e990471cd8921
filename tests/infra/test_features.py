"""The features stage's tables: round trip to the dense encode, known features, queries, bad inputs, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from infra.activations.store import activations_numpy, open_activations
from infra.features.details import read_table, sae_folder
from infra.features.encode import ShardEncoder
from infra.features.inputs import FeaturesInputError
from infra.features.latent_table import active_at, top_contexts
from infra.features.plan import FeatureSettings, plan_features
from infra.features.run import run_features
from infra.features.stats import LatentRows, select_examples
from infra.lm.models import load_model
from infra.sae_store import load_sae, save_sae
from infra.storage import read_json
from sae_core.synthetic import SyntheticFeatures
from tests.infra.feature_fixtures import (
    SYNTH_HOOK,
    TINY_HOOK,
    synthetic_coefficients,
    tiny_harvest,
    tiny_sae,
    train_sae,
    write_synthetic_harvest,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("features")
    harvest, model = tiny_harvest(base)
    saes = base / "saes" / "sweep-x"
    tiny_sae(harvest, str(saes / "topk-a"), str(model))
    tiny_sae(harvest, str(saes / "topk-b"), str(model), d_sae=128, seed=1)
    return {"base": base, "harvest": harvest, "model": model, "saes": saes, "root": str(base / "root")}


@pytest.fixture(scope="module")
def stage(tiny):
    plan = plan_features(str(tiny["saes"]), tiny["harvest"], tiny["root"], contexts=8, settings=FeatureSettings(ablation_latents=4))
    result = run_features(plan, in_process=True)
    return plan, result


def dense_rows(plan, hookpoint=TINY_HOOK):
    table = open_activations(plan.harvest, hookpoint).to_table()
    frame = table.select(["seq_id", "pos", "special"]).to_pandas()
    keep = plan.seqs.mask(frame["seq_id"].to_numpy()) & ~frame["special"]
    return frame[keep].reset_index(drop=True), activations_numpy(table)[keep.to_numpy()]


def test_sparse_table_round_trips_to_the_dense_encode(stage):
    plan, _ = stage
    keys, acts_ND = dense_rows(plan)
    for entry in plan.saes:
        sae = load_sae(entry["uri"])
        with torch.no_grad():
            dense_NF = sae.encode(torch.from_numpy(acts_ND.astype(np.float32))).numpy()
        rebuilt_NF = np.zeros_like(dense_NF)
        index = {(s, p): i for i, (s, p) in enumerate(zip(keys["seq_id"], keys["pos"], strict=True))}
        for path in sorted(Path(plan.features).glob(f"latents/sae={entry['name']}/*.parquet")):
            frame = pq.read_table(path).to_pandas()
            rows = np.array([index[(s, p)] for s, p in zip(frame["seq_id"], frame["pos"], strict=True)])
            rebuilt_NF[rows, frame["latent"].to_numpy()] = frame["value"].to_numpy()
        np.testing.assert_allclose(rebuilt_NF, dense_NF, rtol=1e-5, atol=1e-6)
        assert (dense_NF > 0).sum() == sum(read_json(f"{plan.features}/_shards/part-{s:05d}.json")["files"][entry["name"]]["rows"]
                                           for s in plan.shards)


def test_pushdown_queries_match_the_dense_encode(stage):
    plan, _ = stage
    keys, acts_ND = dense_rows(plan)
    entry = plan.saes[0]
    with torch.no_grad():
        dense_NF = load_sae(entry["uri"]).encode(torch.from_numpy(acts_ND.astype(np.float32))).numpy()
    latent = int(np.argmax((dense_NF > 0).sum(axis=0)))
    top = top_contexts(plan.features, entry["name"], latent, limit=5)
    expected = np.sort(dense_NF[:, latent])[::-1][:5]
    np.testing.assert_allclose(top["value"].to_numpy(), expected, rtol=1e-5)
    row = int(np.argmax(dense_NF[:, latent]))
    active = active_at(plan.features, entry["name"], int(keys["seq_id"][row]), int(keys["pos"][row]))
    assert sorted(active["latent"]) == sorted(np.flatnonzero(dense_NF[row]).tolist())
    with pytest.raises(FeaturesInputError, match=r"latent 9999 is not a latent index \(0..63\)"):
        top_contexts(plan.features, entry["name"], 9999)


def test_tables_are_written_validated_and_the_stage_commits(stage, tiny):
    plan, result = stage
    manifest = read_json(result["manifest"])
    assert manifest["tokens"] == 8 * 31  # 8 held-out contexts, BOS dropped
    for entry in plan.saes:
        folder = sae_folder(plan.features, entry["name"])
        stats = read_table(f"{folder}/stats.parquet")
        assert len(stats) == entry["d_sae"] and stats["histogram"].map(len).eq(24).all()
        assert (stats["histogram"].map(sum) == stats["fire_count"]).all()
        examples = read_table(f"{folder}/examples.parquet")
        live = stats[stats["fire_count"] > 0]
        top = examples[examples["kind"] == "top"].groupby("latent")["value"].max()
        np.testing.assert_allclose(top.to_numpy(), live.set_index("latent").loc[top.index, "max_activation"].to_numpy())
        assert examples.groupby("latent")["kind"].apply(lambda k: (k == "quantile").sum()).max() == 8  # 4 bins x 2
        # The example token's own activation is in its window, where the highlight goes.
        for e in examples.head(20).itertuples():
            assert e.acts[e.pos - e.window_start] == pytest.approx(e.value)
        attribution = read_table(f"{folder}/attribution.parquet")
        assert attribution["latent"].nunique() == 4
        assert (attribution["removed_pos"] < attribution["pos"]).all()
        assert json.loads(open(f"{plan.features}/neuronpedia/{entry['name']}.json").read())[0]["index"] == 0
    assert "topk-b" in open(result["browser"]).read()


def test_logit_lens_and_ablation_against_a_direct_computation(stage, tiny):
    plan, _ = stage
    entry = plan.saes[0]
    model = load_model(str(tiny["model"]), device="cpu")[0]
    sae = load_sae(entry["uri"])
    lens = read_table(f"{sae_folder(plan.features, entry['name'])}/logit_lens.parquet")
    d_D = sae.W_dec[3].detach()
    ln = model.transformer.ln_f
    logits_V = ((d_D - d_D.mean()) * ln.weight) @ model.lm_head.weight.T
    promoted = lens[(lens["latent"] == 3) & (lens["direction"] == "promoted")].sort_values("rank")
    assert promoted["token_id"].tolist() == logits_V.topk(10).indices.tolist()
    # One ablation by hand: drop the token, run the model to the hookpoint, re-encode the last position.
    row = read_table(f"{sae_folder(plan.features, entry['name'])}/attribution.parquet").iloc[0]
    from infra.activations.store import read_tokens_table
    from infra.lm.hookpoints import capture_activations
    from infra.lm.tokens import tokens_from_table

    seq, pos, removed, latent = int(row.seq_id), int(row.pos), int(row.removed_pos), int(row.latent)
    context = tokens_from_table(read_tokens_table(plan.harvest)).token_ids_NS[seq][: pos + 1].astype(np.int64)
    ablated = torch.from_numpy(np.delete(context, removed))[None]
    with torch.no_grad():
        acts = capture_activations(model, [TINY_HOOK], ablated)[TINY_HOOK][:, -1]
        value = float(sae.encode(acts)[0, latent])
    assert value - row.original == pytest.approx(row.delta, abs=1e-4)


def test_rerun_is_cached_and_a_lost_sae_is_redone_alone(stage):
    plan, result = stage
    assert run_features(plan, in_process=True)["cached"] is True
    manifest = Path(result["manifest"])
    manifest.unlink()
    shutil.rmtree(sae_folder(plan.features, "topk-b"))
    stamp = (manifest.parent / "saes" / "topk-a" / "stats.parquet").stat().st_mtime_ns
    rerun = run_features(plan, in_process=True)
    assert rerun["cached"] is False and manifest.exists()
    assert (manifest.parent / "saes" / "topk-a" / "stats.parquet").stat().st_mtime_ns == stamp
    assert (manifest.parent / "saes" / "topk-b" / "stats.parquet").exists()


def test_bad_inputs_fail_before_compute_naming_the_artifact(tiny, tmp_path):
    harvest, model = tiny["harvest"], str(tiny["model"])
    sae = load_sae(str(tiny["saes"] / "topk-a"))
    cases = {
        "wide": ({"hook_name": TINY_HOOK, "model_name": model}, r"has d_in=16 but harvest .* stores d_model=32"),
        "hook": ({"hook_name": "blocks.2.hook_resid_post", "model_name": model}, r"reads hookpoint 'blocks.2.hook_resid_post', which harvest"),
        "other": ({"hook_name": TINY_HOOK, "model_name": "EleutherAI/pythia-70m"}, r"trained on model \['EleutherAI/pythia-70m'\], but harvest"),
    }
    for name, (metadata, message) in cases.items():
        from sae_core import SaeConfig, build_sae

        bad = build_sae(SaeConfig(architecture="topk", d_in=16, d_sae=32, k=4)) if name == "wide" else sae
        save_sae(bad, str(tmp_path / name), metadata=metadata)
        with pytest.raises(FeaturesInputError, match=message):
            plan_features(str(tmp_path / name), harvest, str(tmp_path / "root"))
    assert not (tmp_path / "root").exists()  # nothing written


def test_top_examples_of_a_recovered_feature_are_where_it_fires_most(tmp_path):
    truth = SyntheticFeatures(d=32, num_features=48, firing_probability=0.02, seed=0)
    sae = train_sae(truth.batches(256, 800), d_in=32, d_sae=96, k=4, steps=800)
    coef_TN = synthetic_coefficients(truth, rows=16 * 256, seed=7)
    # Each feature's five strongest firings are planted 0.1 apart (above the sampled (0, 1]), in rows of their
    # own, so "where it fires most" is unambiguous at the precision an SAE reads it with.
    planted_NR = np.random.default_rng(1).permutation(len(coef_TN))[: truth.num_features * 5].reshape(-1, 5)
    for feature, rows in enumerate(planted_NR):
        coef_TN[rows, feature] = [1.9, 1.8, 1.7, 1.6, 1.5]
    harvest = write_synthetic_harvest(str(tmp_path), truth, coef_TN)
    save_sae(sae, str(tmp_path / "saes" / "synthetic-topk"), metadata={"hook_name": SYNTH_HOOK})
    plan = plan_features(str(tmp_path / "saes" / "synthetic-topk"), harvest, str(tmp_path / "root"), contexts=0,
                         settings=FeatureSettings(top_examples=5))
    for shard in plan.shards:
        ShardEncoder(plan, device="cpu").encode(shard)
    frame = pd.concat(pq.read_table(p).to_pandas() for p in (tmp_path / "root" / "features").glob("*/latents/*/*.parquet"))
    rows = LatentRows.build(*(frame[c].to_numpy() for c in ("latent", "seq_id", "pos", "value")), 96)
    examples = select_examples(rows, 96, plan.settings)
    dec_FD = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    cos_NF = truth.directions_ND @ dec_FD.T
    recovered = [(f, int(cos_NF[f].argmax())) for f in range(truth.num_features) if float(cos_NF[f].max()) > 0.95]
    assert len(recovered) >= 30
    for feature, latent in recovered:
        top = examples[(examples["latent"] == latent) & (examples["kind"] == "top")]
        found = set(top["seq_id"] * 16 + top["pos"])
        expected = set(np.argsort(-coef_TN[:, feature], kind="stable")[:5].tolist())
        assert found == expected, (feature, latent)
