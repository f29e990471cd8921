"""A paired sweep on the packaged SmolLM2: SAEs, transcoders and skip transcoders of layer 6's MLP, side by side.

The proof issue 17 asks for: {SAE, transcoder, skip transcoder} x k trained from one (mlp_in, mlp_out)
stream, every point spliced (a transcoder in place of the MLP, against zero-ablating the MLP), and
the report's CE-recovered-vs-L0 plot drawn per kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from flows.sweep import SweepSpec, sweep
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.models import PACKAGED_SMOLLM2
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.sweep.run import read_results

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "ray_local")]
MLP_IN, MLP_OUT = "blocks.6.hook_mlp_in", "blocks.6.hook_mlp_out"
KINDS = ["sae", "transcoder", "skip_transcoder"]


@pytest.fixture(scope="module")
def mlp_harvest(tmp_path_factory, smollm2_cache) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("transcoder-sweep")
    tokens = TokenSpec(source=BUILTIN_PYDOC, tokenizer=PACKAGED_SMOLLM2, context_length=64, num_tokens=64 * 48)
    job = plan_harvest(PACKAGED_SMOLLM2, [MLP_IN, MLP_OUT], tokens, str(base / "root"), dtype="float32", contexts_per_shard=16)
    harvest_in_process(job, device="cpu")
    return job.harvest, base / "root"


@pytest.fixture(scope="module")
def mlp_sweep(mlp_harvest):
    harvest, root = mlp_harvest
    return sweep(SweepSpec(
        name="mlp6", harvest=harvest, hookpoint=MLP_IN, target_hookpoint=MLP_OUT, kinds=KINDS, architectures=["topk"],
        expansion_factors=[1.0], ks=[8, 32], lrs=[2e-3], train_tokens=256 * 40, batch_size=256, warmup_steps=5,
        eval_contexts=8, splice_contexts=4, checkpoint_every=20, shuffle_buffer=2048, root=str(root), wandb_mode="disabled",
    ))


def test_sweep_over_kinds_splices_each_in_place_of_the_mlp_and_plots_per_kind(mlp_sweep):
    swept = mlp_sweep
    results = read_results(swept.results)
    assert sorted(zip(results["kind"], results["k"], strict=True)) == sorted((kind, k) for kind in KINDS for k in (8, 32))
    assert (results["status"] == "finished").all()
    # Every point predicts MLP 6's output and is scored there: CE recovered against zero-ablating the MLP, with its interval.
    assert results["explained_variance"].gt(0.05).all(), results[["sae_id", "explained_variance"]]
    # The skip connection carries MLP 6's linear part, so at equal k it predicts the output better (Paulo et al. 2025).
    ev = results.pivot(index="k", columns="kind", values="explained_variance")
    assert (ev["skip_transcoder"] > ev["transcoder"]).all(), ev
    assert results["ce_loss_recovered"].notna().all() and results["kl_spliced"].ge(0).all()
    assert (results["ce_loss_recovered_ci_low"] <= results["ce_loss_recovered_ci_high"]).all()
    # TopK caps every kind at the same budget: at most k active latents per token (fewer where a top-k value is <= 0).
    assert (results["l0"] <= results["k"] + 1e-6).all() and results["l0"].gt(1).all()
    report = Path(swept.report).read_text()
    assert "-> target `blocks.6.hook_mlp_out`" in report and "| transcoder" in report and "| skip_transcoder" in report
    assert (Path(swept.report).parent / "plots" / "l0_vs_ce_loss_recovered.png").read_bytes().startswith(b"\x89PNG")
    # The exports say what each point reads and writes: a transcoder MLP-in -> MLP-out, an SAE of this sweep MLP-out.
    for row in results.itertuples():
        metadata = json.loads((Path(row.sae_uri) / "cfg.json").read_text())["metadata"]
        if row.kind == "sae":
            assert metadata["hook_name"] == MLP_OUT and "hook_name_out" not in metadata
        else:
            assert (metadata["hook_name"], metadata["hook_name_out"]) == (MLP_IN, MLP_OUT)


def test_features_of_a_transcoder_are_read_where_it_reads(mlp_harvest, mlp_sweep):
    """The features stage on a transcoder: encoded at MLP-in (what its encoder reads), top examples are its real activations."""
    from flows.features import FeaturesSpec, features
    from infra.activations.store import open_activations
    from infra.sae_store import load_sae

    harvest, root = mlp_harvest
    results = read_results(mlp_sweep.results)
    transcoder = results[(results["kind"] == "transcoder") & (results["k"] == 8)].iloc[0].sae_uri
    described = features(FeaturesSpec(saes=transcoder, harvest=harvest, root=str(root), contexts=8, ablation_latents=2))
    manifest = json.loads(Path(described.manifest).read_text())
    assert manifest["hookpoint"] == MLP_IN
    (details,) = Path(described.folder).glob("saes/*/examples.parquet")
    top = pd.read_parquet(details).query("kind == 'top' and rank == 0").head(5)
    assert len(top) == 5
    rows = open_activations(harvest, MLP_IN).to_table(columns=["seq_id", "pos", "activation"]).to_pandas()
    model = load_sae(transcoder)
    for example in top.itertuples():
        row = rows[(rows["seq_id"] == example.seq_id) & (rows["pos"] == example.pos)].iloc[0]
        with torch.no_grad():
            value = model.encode(torch.as_tensor(row.activation, dtype=torch.float32)[None])[0, example.latent].item()
        assert abs(value - example.value) <= 1e-3 * max(1.0, abs(value)), (example, value)
