"""The `saeflow` CLI in-process: spec errors (fast), then harvest -> query -> sweep -> query --results (e2e)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

# Import the flows (so Prefect sets up its logging) at collection, while sys.stderr is the real one:
# Prefect's console handler keeps the stream it first saw, and capsys closes its own after each test.
import flows.diff  # noqa: F401
import flows.harvest  # noqa: F401
import flows.sweep  # noqa: F401
from saeflow.cli import build_parser, main, serve_argv
from tests.infra.tiny_models import build_tiny_model

HOOKPOINT = "blocks.1.hook_resid_post"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- spec errors (fast)


def test_bad_yaml_syntax_names_file_and_line(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("num_tokens: 100\nhookpoints: [a\n  b: c\n")
    assert main(["harvest", str(spec)]) == 2
    err = one_line_error(capsys)
    assert str(spec) in err and "line 3" in err


def test_unknown_key_in_yaml(tmp_path, capsys):
    spec = tmp_path / "unknown.yaml"
    spec.write_text("num_tokns: 100\n")
    assert main(["harvest", str(spec)]) == 2
    err = one_line_error(capsys)
    assert str(spec) in err and "num_tokns" in err and "unknown key" in err


def test_unknown_key_in_set_including_nested(capsys):
    assert main(["harvest", "--set", "hookpoint=blocks.0.hook_resid_post"]) == 2
    err = one_line_error(capsys)
    assert "--set hookpoint" in err and "unknown key" in err
    assert main(["sweep", "--set", "harvest_spec.num_tokns=10"]) == 2
    err = one_line_error(capsys)
    assert "harvest_spec.num_tokns" in err and "HarvestSpec" in err


def test_bad_value_names_key_and_rule(tmp_path, capsys):
    assert main(["harvest", "--set", "num_tokens=-5"]) == 2
    err = one_line_error(capsys)
    assert "num_tokens" in err and "greater than or equal to 2" in err
    spec = tmp_path / "neg.yaml"
    spec.write_text("harvest_spec:\n  num_tokens: -1\n")
    assert main(["sweep", str(spec)]) == 2
    err = one_line_error(capsys)
    assert str(spec) in err and "harvest_spec.num_tokens" in err


def test_missing_required_and_dry_run(tmp_path, capsys):
    assert main(["diff"]) == 2
    assert "models" in one_line_error(capsys)
    spec = tmp_path / "s.yaml"
    spec.write_text("context_length: 64\n")
    assert main(["harvest", str(spec), "--set", f"hookpoints=[{HOOKPOINT}]", "--set", "num_tokens=1000", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "context_length: 64" in out and "num_tokens: 1000" in out and HOOKPOINT in out


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("harvest", "sweep", "diff", "query", "serve", "deploy"):
        assert command in out


def test_query_needs_exactly_one_target(capsys):
    assert main(["query"]) == 2
    assert "HARVEST_URI" in one_line_error(capsys)


# --------------------------------------------------------------------------- preflight (fast, no compute)


@pytest.fixture
def tiny_config(tmp_path) -> str:
    """A model directory holding only a GPT-2 config.json: all the CLI's preflight reads."""
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_positions": 64,
                                                   "vocab_size": 100}))
    return str(model)


