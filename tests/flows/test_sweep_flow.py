"""The sweep flow end to end on a tiny local model: results, plots, SAELens exports, caching."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

import tasks.sweep
from flows.sweep import SweepSpec, sweep
from infra.activations.store import read_manifest
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.report_links import link_from_sweep_report
from infra.sae_store import load_sae
from infra.sweep.grid import SweepSpecError
from infra.sweep.run import read_results
from tests.infra.tiny_models import build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "ray_local")]
HOOKPOINT = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def stored_harvest(tmp_path_factory) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("sweep")
    model = build_tiny_model("gpt2", base / "gpt2")
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=32, num_tokens=32 * 80)
    job = plan_harvest(str(model), [HOOKPOINT], spec, str(base / "root"), dtype="float32", contexts_per_shard=16)
    harvest_in_process(job, device="cpu")
    return job.harvest, base / "root"


def spec(harvest: str, root: Path, **overrides) -> SweepSpec:
    values = {
        "name": "tiny",
        "harvest": harvest,
        "hookpoint": HOOKPOINT,
        "architectures": ["topk", "relu"],
        "expansion_factors": [4.0],
        "ks": [4, 8],
        "sparsity_coefficients": [0.3, 1.0],
        "lrs": [3e-3],
        "train_tokens": 256 * 120,
        "batch_size": 256,
        "warmup_steps": 10,
        "eval_contexts": 8,
        "splice_contexts": 4,
        "splice_baselines": ["mean", "resample"],
        "checkpoint_every": 40,
        "shuffle_buffer": 2048,
        "root": str(root),
        "wandb_mode": "disabled",
    }
    return SweepSpec(**{**values, **overrides})


def test_sweep_trains_evaluates_reports_and_caches(stored_harvest, monkeypatch):
    harvest, root = stored_harvest
    swept = sweep(spec(harvest, root))
    report_uri, folder = swept.report, Path(swept.report).parent
    assert swept.results == str(folder / "results.parquet") and Path(swept.saes) == root / "saes" / swept.sweep_id
    results = read_results(swept.results)
    assert len(results) == 4 and set(results["architecture"]) == {"topk", "relu"}
    assert (results["explained_variance"] > 0.5).all(), results[["sae_id", "explained_variance"]]
    assert results["ce_loss_recovered"].notna().all() and results["kl_spliced"].ge(0).all()
    assert results["device_seconds"].gt(0).all()
    # Mean and resample ablation baselines ride along; ce_loss_recovered stays SAELens's zero-ablation figure.
    assert results[["ce_loss_recovered_mean_ablation", "ce_loss_recovered_resample_ablation"]].notna().all(axis=None)
    assert (results["ce_mean_ablation"] < results["ce_zero_ablation"]).all()
    # Every headline score carries its 95% bootstrap interval over held-out contexts.
    for name, value in (("ce_loss_recovered", "ce_loss_recovered"), ("kl_div_score", "kl_div_score"),
                        ("kl_spliced", "kl_spliced"), ("explained_variance", "explained_variance_pooled")):
        low, high = results[f"{name}_ci_low"], results[f"{name}_ci_high"]
        assert (low <= results[value]).all() and (results[value] <= high).all() and (low < high).all(), name
    assert (results["explained_variance_pooled"] - results["explained_variance"]).abs().max() < 0.05
    assert "ce_loss_recovered_ci_low" in Path(report_uri).read_text()
    for name in ("l0_vs_explained_variance.png", "l0_vs_ce_loss_recovered.png", "explained_variance_vs_device_seconds.png"):
        assert (folder / "plots" / name).read_bytes().startswith(b"\x89PNG")
    for row in results.itertuples():
        assert load_sae(row.sae_uri).cfg.d_sae == 128
        features = pd.read_parquet(row.features_uri)
        assert len(features) == 128 and features["density"].between(0, 1).all()
    report = Path(report_uri).read_text()
    assert "| topk" in report
    assert "## Decoder similarity across SAEs (MCS)" in report and "![mcs](plots/mcs.png)" in report
    # 72 training contexts x 31 non-BOS rows = 2232 rows; 120 x 256 tokens loop over them ~13.8 times.
    assert results["epochs"].round(2).eq(round(256 * 120 / (72 * 31), 2)).all()
    assert "13.76 epochs** (the stream looped" in report
    uses_k = results["architecture"].eq("topk")
    assert results.loc[uses_k, "sparsity_coefficient"].isna().all() and results.loc[~uses_k, "k"].isna().all()
    assert results.loc[uses_k, "k"].notna().all() and results.loc[~uses_k, "sparsity_coefficient"].notna().all()
    cfg = json.loads((Path(results["sae_uri"].iloc[0]) / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == read_manifest(harvest)["model"]  # a local model: its path, no alias

    def must_not_train(*args, **kwargs):
        raise AssertionError("nothing should be trained again")

    # A later stage linked a steering run from the report; the re-run rewrites the report and keeps the link.
    sae_uris = list(results["sae_uri"])
    link_from_sweep_report(sae_uris, "Steering runs", "s1", str(root / "steer" / "s1" / "report.md"), "steered 3")
    monkeypatch.setattr(tasks.sweep, "run_groups", must_not_train)
    assert sweep(spec(harvest, root)) == swept
    monkeypatch.undo()
    assert Path(report_uri).read_text().endswith("\n## Steering runs\n\n- [s1](../../steer/s1/report.md): steered 3\n")

    trained = []
    real_run_groups = tasks.sweep.run_groups
    monkeypatch.setattr(tasks.sweep, "run_groups", lambda plan, groups, *a, **k: trained.append(groups) or real_run_groups(plan, groups, *a, **k))
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("saes/*/*/sae_weights.safetensors")}
    sweep(spec(harvest, root, ks=[4, 8, 2]))
    new_ids = {sae_id for groups in trained for group in groups for sae_id in group}
    assert len(new_ids) == 1 and next(iter(new_ids)).startswith("topk-128-k2")
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items()), "a finished point was retrained"
    assert len(read_results(str(folder / "results.parquet"))) == 5


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        # The spec rejects bad axis values itself (so do the UI forms); flows.preflight checks k against the harvest.
        ({"ks": [999]}, SweepSpecError, r"ks: k=999 exceeds the smallest dictionary \(128 latents"),
        ({"architectures": ["sigmoid"]}, ValidationError, r"architectures\.0\n.*'relu', 'topk'"),
        ({"lrs": [-1.0]}, ValidationError, r"lrs\.0\n.*greater than 0"),
        ({"hookpoint": "blocks.0.hook_mlp_out"}, SweepSpecError, r"was not harvested"),
    ],
)
def test_bad_sweep_specs_fail_before_training(stored_harvest, overrides, error, pattern, tmp_path):
    harvest, _ = stored_harvest
    with pytest.raises(error, match=pattern):
        sweep(spec(harvest, tmp_path, **overrides))
    assert not (tmp_path / "saes").exists()


def test_missing_harvest_is_a_clear_error(tmp_path):
    with pytest.raises(SweepSpecError, match=r"has no _manifest\.json: run the harvest flow first"):
        sweep(spec(str(tmp_path / "activations" / "nope-123"), tmp_path))
