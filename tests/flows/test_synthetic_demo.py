"""The demo flow end to end under a real (temporary) Prefect server."""

from __future__ import annotations

import json

import pytest

from flows.synthetic_demo import SyntheticDemoSpec, synthetic_demo
from infra.sae_store import load_sae

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server")]


def test_demo_trains_reports_and_reruns_from_storage(tmp_path):
    spec = SyntheticDemoSpec(architectures=["topk", "relu"], steps=600, checkpoint_every=200, root=str(tmp_path))
    report_uri = synthetic_demo(spec).report

    results = json.loads((tmp_path / "demo").glob("*/results.json").__next__().read_text())["results"]
    assert [r["architecture"] for r in results] == ["topk", "relu"]
    for record in results:
        assert record["recovery"] >= 0.9
        assert record["explained_variance"] > 0.8
        assert load_sae(record["sae_uri"]).cfg.d_sae == 256
    assert "| topk" in open(report_uri).read()

    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("saes/*/*/sae_weights.safetensors")}
    assert synthetic_demo(spec).report == report_uri
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("saes/*/*/sae_weights.safetensors")} == stamps
