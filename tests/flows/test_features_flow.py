"""The features flow under Prefect + Ray on a tiny model, its link from the sweep report, and the CLI's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.sae_store import load_sae, save_sae
from sae_core import SaeConfig, build_sae
from saeflow.cli import main
from tests.infra.feature_fixtures import TINY_HOOK, tiny_harvest, tiny_sae


@pytest.fixture(scope="module")
def sweep_like(tmp_path_factory):
    base = tmp_path_factory.mktemp("features-flow")
    harvest, model = tiny_harvest(base)
    root = base / "root"
    saes = root / "saes" / "tiny-sweep-0123456789"
    tiny_sae(harvest, str(saes / "topk-a"), str(model))
    tiny_sae(harvest, str(saes / "topk-b"), str(model), d_sae=128, seed=1)
    report = root / "evals" / "tiny-sweep-0123456789" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text("# Sweep `tiny-sweep-0123456789`\n")
    return {"harvest": harvest, "model": model, "saes": saes, "root": root, "report": report}


@pytest.mark.e2e
@pytest.mark.usefixtures("prefect_server", "ray_local")
def test_features_flow_runs_on_ray_links_the_sweep_report_and_caches(sweep_like):
    from flows.features import FeaturesSpec, features

    spec = FeaturesSpec(saes=str(sweep_like["saes"]), harvest=sweep_like["harvest"], root=str(sweep_like["root"]), contexts=8,
                        ablation_latents=2)
    described = features(spec)
    browser, folder = described.browser, Path(described.folder)
    assert Path(browser).parent == folder and described.manifest == str(folder / "_manifest.json")
    manifest = json.loads(Path(described.manifest).read_text())
    assert described.features_id == manifest["features_id"]
    assert [s["name"] for s in manifest["saes"]] == ["topk-a", "topk-b"]
    assert sorted(p.name for p in folder.glob("latents/*")) == ["sae=topk-a", "sae=topk-b"]
    report = sweep_like["report"].read_text()
    assert f"[{manifest['features_id']}](../../features/{manifest['features_id']}/browser.html)" in report
    stamp = Path(browser).stat().st_mtime_ns
    assert features(spec) == described and Path(browser).stat().st_mtime_ns == stamp
    assert sweep_like["report"].read_text().count(f"[{manifest['features_id']}]") == 1


def test_cli_rejects_mismatched_saes_in_one_line_before_compute(sweep_like, tmp_path, capsys):
    wide = tmp_path / "wide"
    save_sae(build_sae(SaeConfig(architecture="topk", d_in=16, d_sae=32, k=4)), str(wide),
             metadata={"hook_name": TINY_HOOK, "model_name": str(sweep_like["model"])})
    other = tmp_path / "other"
    save_sae(load_sae(str(sweep_like["saes"] / "topk-a")), str(other),
             metadata={"hook_name": TINY_HOOK, "model_name": "EleutherAI/pythia-70m"})
    hook = tmp_path / "hook"
    save_sae(load_sae(str(sweep_like["saes"] / "topk-a")), str(hook), metadata={"hook_name": "blocks.0.hook_resid_post"})
    for sae, message in ((wide, "has d_in=16 but harvest"), (other, "was trained on model ['EleutherAI/pythia-70m']"),
                         (hook, "reads hookpoint 'blocks.0.hook_resid_post', which harvest")):
        code = main(["features", "--set", f"saes={sae}", "--set", f"harvest={sweep_like['harvest']}",
                     "--set", f"root={tmp_path / 'root'}"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith("saeflow features: error: --set saes: SAE ") and message in err
    assert main(["features", "--set", f"saes={tmp_path}/none", "--set", f"harvest={sweep_like['harvest']}"]) == 2
    assert "neither an SAE directory" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()
