"""Layer sweeps: one grid at several hookpoints of one harvest, each layer a sweep with its single-hookpoint ids, and a summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

import tasks.sweep
from flows.preflight import PreflightError, preflight
from flows.results import LayerSweepResult
from flows.specs import HarvestSpec, SweepSpec
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.parquet_io import write_parquet_atomic
from infra.sweep.layers import LayerSweep, layers_id, write_layer_summary
from infra.sweep.run import read_results
from tests.infra.fake_harvest import HOOKPOINTS, write_fake_harvest

# --------------------------------------------------------------------------- spec and plan (no compute)

TINY_GRID = {"architectures": ["topk", "relu"], "expansion_factors": [1.0], "ks": [2, 4], "train_tokens": 40, "batch_size": 4,
             "warmup_steps": 2, "eval_contexts": 2, "splice_contexts": 1, "shuffle_buffer": 8}


def plan_ids(values: dict, harvest: str) -> tuple[str, list[str]]:
    plan = tasks.sweep.plan_from_spec(values, harvest)
    return plan.sweep_id, [p.sae_id for p in plan.points]


def test_each_layer_plans_to_the_ids_of_a_sweep_of_its_hookpoint_alone(tmp_path):
    harvest = write_fake_harvest(str(tmp_path / "data"))[0]
    layered = SweepSpec(harvest=harvest, hookpoints=list(reversed(HOOKPOINTS)), root=str(tmp_path), **TINY_GRID)
    layers = layered.layer_specs()
    assert [layer.hookpoint for layer in layers] == list(reversed(HOOKPOINTS)) and not any(layer.hookpoints for layer in layers)
    seen = set()
    for layer in layers:
        alone = SweepSpec(harvest=harvest, hookpoint=layer.hookpoint, root=str(tmp_path), **TINY_GRID)
        assert plan_ids(layer.model_dump(), harvest) == plan_ids(alone.model_dump(), harvest)
        sweep_id, sae_ids = plan_ids(layer.model_dump(), harvest)
        assert sweep_id not in seen and len(sae_ids) == 3
        seen.add(sweep_id)
    plain = SweepSpec(harvest=harvest, hookpoint=HOOKPOINTS[0], root=str(tmp_path), **TINY_GRID)
    assert plain.layer_specs() == [plain]  # a sweep without hookpoints plans (and hashes) as before


def test_a_layer_sweep_harvests_every_layer_in_one_harvest():
    spec = SweepSpec(hookpoints=["blocks.2.hook_resid_post", "blocks.4.hook_mlp_out"])
    assert spec.harvest_spec.hookpoints == ["blocks.2.hook_resid_post", "blocks.4.hook_mlp_out"]
    assert all(layer.harvest_spec == spec.harvest_spec for layer in spec.layer_specs())
    assert SweepSpec.model_validate(spec.model_dump()) == spec  # Prefect re-validates parameters: the same spec
    # A harvest_spec that names other hookpoints (the UI's form sends its default) keeps them and gains the layers.
    given = SweepSpec(hookpoints=["blocks.2.hook_resid_post"], harvest_spec=HarvestSpec(hookpoints=["blocks.3.hook_resid_post"]))
    assert given.harvest_spec.hookpoints == ["blocks.3.hook_resid_post", "blocks.2.hook_resid_post"]
    assert SweepSpec.model_validate(given.model_dump()) == given
    preflight(given)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"hookpoints": ["blocks.1.hook_resid_post", "blocks.1.hook_resid_post"]}, r"listed twice: each hookpoint once"),
        ({"hookpoints": ["blocks.1.resid"]}, r"hookpoint 'blocks\.1\.resid' is malformed"),
        ({"hookpoints": ["blocks.1.hook_mlp_in"], "target_hookpoint": "blocks.1.hook_mlp_out"},
         r"paired \(transcoder\) layer sweeps are not supported"),
        ({"hookpoints": ["blocks.1.hook_mlp_in"], "kinds": ["sae", "transcoder"]}, r"paired \(transcoder\) layer sweeps are not supported"),
    ],
)
def test_bad_layer_specs_are_refused(overrides, rule):
    with pytest.raises(ValidationError, match=rule):
        SweepSpec(**overrides)


def test_a_layer_missing_from_the_stored_harvest_fails_preflight(tmp_path):
    harvest = write_fake_harvest(str(tmp_path / "data"))[0]
    with pytest.raises(PreflightError) as caught:
        preflight(SweepSpec(harvest=harvest, hookpoints=[HOOKPOINTS[0], "blocks.5.hook_resid_post"], ks=[4]))
    message = str(caught.value)
    assert message.startswith("hookpoints: ['blocks.5.hook_resid_post'] was not harvested in ") and harvest in message
    assert f"it has {HOOKPOINTS}" in message and "\n" not in message


# --------------------------------------------------------------------------- the flow, end to end

LAYERS = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]


@pytest.fixture(scope="module")
def layer_harvest(tmp_path_factory) -> tuple[str, Path]:
    from tests.infra.tiny_models import build_tiny_model

    base = tmp_path_factory.mktemp("layers")
    model = build_tiny_model("gpt2", base / "gpt2")
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=32, num_tokens=32 * 40)
    job = plan_harvest(str(model), LAYERS, spec, str(base / "root"), dtype="float32", contexts_per_shard=20)
    harvest_in_process(job, device="cpu")
    return job.harvest, base / "root"


def layer_spec(harvest: str, root: Path, **overrides) -> SweepSpec:
    values = {"name": "tiny", "harvest": harvest, "architectures": ["topk"], "expansion_factors": [2.0], "ks": [4, 8], "lrs": [3e-3],
              "train_tokens": 256 * 30, "batch_size": 256, "warmup_steps": 5, "eval_contexts": 4, "splice_contexts": 2,
              "checkpoint_every": 100, "shuffle_buffer": 1024, "root": str(root), "wandb_mode": "disabled"}
    return SweepSpec(**{**values, **overrides})


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_server", "ray_local")
def test_layer_sweep_tabulates_and_plots_across_layers_and_serves_single_layer_sweeps(layer_harvest, monkeypatch):
    from flows.sweep import sweep

    harvest, root = layer_harvest
    swept = sweep(layer_spec(harvest, root, hookpoints=LAYERS[::-1]))
    assert isinstance(swept, LayerSweepResult) and list(swept.layers) == LAYERS[::-1]
    folder = Path(swept.report).parent
    assert folder == root / "evals" / swept.layers_id == root / "evals" / layers_id([s.sweep_id for s in swept.layers.values()])
    table = pd.read_parquet(swept.results)
    assert table["hookpoint"].tolist() == [LAYERS[0]] * 2 + [LAYERS[1]] * 2 and table["layer"].tolist() == [0, 0, 2, 2]
    for hookpoint, layer in swept.layers.items():
        own = read_results(layer.results).set_index("sae_id")
        rows = table[table["hookpoint"] == hookpoint].set_index("sae_id")
        assert rows["sweep_id"].eq(layer.sweep_id).all() and set(rows.index) == set(own.index)
        assert rows["explained_variance"].to_dict() == own["explained_variance"].to_dict()
        assert sorted(rows["point"]) == ["topk-64-k4-lr0-003-s0", "topk-64-k8-lr0-003-s0"]
        assert (folder.parent / layer.sweep_id / "report.md").is_file()
    assert (table["status"] == "finished").all() and table["ce_loss_recovered"].notna().all()
    for name in ("l0_vs_explained_variance_by_layer.png", "l0_vs_ce_loss_recovered_by_layer.png", "explained_variance_vs_layer.png",
                 "ce_loss_recovered_vs_layer.png", "l0_vs_layer.png"):
        with Image.open(folder / "plots" / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
            image.verify()
    report = Path(swept.report).read_text()
    assert all(f"[report](../{layer.sweep_id}/report.md)" in report for layer in swept.layers.values())
    assert "![explained_variance_vs_layer](plots/explained_variance_vs_layer.png)" in report

    def must_not_train(*args, **kwargs):
        raise AssertionError("a layer sweep's work should serve the single-layer sweep")

    monkeypatch.setattr(tasks.sweep, "run_groups", must_not_train)
    assert sweep(layer_spec(harvest, root, hookpoint=LAYERS[1])) == swept.layers[LAYERS[1]]


# --------------------------------------------------------------------------- the summary alone (no training)


def fake_results(tmp_path: Path, hookpoint: str, sweep_id: str, ks: list[int]) -> LayerSweep:
    rows = [{"sae_id": f"topk-64-k{k}-lr0-003-s0-{sweep_id[-4:]}{k}", "architecture": "topk", "d_sae": 64, "expansion_factor": 2.0,
             "k": k, "sparsity_coefficient": None, "lr": 3e-3, "seed": 0, "status": "finished", "epochs": 1.0, "sae_uri": "s",
             "features_uri": "f", "l0": float(k), "explained_variance": 0.5 + k / 100, "dead_fraction": 0.0,
             "dead_fraction_tokens": 100.0} for k in ks]
    frame = pd.DataFrame(rows).astype({"k": "Int64", "sparsity_coefficient": "float64"})
    uri = str(tmp_path / sweep_id / "results.parquet")
    write_parquet_atomic(uri, frame)
    return LayerSweep(hookpoint, sweep_id, uri, str(tmp_path / sweep_id / "report.md"))


def test_the_summary_orders_layers_by_depth_and_refuses_layers_with_other_grids(tmp_path):
    layers = [fake_results(tmp_path, "blocks.4.hook_mlp_out", "s-aaaa", [4, 8]),
              fake_results(tmp_path, "blocks.1.hook_resid_post", "s-bbbb", [4, 8]),
              fake_results(tmp_path, "blocks.4.hook_resid_post", "s-cccc", [4, 8])]
    summary = write_layer_summary(str(tmp_path), "h", layers)
    table = pd.read_parquet(summary.results)
    assert table["layer"].tolist() == [1, 1, 4, 4, 4, 4] and table["hookpoint"].iloc[2] == "blocks.4.hook_mlp_out"
    assert summary.layers_id == layers_id(["s-cccc", "s-aaaa", "s-bbbb"])  # order-free
    assert Path(summary.report).read_text() == summary.markdown  # what the task publishes is what was written
    assert "l0_vs_ce_loss_recovered_by_layer.png" not in summary.plots  # no splice metrics, no CE plots
    for uri in summary.plots.values():
        with Image.open(uri) as image:
            image.verify()
    uneven = [*layers[:2], fake_results(tmp_path, "blocks.4.hook_resid_post", "s-dddd", [4])]
    with pytest.raises(ValueError, match=r"every layer has the same grid points"):
        write_layer_summary(str(tmp_path), "h", uneven)
