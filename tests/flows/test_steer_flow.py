"""The steer flow under Prefect + Ray on a tiny model, and the CLI's one-line errors before compute."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from infra.sae_store import load_sae, save_sae
from sae_core import SaeConfig, build_sae
from saeflow.cli import main
from tests.infra.feature_fixtures import TINY_HOOK, tiny_harvest, tiny_sae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("steer-flow")
    harvest, model = tiny_harvest(base, contexts=8)
    return {"harvest": harvest, "model": model, "sae": tiny_sae(harvest, str(base / "sae"), str(model)), "base": base}


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_server", "ray_local")
def test_steer_flow_runs_on_ray_and_caches(tiny, tmp_path):
    from flows.steer import SteerSpec, steer

    # The SAE sits where a sweep puts it, beside its sweep's report: the run gets a line there.
    sae = save_sae(load_sae(tiny["sae"]), str(tmp_path / "saes" / "tiny-sweep-0123456789" / "topk-a"),
                   metadata=json.loads((Path(tiny["sae"]) / "cfg.json").read_text())["metadata"])
    report = tmp_path / "evals" / "tiny-sweep-0123456789" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# Sweep `tiny-sweep-0123456789`\n\n## Feature browsers\n\n- [f1](../../features/f1/browser.html): 1 SAEs\n")
    spec = SteerSpec(model=str(tiny["model"]), sae=sae, harvest=tiny["harvest"], prompts=["It was the best of times"],
                     latents=[1], scales=[4.0], clamp_latents=[2], clamp_values=[20.0], max_new_tokens=4, ablation_latents=[1],
                     contexts=2, root=str(tmp_path))
    steered = steer(spec)
    hub = report.read_text()
    assert "- [f1](../../features/f1/browser.html)" in hub  # the features section is kept
    line = f"- [{steered.steer_id}](../../steer/{steered.steer_id}/report.md): SAE `topk-a`, steered 1, clamped 2, ablated 1, 1 prompts"
    assert f"## Steering runs\n\n{line}\n" in hub
    folder = Path(steered.report).parent
    assert steered.generations == str(folder / "generations.parquet") and folder.name == steered.steer_id
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["conditions"] == ["add", "clamp"] and set(manifest["files"]) == {"generations", "hookpoint_ablation", "latent_ablation"}
    assert len(pd.read_parquet(folder / "generations.parquet")) == 2
    stamp = (folder / "_manifest.json").stat().st_mtime_ns
    assert steer(spec) == steered and (folder / "_manifest.json").stat().st_mtime_ns == stamp
    assert report.read_text().count(f"[{steered.steer_id}]") == 1


def test_cli_rejects_bad_steering_inputs_in_one_line_before_compute(tiny, tmp_path, capsys):
    wide = save_sae(build_sae(SaeConfig(architecture="topk", d_in=16, d_sae=32, k=4)), str(tmp_path / "wide"), metadata={"hook_name": TINY_HOOK})
    hook = save_sae(load_sae(tiny["sae"]), str(tmp_path / "hook"), metadata={"hook_name": "blocks.0.hook_resid_post"})
    base = ["--set", f"model={tiny['model']}", "--set", f"root={tmp_path / 'root'}"]
    cases = (
        ([f"sae={tiny['sae']}", "latents=[64]", "scales=[1]"], "--set latents: latent 64 is out of range: the SAE has d_sae=64"),
        ([f"sae={tiny['sae']}", "clamp_latents=[3]", "clamp_values=[.inf]"], "--set clamp_values.0: Input should be a finite number"),
        ([f"sae={wide}", "latents=[1]", "scales=[1]"], "has d_in=16 but the model's d_model is 32"),
        ([f"sae={hook}", f"hookpoint={TINY_HOOK}", "latents=[1]", "scales=[1]"], "reads hookpoint 'blocks.0.hook_resid_post', not the requested"),
        ([f"sae={tiny['sae']}", "latents=[1, 2]", "scales=[1]"], "latents has 2 entries but scales has 1"),
        (["hookpoint=blocks.7.hook_resid_post"], "hookpoint 'blocks.7.hook_resid_post' is out of range"),
        (["latents=[1]", "scales=[1]", f"hookpoint={TINY_HOOK}"], "name SAE latents: set sae"),
        ([f"sae={tmp_path}/none", "latents=[1]", "scales=[1]"], "is not an SAE directory"),
    )
    for sets, message in cases:
        code = main(["steer", *base, *[arg for s in sets for arg in ("--set", s)]])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "root").exists()
