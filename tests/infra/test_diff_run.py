"""The crosscoder worker: a crash mid-training resumes from its checkpoint to the same weights."""

from __future__ import annotations

import json

import pytest
import torch

import infra.diff.run
import infra.training.loop
from infra.diff.crosscoder_store import load_crosscoder
from infra.diff.plan import DiffPlan, plan_diff
from infra.diff.run import CrosscoderWorker
from tests.infra.fake_harvest import D_MODEL, HOOKPOINTS, write_fake_harvest


class Crash(RuntimeError):
    pass


def make_plan(root: str, harvests: list[str], **overrides) -> DiffPlan:
    spec = {
        "models": ["model-a", "model-b"], "architecture": "relu", "expansion_factor": 2.0, "k": 4, "sparsity_coefficient": 0.1,
        "seed": 0, "train_tokens": 4 * 20, "batch_size": 4, "lr": 1e-2, "warmup_steps": 2, "eval_contexts": 2,
        "shared_band": (0.3, 0.7), "exclusive_margin": 0.1, "root": root, "hookpoint": HOOKPOINTS[0], "checkpoint_every": 5,
        "shuffle_buffer": 8, "source_normalization": "centred_variance", "exclusive_ratio": 0.3, "presence_fraction": 0.3, "hookpoints": [],
        **overrides,
    }
    return plan_diff(spec, harvests, D_MODEL)


def test_crash_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    harvests = [write_fake_harvest(str(tmp_path / name))[0] for name in ("a", "b")]
    straight = CrosscoderWorker(make_plan(str(tmp_path / "straight"), harvests)).run()

    real_fit_many = infra.training.loop.fit_many
    real_iter = infra.diff.run.iter_batches

    def crashing_fit_many(trainers, batches):
        for report in real_fit_many(trainers, batches):
            if trainers[0].step == 12:
                raise Crash("worker died at step 12")
            yield report

    plan = make_plan(str(tmp_path / "resumed"), harvests)
    monkeypatch.setattr(infra.training.loop, "fit_many", crashing_fit_many)
    with pytest.raises(Crash):
        CrosscoderWorker(plan).run()
    checkpoint = tmp_path / "resumed" / "diffs" / plan.diff_id / "checkpoint" / "state.json"
    assert json.loads(checkpoint.read_text())["extra"]["batches_consumed"] == 10
    monkeypatch.setattr(infra.training.loop, "fit_many", real_fit_many)
    started_at = []
    monkeypatch.setattr(infra.diff.run, "iter_batches", lambda spec, start_batch=0: started_at.append(start_batch) or real_iter(spec, start_batch))
    resumed = CrosscoderWorker(plan).run()
    assert started_at[0] == 10, "training resumed from the checkpoint, not from scratch"

    assert resumed["steps"] == straight["steps"] == 20
    a = load_crosscoder(str(tmp_path / "straight" / "diffs" / straight["diff_id"] / "crosscoder"))
    b = load_crosscoder(str(tmp_path / "resumed" / "diffs" / resumed["diff_id"] / "crosscoder"))
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


@pytest.mark.parametrize(
    "change",
    [{"shuffle_buffer": 16}, {"seed": 1}, {"eval_contexts": 3}, {"hookpoint": HOOKPOINTS[1]}, {"batch_size": 2},
     {"exclusive_margin": 0.2}, {"shared_band": (0.2, 0.8)}, {"lr": 1e-3}, {"k": 8, "architecture": "batchtopk"},
     {"source_normalization": "mean_norm"}, {"exclusive_ratio": 0.2}, {"presence_fraction": 0.5},
     {"models": ["model-a"], "hookpoints": [HOOKPOINTS[0], HOOKPOINTS[1]]}],
)
def test_every_setting_that_changes_the_diff_changes_its_id(tmp_path, change):
    base = make_plan(str(tmp_path), ["h-a", "h-b"])
    assert make_plan(str(tmp_path), ["h-a", "h-b"]).diff_id == base.diff_id
    assert make_plan(str(tmp_path), ["h-a", "h-b"], **change).diff_id != base.diff_id


def test_checkpoint_interval_and_root_keep_the_diff_id(tmp_path):
    base = make_plan(str(tmp_path / "a"), ["h-a", "h-b"])
    assert make_plan(str(tmp_path / "b"), ["h-a", "h-b"], checkpoint_every=50).diff_id == base.diff_id
