"""Group training: shared stream, checkpoints, resume after a crash, and skipping finished members."""

from __future__ import annotations

import json

import pytest
import torch

from infra.sae_store import load_sae
from infra.training.group import GroupMember, train_group
from sae_core import SaeConfig, TrainConfig
from sae_core.synthetic import SyntheticFeatures

STEPS, BATCH = 40, 64
TRUTH = SyntheticFeatures(d=16, num_features=32, firing_probability=0.1, seed=3)


class StreamCrash(RuntimeError):
    pass


def members(root: str) -> list[GroupMember]:
    configs = [SaeConfig(architecture="topk", d_in=16, d_sae=64, k=4), SaeConfig(architecture="relu", d_in=16, d_sae=64)]
    return [
        GroupMember(f"m{i}", cfg, TrainConfig(total_steps=STEPS, lr=3e-3), f"{root}/saes/m{i}", f"{root}/ckpt/m{i}")
        for i, cfg in enumerate(configs)
    ]


def stream(crash_at: int | None = None):
    def stream_from(start: int):
        generator = torch.Generator().manual_seed(7)
        for index in range(STEPS):
            batch_BD = TRUTH.sample(BATCH, generator)
            if index == crash_at:
                raise StreamCrash(f"storage went away at batch {index}")
            if index >= start:
                yield batch_BD

    return stream_from


def eval_batches():
    return TRUTH.batches(BATCH, 2, seed=99)


def test_crashed_group_resumes_to_the_uninterrupted_result(tmp_path):
    straight = train_group(members(str(tmp_path / "a")), stream(), eval_batches, checkpoint_every=10)

    with pytest.raises(StreamCrash):
        train_group(members(str(tmp_path / "b")), stream(crash_at=25), eval_batches, checkpoint_every=10)
    assert json.loads((tmp_path / "b/ckpt/m0/state.json").read_text())["extra"]["batches_consumed"] == 20
    resumed = train_group(members(str(tmp_path / "b")), stream(), eval_batches, checkpoint_every=10)

    for a, b in zip(straight, resumed):
        assert b["steps"] == STEPS
        assert b["explained_variance"] == pytest.approx(a["explained_variance"], abs=1e-6)
        for name, value in load_sae(a["sae_uri"]).state_dict().items():
            assert torch.equal(load_sae(b["sae_uri"]).state_dict()[name], value), name


def test_finished_members_are_not_retrained(tmp_path):
    first = train_group(members(str(tmp_path)), stream(), eval_batches, checkpoint_every=10)

    def must_not_stream(start: int):
        raise AssertionError("a finished group must not read its stream again")

    again = train_group(members(str(tmp_path)), must_not_stream, eval_batches, checkpoint_every=10)
    assert again == first


def test_a_failed_member_is_recorded_not_exported_and_the_rest_finish(tmp_path, monkeypatch):
    import sae_core.trainer

    group = members(str(tmp_path))
    real_step = sae_core.trainer.SaeTrainer._step

    def diverge_topk(self, x_BD, y_BO=None):
        if self.sae.architecture == "topk" and self.step == 15:
            raise sae_core.trainer.NonFiniteLossError(f"topk SAE: non-finite loss at step {self.step}: {{'mse': inf}}")
        return real_step(self, x_BD, y_BO)

    monkeypatch.setattr(sae_core.trainer.SaeTrainer, "_step", diverge_topk)
    records = train_group(group, stream(), eval_batches, checkpoint_every=10)
    failed, finished = records
    assert failed["status"] == "failed" and failed["failed_step"] == 15 and "step 15" in failed["reason"]
    assert not (tmp_path / "saes/m0/cfg.json").exists(), "a failed SAE is never exported"
    assert finished["status"] == "finished" and finished["steps"] == STEPS
    monkeypatch.undo()
    assert train_group(group, stream(), eval_batches, checkpoint_every=10) == records, "failed points are not silently retried"


def test_a_member_joining_a_checkpointed_group_sees_a_fresh_runs_batches(tmp_path):
    """Grouping is outside the sweep ids, so a point must train the same whichever group it lands in."""
    alone = train_group(members(str(tmp_path / "alone")), stream(), eval_batches, checkpoint_every=10)
    first, second = members(str(tmp_path / "regrouped"))
    with pytest.raises(StreamCrash):
        train_group([first], stream(crash_at=25), eval_batches, checkpoint_every=10)  # first is checkpointed at 20
    regrouped = train_group([first, second], stream(), eval_batches, checkpoint_every=10)  # second joins with no checkpoint

    for a, b in zip(alone, regrouped):
        assert b["steps"] == STEPS
        for name, value in load_sae(a["sae_uri"]).state_dict().items():
            assert torch.equal(load_sae(b["sae_uri"]).state_dict()[name], value), (b["sae_id"], name)
