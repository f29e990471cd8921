"""Ground truth: SAEs trained on synthetic superposed features find the true directions."""

from __future__ import annotations

import time

import pytest

from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.synthetic import SyntheticFeatures, recovery_score

D, NUM_FEATURES, STEPS, BATCH = 64, 128, 1500, 512

SETTINGS = {
    "topk": {"k": 6},
    "relu": {"sparsity_coefficient": 1.0},
    "batchtopk": {"k": 6},
    "gated": {"sparsity_coefficient": 1.0},
    "jumprelu": {"sparsity_coefficient": 1.0},
}


@pytest.mark.parametrize("architecture", list(SETTINGS))
def test_sae_recovers_true_features(architecture):
    """Mean over true features of the best decoder cosine must reach 0.9.

Wall time is reported, not asserted (a loaded machine must not fail a correctness test):
bench/recovery_time.py measures it (docs/BENCHMARKS.md).
"""
    truth = SyntheticFeatures(d=D, num_features=NUM_FEATURES, firing_probability=0.03, seed=0)
    sae = build_sae(SaeConfig(architecture=architecture, d_in=D, d_sae=2 * NUM_FEATURES, **SETTINGS[architecture]))
    trainer = SaeTrainer(sae, TrainConfig(total_steps=STEPS, lr=3e-3, warmup_steps=50))
    started = time.perf_counter()
    for _ in fit_many([trainer], truth.batches(BATCH, STEPS)):
        pass
    seconds = time.perf_counter() - started
    score = recovery_score(truth.directions_ND, sae.W_dec)
    print(f"{architecture}: recovery {score:.3f} in {seconds:.1f}s")
    assert score >= 0.9, f"{architecture} recovered only {score:.3f} of the true features"
