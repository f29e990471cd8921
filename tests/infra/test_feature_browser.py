"""The feature browser in a real headless Chromium (Playwright): pick an SAE and a latent, check what is shown.

Chromium comes from Debian's `chromium` package (`make setup` installs it; Playwright's own
browser download needs a CDN this project's machines cannot reach) and is driven through
Playwright's executable_path. SAEFLOW_CHROMIUM names another binary.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from infra.features.details import read_table, sae_folder
from infra.features.plan import FeatureSettings, plan_features
from infra.features.run import run_features
from tests.infra.feature_fixtures import tiny_harvest, tiny_sae

CHROMIUM = os.environ.get("SAEFLOW_CHROMIUM") or next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None)
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency: pip install -e '.[dev]'")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make setup` installs Debian's chromium (apt-get)")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    base = tmp_path_factory.mktemp("browser")
    harvest, model = tiny_harvest(base)
    tiny_sae(harvest, str(base / "saes" / "sweep" / "topk-a"), str(model))
    tiny_sae(harvest, str(base / "saes" / "sweep" / "topk-b"), str(model), d_sae=128, seed=1)
    plan = plan_features(str(base / "saes" / "sweep"), harvest, str(base / "root"), contexts=8,
                         settings=FeatureSettings(ablation_latents=-1, ablation_examples=1))
    return plan, run_features(plan, in_process=True)


@pytest.fixture(scope="module")
def page():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def test_pick_a_latent_and_see_its_dashboard(stage, page, tmp_path):
    plan, result = stage
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"file://{result['browser']}")
    assert page.locator("#sae option").all_inner_texts() == ["topk-a (64)", "topk-b (128)"]
    page.select_option("#sae", "1")
    folder = sae_folder(plan.features, "topk-b")
    stats = read_table(f"{folder}/stats.parquet")
    latent = int(stats.loc[stats["fire_count"] > 0, "latent"].iloc[-1])
    page.fill("#search", str(latent))
    page.locator(f"#list li[data-latent='{latent}']").click()
    assert page.locator("#title").inner_text() == f"topk-b latent {latent}"
    assert f"max {stats.loc[latent, 'max_activation']:.3f}" in page.locator("#sub").inner_text()

    examples = read_table(f"{folder}/examples.parquet")
    top = examples[(examples["latent"] == latent) & (examples["kind"] == "top")].sort_values("rank")
    shown = page.locator("#top .ex")
    assert shown.count() == len(top)
    first = top.iloc[0]
    assert shown.first.get_attribute("data-seq") == str(first.seq_id) and shown.first.get_attribute("data-pos") == str(first.pos)
    # The example token is outlined, and it is the most strongly highlighted token of the strongest example.
    highlighted = shown.first.locator(".tok.at")
    assert float(highlighted.get_attribute("title")) == pytest.approx(first.value, abs=1e-3)
    alphas = [float(s.split(",")[-1].rstrip(")")) if s.startswith("rgba") else 0.0
              for s in shown.first.locator(".tok").evaluate_all("els => els.map(e => e.style.backgroundColor)")]
    assert alphas[int(first.pos - first.window_start)] == pytest.approx(max(alphas), abs=1e-6)

    quantiles = examples[(examples["latent"] == latent) & (examples["kind"] == "quantile")]
    assert page.locator("#quantiles .ex").count() == len(quantiles)
    assert page.locator("#hist rect").count() == 24
    lens = read_table(f"{folder}/logit_lens.parquet")
    assert page.locator("#lens tr").count() == 1 + (lens["latent"] == latent).sum() // 2
    attribution = read_table(f"{folder}/attribution.parquet")
    removed = attribution[attribution["latent"] == latent]
    assert page.locator("#attribution .ex .tok").count() == len(removed) + removed["rank"].nunique()

    # Sort by density: the densest latent comes first.
    page.fill("#search", "")
    page.select_option("#sort", "density-desc")
    densest = int(stats.sort_values(["density", "latent"], ascending=[False, True]).iloc[0]["latent"])
    assert page.locator("#list li").first.get_attribute("data-latent") == str(densest)
    page.screenshot(path=str(tmp_path / "browser.png"), full_page=False)
    if os.environ.get("SAEFLOW_SCREENSHOT"):
        shutil.copy(tmp_path / "browser.png", os.environ["SAEFLOW_SCREENSHOT"])
    assert errors == []
    assert np.isfinite(stats["density"]).all()
