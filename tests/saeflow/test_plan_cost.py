"""The cost plan: bytes and work from the spec alone, device time only from measured rates."""

from __future__ import annotations

import pytest

from infra.cost import harvest_cost, pack_groups, record_rate, sweep_cost, training_bytes
from saeflow.cli import main


def test_device_time_only_from_a_measured_rate(tmp_path):
    root = str(tmp_path)
    cost = sweep_cost(root, [(64, 256), (64, 512)], 1000, 100, 1)
    assert cost.points == 2 and cost.tokens == 2000 and cost.work == 1000 * 64 * (256 + 512)
    assert not cost.estimates and any("device time: unknown" in line for line in cost.lines())
    record_rate(root, "sweep", "sae", "cpu", work=1000 * 64 * 256, seconds=2.0, source="sweep x")
    cost = sweep_cost(root, [(64, 256), (64, 512)], 1000, 100, 1)
    assert cost.estimates["cpu"]["seconds"] == pytest.approx(6.0)
    assert "device time on cpu: ~6 s" in "\n".join(cost.lines())
    harvest = harvest_cost(root, "m", 1000, 64, 2, "float16")
    assert harvest.storage_bytes == 1000 * 5 + 1000 * 2 * (64 * 2 + 17) and not harvest.estimates


def test_groups_respect_budget_and_size():
    sized = [(training_bytes(64, d, 128), str(d)) for d in (256, 512, 1024)]
    assert pack_groups(sized, 10**12, 2) == [["1024", "512"], ["256"]]
    assert len(pack_groups(sized, training_bytes(64, 1024, 128), 8)) == 2


def test_dry_run_prints_the_cost_as_comments(tmp_path, capsys):
    assert main(["sweep", "--dry-run", "--set", f"root={tmp_path}", "--set", "harvest_spec.num_tokens=2048",
                 "--set", "train_tokens=8192", "--set", "batch_size=4096"]) == 0
    out = capsys.readouterr().out
    assert "# harvest: 2,048 tokens" in out and "# sweep: 16,384 tokens, 2 points in 1 groups" in out
    assert "no sweep throughput measured under this root yet" in out


def test_dry_run_of_a_layer_sweep_costs_the_grid_once_per_hookpoint(tmp_path, capsys):
    assert main(["sweep", "--dry-run", "--set", f"root={tmp_path}", "--set", "harvest_spec.num_tokens=2048",
                 "--set", "train_tokens=8192", "--set", "batch_size=4096",
                 "--set", "hookpoints=[blocks.2.hook_resid_post,blocks.4.hook_resid_post,blocks.6.hook_resid_post]"]) == 0
    out = capsys.readouterr().out
    assert "# sweep: 49,152 tokens, 6 points in 3 groups" in out and "layer sweep: 3 hookpoints x 2 grid points" in out
