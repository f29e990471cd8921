"""The sparsify comparison's worker and table on tiny runs, in this process (saeflow and the floor only:
no sparsify virtualenv, no network), so the bench cannot rot unnoticed."""

from __future__ import annotations

import pytest
import torch

from bench.sparsify_compare import runs_for, summarise, table
from bench.sparsify_runs import D_IN, run


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    x_ND = torch.randn(640, D_IN, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    path = tmp_path_factory.mktemp("sparsify-bench") / "activations.pt"
    torch.save({"held_out": x_ND[:128].clone(), "train": x_ND[128:].clone()}, path)
    return str(path)


@pytest.mark.parametrize("case", ["topk-8x", "batchtopk-8x"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_saeflow_and_floor_runs_report_what_the_table_needs(data_path, case, bf16):
    rows = {}
    for library in ("saeflow", "floor"):
        result = run(library, case, data_path, batch=64, steps=4, warmup=1, bf16=bf16, threads=1)
        assert result["tokens"] == 3 * 64 and result["tok_s"] > 0 and result["peak_rss_mib"] > 0
        rows[library] = summarise([result])
    if case == "topk-8x":
        assert rows["saeflow"]["l0"] == pytest.approx(32, abs=0.5) and 0 < rows["saeflow"]["ev"] < 1
    lines = table({(case, 64, "bf16" if bf16 else "fp32"): rows})
    assert len(lines) == 3 and lines[2].count("|") == 12 and "x |" in lines[2]


def test_sparsify_runs_topk_cases_only():
    assert runs_for("batchtopk-8x", ["saeflow", "sparsify", "floor"]) == ["saeflow", "floor"]
    assert runs_for("topk-32x", ["saeflow", "sparsify", "floor"]) == ["saeflow", "sparsify", "floor"]
