"""The report's notes: looping data and SAEs below their random-perturbation baseline are called out."""

from __future__ import annotations

import math

import pandas as pd

from infra.sweep.grid import SweepPlan
from infra.sweep.report import below_random_note, data_note


def plan(train_rows: int) -> SweepPlan:
    return SweepPlan(sweep_id="s", root="/r", harvest="/h", harvest_id="h", hookpoint="hp", d_in=8, batch_size=4, total_steps=10,
                     points=[], eval_contexts=2, splice_contexts=1, shuffle_buffer=8, stream_seed=0, checkpoint_every=5,
                     train_rows=train_rows)


def test_data_note_says_when_the_stream_looped():
    assert "**4.00 epochs** (the stream looped" in data_note(plan(10))
    assert "**0.50 epochs**." in data_note(plan(80))


def test_saes_below_their_random_baseline_are_named():
    frame = pd.DataFrame({"sae_id": ["good", "bad", "failed"], "ce_loss_recovered": [0.9, 0.2, math.nan],
                          "ce_loss_recovered_random": [0.5, 0.4, math.nan]})
    note = below_random_note(frame)
    assert "1 SAE(s) recover less CE loss than their random-perturbation baseline" in note
    assert "`bad`" in note and "`good`" not in note and "`failed`" not in note


def test_no_note_without_splice_metrics_or_when_all_beat_random():
    assert below_random_note(pd.DataFrame({"sae_id": ["a"]})) == ""
    assert below_random_note(pd.DataFrame({"sae_id": ["a"], "ce_loss_recovered": [0.9], "ce_loss_recovered_random": [0.5]})) == ""
