"""The sweep-vs-sparsify benchmark's saeflow side is one sweep whose 8 SAEs share one stream, and its
table renders; no harvest, no Ray, no sparsify virtualenv (the timed runs take minutes)."""

from __future__ import annotations

from bench.sweep_vs_sparsify import EXPANSIONS, KS, LRS, harvest_tokens, sweep_spec, table
from infra.sweep.grid import expand_grid, group_points, memory_budget_bytes, plan_points


def test_the_grid_is_eight_topk_saes_in_one_group(tmp_path):
    spec = sweep_spec(str(tmp_path), train_tokens=32_768, batch=1024, warmup_steps=4)
    axes = {key: getattr(spec, key) for key in ("architectures", "expansion_factors", "ks", "sparsity_coefficients", "lrs", "seeds")}
    grid = expand_grid(axes, d_in=576, total_steps=32, warmup_steps=spec.warmup_steps)
    assert len(grid) == 8 and {config.architecture for config, _ in grid} == {"topk"}
    points = plan_points("bench", str(tmp_path), {}, grid)
    assert len(group_points(points, spec.batch_size, memory_budget_bytes(), spec.max_group_size)) == 1
    # Enough harvested rows that no SAE sees a training row twice (a BOS and ~1 EOS per context are dropped).
    assert spec.harvest_spec.num_tokens // 128 * 126 >= spec.train_tokens + 16 * 128
    assert spec.splice_contexts == 0 and spec.dead_window_tokens == 10_000_000
    assert harvest_tokens(1) % 128 == 0


def test_table_has_wall_times_ratio_and_quality_per_sae():
    points = {(e, k, lr): {"ev": 0.5, "l0": k, "fit_seconds": 2.0, "seconds": 3.0} for e in EXPANSIONS for k in KS for lr in LRS}
    runs = [{"repeat": 0, "side": "saeflow", "seconds": 40.0, "startup": 5.0, "harvest": 10.0, "sweep": 25.0, "points": points,
             "load": "2.0 / 2.1"},
            {"repeat": 0, "side": "sparsify", "seconds": 80.0, "points": points, "load": "2.1 / 2.2"}]
    lines = table(runs)
    assert "| 0 | saeflow | 40.0 | 5.0 | 10.0 | 25.0 | 5.0 | 2.0 / 2.1 |" in lines
    assert any("**2.00x**" in line for line in lines)
    assert sum(line.startswith("| 32x | 16 |") for line in lines) == 2