def bad_inputs(tmp_path: Path, model: str) -> list[tuple[list[str], list[str]]]:
    """(argv, fragments the one-line error must contain) for each bad input of the issue."""
    harvest = tmp_path / "h"
    harvest.mkdir(exist_ok=True)
    (harvest / "_manifest.json").write_text(json.dumps({"hookpoints": [HOOKPOINT], "d_model": 32}))
    return [
        (["harvest", "--set", f"model={tmp_path}/no-such-model"], ["--set model", "does not exist"]),
        (["harvest", "--set", f"model={tmp_path}"], ["--set model", "no config.json"]),
        (["harvest", "--set", f"model={model}", "--set", "hookpoints=[blocks.2.hook_resid_post]"],
         ["--set hookpoints", "out of range", "2 layers"]),
        (["harvest", "--set", f"model={model}", "--set", f"hookpoints=[{HOOKPOINT}]", "--set", "context_length=128"],
         ["--set context_length", "exceeds", "64 positions"]),
        (["harvest", "--set", "hookpoints=[blocks.1.resid]"], ["--set hookpoints", "malformed"]),
        (["harvest", "--set", f"source={tmp_path}/none.jsonl"], ["--set source", "no .txt, .jsonl or .parquet"]),
        (["harvest", "--set", "root=s3://bucket/p"], ["--set root", "s3://bucket/p", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        (["sweep", "--set", f"harvest={harvest}", "--set", "hookpoint=blocks.0.hook_mlp_out"],
         ["--set hookpoint", "was not harvested"]),
        (["sweep", "--set", f"harvest={tmp_path}/gone"], ["--set harvest", "no _manifest.json"]),
        (["sweep", "--set", "hookpoint=blocks.3.hook_mlp_out"], ["--set hookpoint", "harvest_spec.hookpoints"]),
        (["sweep", "--set", "architectures=[topkk]"], ["--set architectures.0", "'topk'", "got 'topkk'"]),
        (["sweep", "--set", "ks=[-3]"], ["--set ks.0", "greater than or equal to 1"]),
        (["sweep", "--set", "expansion_factors=[-1]"], ["--set expansion_factors.0", "greater than 0"]),
        (["sweep", "--set", "lrs=[0]"], ["--set lrs.0", "greater than 0"]),
        (["diff", "--set", f"models=[{model}]"], ["models [", "a diff needs two or more checkpoints, or one model with two or more hookpoints"]),
        (["diff", "--set", f"models=[{model}, {tmp_path}/gone]"], ["models.1", "does not exist"]),
    ]


@pytest.mark.parametrize("index", range(16))
@pytest.mark.parametrize("dry_run", [False, True])
def test_bad_inputs_exit_2_with_one_line(index, dry_run, tmp_path, tiny_config, capsys, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    argv, fragments = bad_inputs(tmp_path, tiny_config)[index]
    assert main(argv + (["--dry-run"] if dry_run else [])) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"saeflow {argv[0]}: error: ")
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert capsys.readouterr().out == ""


def test_query_rejects_bad_values_and_unknown_columns(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results.parquet"
    pd.DataFrame({"sae_id": ["a"], "architecture": ["topk"], "k": [4]}).to_parquet(results)
    assert main(["query", "--results", str(results), "--columns", "architecture,kk"]) == 2
    err = one_line_error(capsys)
    assert "--columns" in err and "'kk'" in err and "architecture" in err
    assert main(["query", str(tmp_path), "--values", "-2"]) == 2
    assert "--values -2: must be >= 0" in one_line_error(capsys)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "SAEFLOW_S3_ENDPOINT_URL", "AWS_PROFILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["query", "s3://bucket/activations/x"]) == 2
    assert "HARVEST_URI: s3://bucket/activations/x needs S3 credentials" in one_line_error(capsys)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    assert main(["query", "--results", "s3://bucket/evals/x/results.parquet"]) == 2
    assert "needs an S3 endpoint: set SAEFLOW_S3_ENDPOINT_URL" in one_line_error(capsys)
    assert main(["query", str(tmp_path / "missing")]) == 1
    assert "no _manifest.json" in one_line_error(capsys)


def test_serve_options_parse_as_the_readme_gives_them():
    args = build_parser().parse_args(["serve", "--no-server"])
    assert serve_argv(args) == ["--port", "4200", "--no-server"]
    args = build_parser().parse_args(["serve", "--port", "4300", "--pool", "p"])
    assert serve_argv(args) == ["--port", "4300", "--pool", "p"]


def test_deploy_without_a_server_is_one_line(capsys):
    with socket.socket() as probe:  # a port nothing listens on: bind, read it, close
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["deploy", "--api-url", f"http://127.0.0.1:{port}/api"]) == 1
    err = one_line_error(capsys)
    assert "no Prefect server answers" in err and str(port) in err


# Runs the CLI in a fresh interpreter and reports which heavy frameworks it imported.
PROBE = """
import sys
from saeflow.cli import build_parser, main, serve_argv
code = main(sys.argv[1:])
print("HEAVY=" + ",".join(m for m in ("torch", "prefect", "ray") if m in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def run_cli(argv: list[str], env: dict | None = None) -> tuple[int, str, str]:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=repo, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("HEAVY="), done.stderr
    return done.returncode, lines[-1].removeprefix("HEAVY="), "\n".join(lines[:-1])


def test_spec_errors_and_dry_run_import_no_prefect_torch_ray(tmp_path, tiny_config):
    code, heavy, err = run_cli(["harvest", "--set", f"model={tmp_path}/no-such-model"])
    assert (code, heavy) == (2, "") and "does not exist" in err
    code, heavy, err = run_cli(["sweep", "--set", "architectures=[topkk]", "--set", "ks=[-3]", "--dry-run"])
    assert (code, heavy) == (2, "") and "topkk" in err and "ks.0" in err
    code, heavy, err = run_cli(["harvest", "--set", f"model={tiny_config}", "--set", f"hookpoints=[{HOOKPOINT}]",
                                "--set", "context_length=32", "--dry-run"])
    assert (code, heavy, err) == (0, "", "")


def test_query_results_imports_no_prefect_torch_ray(tmp_path):
    results = tmp_path / "results.parquet"
    pd.DataFrame({"sae_id": ["a", "b"], "architecture": ["topk", "relu"], "k": [4, 0]}).to_parquet(results)
    code, heavy, err = run_cli(["query", "--results", str(results), "--columns", "sae_id,k"])
    assert (code, heavy, err) == (0, "", "")
    code, heavy, err = run_cli(["query", "s3://bucket/x"], env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})
    assert (code, heavy) == (2, "") and "needs S3 credentials" in err


# --------------------------------------------------------------------------- flows (e2e)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("cli")
    model = build_tiny_model("gpt2", base / "gpt2")
    return {"base": base, "model": str(model), "root": str(base / "root")}


def last_uri(out: str, label: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(f"{label}: ")]
    assert lines, out
    return lines[-1].split(": ", 1)[1]


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_server", "ray_local")
def test_harvest_query_sweep_results(workspace, capsys):
    base: Path = workspace["base"]
    spec = base / "harvest.yaml"
    spec.write_text(f"model: {workspace['model']}\nsource: builtin:pydoc\ncontext_length: 64\nnum_tokens: 100000\n"
                    f"dtype: float32\ncontexts_per_shard: 16\n")
    argv = ["harvest", str(spec), "--set", f"root={workspace['root']}", "--set", f"hookpoints=[{HOOKPOINT}]",
            "--set", "context_length=32", "--set", f"num_tokens={32 * 80}"]
    assert main(argv) == 0
    harvest = last_uri(capsys.readouterr().out, "harvest")
    assert Path(harvest, "_manifest.json").exists()

    assert main(["query", harvest, "--hookpoint", HOOKPOINT, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "seq_id" in out and "norm" in out and "token_id" in out and " text " in out.splitlines()[2]
    rows = [line for line in out.splitlines()[3:] if line.strip()]
    assert len(rows) == 5, out
    assert main(["query", harvest, "--seq-id", "3", "--limit", "100"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[3:] if line.strip()]
    assert len(rows) == 32 and all(row[0] == "3" for row in rows), out
    assert main(["query", harvest, "--hookpoint", "blocks.9.hook_resid_post"]) == 1
    assert "not harvested" in one_line_error(capsys)

    sweep = base / "sweep.yaml"
    sweep.write_text(f"name: cli\nharvest: {harvest}\nhookpoint: {HOOKPOINT}\narchitectures: [topk]\nks: [4]\n"
                     f"expansion_factors: [2.0]\ntrain_tokens: {256 * 40}\nbatch_size: 256\nwarmup_steps: 5\n"
                     f"eval_contexts: 8\nsplice_contexts: 2\nshuffle_buffer: 1024\nwandb_mode: disabled\n")
    # A hookpoint the harvest does not have is caught from its manifest before Prefect starts: one line, exit 2.
    assert main(["sweep", str(sweep), "--set", f"root={workspace['root']}", "--set", "hookpoint=blocks.0.hook_mlp_out"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("saeflow sweep: error: --set hookpoint: ") and "was not harvested" in err
    assert main(["sweep", str(sweep), "--set", f"root={workspace['root']}", "--set", "lrs=[0.003]"]) == 0
    out = capsys.readouterr().out
    results = last_uri(out, "results")
    assert Path(last_uri(out, "report")).exists() and Path(results).exists()

    assert main(["query", "--results", results]) == 0
    out = capsys.readouterr().out
    assert "sae_id" in out and "explained_variance" in out and "topk" in out
    assert main(["query", "--results", results, "--columns", "architecture,k,explained_variance"]) == 0
    assert "explained_variance" in capsys.readouterr().out
