"""The `saeflow` CLI in-process: spec errors (fast), then harvest -> query -> sweep -> query --results (e2e)."""

from __future__ import annotations

from pathlib import Path

import pytest

# Import the flows (so Prefect sets up its logging) at collection, while sys.stderr is the real one:
# Prefect's console handler keeps the stream it first saw, and capsys closes its own after each test.
import flows.diff  # noqa: F401
import flows.harvest  # noqa: F401
import flows.sweep  # noqa: F401
from flows.cli import main
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
