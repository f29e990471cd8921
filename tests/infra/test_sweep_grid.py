"""Grid expansion: every point is a validated (SaeConfig, TrainConfig) pair."""

from __future__ import annotations

import pytest

from infra.sweep_grid import expand_grid
from sae_core import ConfigError

AXES = {"architectures": ["topk", "relu"], "expansion_factors": [2.0], "ks": [4, 8], "sparsity_coefficients": [1.0],
        "lrs": [1e-3], "seeds": [0]}


def test_grid_carries_the_autocast_setting_into_every_point():
    points = expand_grid(AXES, d_in=16, total_steps=10, warmup_steps=20, autocast_bf16="always")
    assert [(s.architecture, s.k if s.architecture == "topk" else None) for s, _ in points] == [
        ("topk", 4), ("topk", 8), ("relu", None)]
    assert {t.autocast_bf16 for _, t in points} == {"always"}
    assert {t.warmup_steps for _, t in points} == {10}  # clipped to the run's length


def test_bad_autocast_setting_fails_while_planning():
    with pytest.raises(ConfigError, match=r"TrainConfig\.autocast_bf16='sometimes'"):
        expand_grid(AXES, d_in=16, total_steps=10, warmup_steps=0, autocast_bf16="sometimes")
