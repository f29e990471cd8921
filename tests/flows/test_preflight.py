"""flows.specs validators and flows.preflight checks: bad inputs named by key and rule, no compute."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.preflight import HookpointRangeError, PreflightError, check_storage, preflight
from flows.specs import DiffSpec, HarvestSpec, SweepSpec
from infra.lm.hookpoint_names import HookpointError

S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE",
          "SAEFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def fake_model(path: Path, d_model: int = 32, vocab: dict | None = None, **config) -> str:
    """A directory with a GPT-2 style config.json (and tokenizer.json): all preflight reads."""
    path.mkdir(parents=True)
    values = {"model_type": "gpt2", "n_layer": 2, "n_embd": d_model, "n_positions": 64, "vocab_size": 100, **config}
    (path / "config.json").write_text(json.dumps(values))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab or {"a": 0, "b": 1}}, "added_tokens": []}))
    return str(path)


def fails(spec, key: str, rule: str) -> PreflightError:
    with pytest.raises(PreflightError) as caught:
        preflight(spec)
    assert caught.value.key == key and rule in caught.value.rule, caught.value
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.fixture
def no_s3_env(monkeypatch):
    for name in S3_ENV:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- spec validators


@pytest.mark.parametrize(("values", "loc", "rule"), [
    ({"architectures": ["topkk"]}, ("architectures", 0), "'relu', 'topk', 'batchtopk', 'jumprelu', 'gated', 'matryoshka_batchtopk' or 'deep_topk'"),
    ({"ks": [-3]}, ("ks", 0), "greater than or equal to 1"),
    ({"ks": [0]}, ("ks", 0), "greater than or equal to 1"),
    ({"expansion_factors": [-1]}, ("expansion_factors", 0), "greater than 0"),
    ({"lrs": [0]}, ("lrs", 0), "greater than 0"),
    ({"sparsity_coefficients": [-1]}, ("sparsity_coefficients", 0), "greater than or equal to 0"),
    ({"wandb_mode": "onlin"}, ("wandb_mode",), "'online', 'offline' or 'disabled'"),
    ({"hookpoint": "blocks.x.resid"}, ("hookpoint",), "malformed"),
    ({"train_tokens": 10}, (), "batch_size=4096 must be <= train_tokens=10"),
    ({"kinds": ["sae", "transcoder"]}, (), "kinds ['transcoder'] need target_hookpoint"),
    ({"kinds": ["crosscoder"]}, ("kinds", 0), "'sae', 'transcoder' or 'skip_transcoder'"),
    ({"target_hookpoint": "blocks.6.hook_resid_post"}, (), "equals hookpoint"),
    ({"target_hookpoint": "blocks.6.hook_mlp"}, ("target_hookpoint",), "unknown kind hook_mlp"),
])
def test_sweep_spec_rejects_bad_grid_values(values, loc, rule):
    with pytest.raises(ValidationError) as caught:
        SweepSpec.model_validate(values)
    errors = caught.value.errors()
    assert errors[0]["loc"] == loc and rule in errors[0]["msg"], errors


def test_harvest_and_diff_spec_rules():
    with pytest.raises(ValidationError, match="unknown kind hook_resid"):
        HarvestSpec(hookpoints=["blocks.1.hook_resid"])
    with pytest.raises(ValidationError, match="listed twice"):
        HarvestSpec(hookpoints=["blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out"])
    with pytest.raises(ValidationError, match="context_length=128 must be <= num_tokens=100"):
        HarvestSpec(num_tokens=100)
    with pytest.raises(ValidationError, match="a diff needs two or more checkpoints, or one model with two or more hookpoints"):
        DiffSpec(models=["a"])
    with pytest.raises(ValidationError, match="needs two or more distinct hookpoints"):
        DiffSpec(models=["a"], hookpoints=["blocks.0.hook_resid_post", "blocks.0.hook_resid_post"])
    with pytest.raises(ValidationError, match=r"hookpoints\n.*blocks\.x\.hook_resid_post. is malformed"):
        DiffSpec(models=["a"], hookpoints=["blocks.x.hook_resid_post", "blocks.0.hook_resid_post"])
    assert DiffSpec(models=["a"], hookpoints=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]).hookpoints[1] == "blocks.1.hook_resid_post"
    with pytest.raises(ValidationError, match="repeat"):
        DiffSpec(models=["a", "a"])
    with pytest.raises(ValidationError, match="not a band"):
        DiffSpec(models=["a", "b"], shared_band=(0.8, 0.2))


# --------------------------------------------------------------------------- harvest


def test_local_model_must_exist_with_a_config(tmp_path):
    fails(HarvestSpec(model=str(tmp_path / "nope")), "model", "does not exist")
    (tmp_path / "empty").mkdir()
    fails(HarvestSpec(model=str(tmp_path / "empty")), "model", "has no config.json")


def test_hookpoint_range_and_context_length_from_config_json(tmp_path):
    model = fake_model(tmp_path / "m")
    error = fails(HarvestSpec(model=model, hookpoints=["blocks.2.hook_resid_post"]), "hookpoints", "2 layers (L in 0..1)")
    assert isinstance(error, HookpointError)  # what the flows' callers already catch
    fails(HarvestSpec(model=model, hookpoints=["blocks.1.hook_resid_post"], context_length=65), "context_length",
          "exceeds")
    preflight(HarvestSpec(model=model, hookpoints=["blocks.1.hook_resid_post"], context_length=64))


def test_hub_ids_are_accepted_offline():
    preflight(HarvestSpec(model="EleutherAI/pythia-70m", revision="step1000", hookpoints=["blocks.40.hook_mlp_out"]))


def test_source_files_must_exist(tmp_path):
    fails(HarvestSpec(source=str(tmp_path / "missing.txt")), "source", "no .txt, .jsonl or .parquet")
    fails(HarvestSpec(source="builtin:wiki"), "source", "only one is 'builtin:pydoc'")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    preflight(HarvestSpec(source=str(tmp_path / "texts")))
    preflight(HarvestSpec(source=str(tmp_path / "texts" / "*.txt")))


def test_s3_root_names_the_missing_variables(no_s3_env, monkeypatch):
    error = fails(HarvestSpec(root="s3://bucket/prefix"), "root", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set")
    assert "s3://bucket/prefix" in error.rule and "storage_secret" in error.rule
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    fails(HarvestSpec(root="s3://bucket/prefix"), "root", "AWS_SECRET_ACCESS_KEY not set")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    fails(HarvestSpec(root="s3://bucket/prefix"), "root", "needs an S3 endpoint: set SAEFLOW_S3_ENDPOINT_URL")
    monkeypatch.setenv("SAEFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    preflight(HarvestSpec(root="s3://bucket/prefix"))


def test_s3_root_with_a_secret_block_is_left_to_the_flow(no_s3_env):
    preflight(HarvestSpec(root="s3://bucket/prefix", storage_secret="my-s3"))
    with pytest.raises(PreflightError, match="scheme 'gs'"):
        check_storage("gs://bucket", "root", None)


# --------------------------------------------------------------------------- sweep


def write_manifest(folder: Path, hookpoints: list[str], d_model: int = 32) -> str:
    folder.mkdir(parents=True)
    (folder / "_manifest.json").write_text(json.dumps({"format_version": 1, "hookpoints": hookpoints, "d_model": d_model}))
    return str(folder)


def test_sweep_hookpoint_must_be_in_the_stored_harvest(tmp_path):
    fails(SweepSpec(harvest=str(tmp_path / "none")), "harvest", "has no _manifest.json")
    harvest = write_manifest(tmp_path / "h", ["blocks.1.hook_resid_post"])
    fails(SweepSpec(harvest=harvest, hookpoint="blocks.0.hook_mlp_out"), "hookpoint", "was not harvested")
    fails(SweepSpec(harvest=harvest, hookpoint="blocks.1.hook_resid_post", ks=[300], expansion_factors=[8.0]), "ks",
          "k=300 exceeds the smallest dictionary (256 latents")
    preflight(SweepSpec(harvest=harvest, hookpoint="blocks.1.hook_resid_post", ks=[4]))


def test_sweep_target_hookpoint_must_be_harvested_too(tmp_path):
    harvest = write_manifest(tmp_path / "h", ["blocks.1.hook_mlp_in"])
    paired = dict(hookpoint="blocks.1.hook_mlp_in", target_hookpoint="blocks.1.hook_mlp_out", kinds=["transcoder"], ks=[4])
    fails(SweepSpec(harvest=harvest, **paired), "target_hookpoint", "'blocks.1.hook_mlp_out' was not harvested in")
    fails(SweepSpec(harvest_spec=HarvestSpec(hookpoints=["blocks.1.hook_mlp_in"]), **paired), "target_hookpoint",
          "not in harvest_spec.hookpoints ['blocks.1.hook_mlp_in']")
    preflight(SweepSpec(harvest=write_manifest(tmp_path / "both", ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"]), **paired))


def test_sweep_hookpoint_must_be_in_harvest_spec(tmp_path):
    fails(SweepSpec(hookpoint="blocks.0.hook_mlp_out"), "hookpoint", "not in harvest_spec.hookpoints")
    fails(SweepSpec(harvest_spec=HarvestSpec(model=str(tmp_path / "nope"))), "harvest_spec.model", "does not exist")


# --------------------------------------------------------------------------- diff


def test_diff_models_must_agree(tmp_path):
    a = fake_model(tmp_path / "a")
    fails(DiffSpec(models=[a, str(tmp_path / "gone")]), "models.1", "does not exist")
    fails(DiffSpec(models=[a, fake_model(tmp_path / "wide", d_model=64)]), "models", "differ in d_model")
    fails(DiffSpec(models=[a, fake_model(tmp_path / "v", vocab_size=99)]), "models", "tokenizer of")
    fails(DiffSpec(models=[a, fake_model(tmp_path / "t", vocab={"a": 0, "c": 1})]), "models", "tokenizer.json vocabulary")
    fails(DiffSpec(models=[a, fake_model(tmp_path / "b")], hookpoint="blocks.5.hook_resid_post"), "hookpoint", "out of range")
    preflight(DiffSpec(models=[a, fake_model(tmp_path / "b2")]))
    preflight(DiffSpec(models=[a, "EleutherAI/pythia-70m@step1000"]))  # hub ids: checked by the flow's task


def test_preflight_errors_pickle():
    error = pickle.loads(pickle.dumps(HookpointRangeError("hookpoints", "out of range")))
    assert (error.key, error.rule, str(error)) == ("hookpoints", "out of range", "hookpoints: out of range")
