"""Wall time and ground-truth recovery of each architecture on the synthetic benchmark of
tests/sae_core/test_recovery.py (64-d, 128 true features, 256 latents, 1500 steps of 512 tokens).

Run: `.venv/bin/python -m bench.recovery_time`. The issue's target: TopK and ReLU recover
>= 0.9 in under a minute each on CPU.
"""

from __future__ import annotations

import platform
import time
from datetime import date

import torch

from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.synthetic import SyntheticFeatures, recovery_score
from tests.sae_core.test_recovery import BATCH, NUM_FEATURES, SETTINGS, STEPS, D


def main() -> None:
    print(f"# {date.today()} {platform.node()} torch {torch.__version__}, threads {torch.get_num_threads()}")
    truth = SyntheticFeatures(d=D, num_features=NUM_FEATURES, firing_probability=0.03, seed=0)
    for architecture, settings in SETTINGS.items():
        sae = build_sae(SaeConfig(architecture=architecture, d_in=D, d_sae=2 * NUM_FEATURES, **settings))
        trainer = SaeTrainer(sae, TrainConfig(total_steps=STEPS, lr=3e-3, warmup_steps=50))
        started = time.perf_counter()
        for _ in fit_many([trainer], truth.batches(BATCH, STEPS)):
            pass
        seconds = time.perf_counter() - started
        print(f"{architecture:<10} recovery {recovery_score(truth.directions_ND, sae.W_dec):.3f}  {seconds:5.1f} s")


if __name__ == "__main__":
    main()
