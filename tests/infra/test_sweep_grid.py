"""Grid expansion (every point a validated (SaeConfig, TrainConfig) pair) and the ids of a sweep's artifacts."""

from __future__ import annotations

from dataclasses import fields

import pytest

import tasks.sweep
from infra.sweep.grid import CONDITION_FIELDS, NOT_IN_IDS, SweepPlan, SweepSpecError, expand_grid, plan_sweep
from sae_core import ConfigError
from tests.infra.fake_harvest import CONTEXT, CONTEXTS, HOOKPOINTS, write_fake_harvest

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


# --- ids: every setting that changes an artifact enters them, nothing else does ---

SMALL_AXES = {**AXES, "expansion_factors": [1.0], "ks": [2, 4]}
BASE = {"train_tokens": 40, "batch_size": 4, "warmup_steps": 2, "autocast_bf16": "cuda", "eval_contexts": 2, "splice_contexts": 1,
        "shuffle_buffer": 8, "stream_seed": 0, "checkpoint_every": 5}


@pytest.fixture
def harvest(tmp_path):
    return write_fake_harvest(str(tmp_path / "data"))[0]


def plan_with(harvest: str, root: str, axes=SMALL_AXES, **overrides) -> SweepPlan:
    settings = {**BASE, **overrides}
    return plan_sweep("ids", root, harvest, HOOKPOINTS[0], axes, settings.pop("train_tokens"), settings.pop("batch_size"),
                      settings.pop("warmup_steps"), settings.pop("autocast_bf16"), **settings)


def ids(plan: SweepPlan) -> tuple[str, set[str]]:
    return plan.sweep_id, {p.sae_id for p in plan.points}


def test_the_same_spec_gives_the_same_ids(harvest, tmp_path):
    assert ids(plan_with(harvest, str(tmp_path))) == ids(plan_with(harvest, str(tmp_path)))


@pytest.mark.parametrize(
    "change",
    [{"eval_contexts": 3}, {"splice_contexts": 2}, {"splice_contexts": 0}, {"shuffle_buffer": 16}, {"stream_seed": 1},
     {"batch_size": 2}, {"train_tokens": 80}, {"warmup_steps": 3}, {"autocast_bf16": "never"}, {"splice_ci_width": 0.05},
     {"splice_baselines": ["mean"]}, {"splice_baselines": ["resample"]}],
)
def test_every_setting_that_changes_a_result_changes_every_id(harvest, tmp_path, change):
    sweep_id, sae_ids = ids(plan_with(harvest, str(tmp_path)))
    new_sweep_id, new_sae_ids = ids(plan_with(harvest, str(tmp_path), **change))
    assert new_sweep_id != sweep_id
    assert not new_sae_ids & sae_ids, "a point would be reused under other settings"


@pytest.mark.parametrize("change", [{"checkpoint_every": 50}])
def test_settings_that_change_no_result_keep_the_ids(harvest, tmp_path, change):
    assert ids(plan_with(harvest, str(tmp_path), **change)) == ids(plan_with(harvest, str(tmp_path)))


def test_another_root_keeps_the_ids(harvest, tmp_path):
    assert ids(plan_with(harvest, str(tmp_path / "a"))) == ids(plan_with(harvest, str(tmp_path / "b")))


def test_adding_a_grid_point_keeps_the_others_ids(harvest, tmp_path):
    sweep_id, sae_ids = ids(plan_with(harvest, str(tmp_path)))
    bigger_sweep_id, bigger = ids(plan_with(harvest, str(tmp_path), axes={**SMALL_AXES, "ks": [2, 4, 8]}))
    assert bigger_sweep_id == sweep_id and sae_ids < bigger and len(bigger - sae_ids) == 1


def test_every_plan_field_is_in_the_ids_or_says_why_not():
    names = {f.name for f in fields(SweepPlan)}
    assert names == set(CONDITION_FIELDS) | set(NOT_IN_IDS)
    assert not set(CONDITION_FIELDS) & set(NOT_IN_IDS)


def test_plan_counts_training_rows_and_epochs(harvest, tmp_path):
    plan = plan_with(harvest, str(tmp_path))
    # 6 contexts of 4 tokens, 2 held out, the BOS row of each context dropped.
    assert plan.train_rows == (CONTEXTS - 2) * (CONTEXT - 1)
    assert plan.epochs(40) == pytest.approx(40 / 12)


def test_cache_key_follows_the_ids(harvest, tmp_path, monkeypatch):
    monkeypatch.setattr(tasks.sweep, "is_finished", lambda member: True)

    def key(**change):
        plan = plan_with(harvest, str(tmp_path), **change)
        plan.groups = [[p.sae_id for p in plan.points]]
        return tasks.sweep.group_cache_key(None, {"plan": plan, "index": 0})

    assert key() == key() == key(checkpoint_every=50)
    assert len({key(), key(shuffle_buffer=16), key(stream_seed=1), key(eval_contexts=3), key(splice_contexts=2)}) == 5


def test_a_non_positive_interval_target_fails_while_planning(harvest, tmp_path):
    with pytest.raises(ValueError, match=r"splice_ci_width=0 is invalid"):
        plan_with(harvest, str(tmp_path), splice_ci_width=0)


def test_architecture_knobs_reach_only_their_architectures_configs():
    axes = {**AXES, "architectures": ["topk", "matryoshka_batchtopk", "deep_topk"], "expansion_factors": [2.0, 4.0], "ks": [4],
            "matryoshka_prefix_fractions": [0.125, 0.5], "deep_encoder_depth": 2, "deep_decoder_depth": 1, "deep_width": 24}
    points = {(s.architecture, s.d_sae): s for s, _ in expand_grid(axes, d_in=16, total_steps=10, warmup_steps=0)}
    assert points["matryoshka_batchtopk", 32].matryoshka_prefixes == (4, 16)  # fractions of each point's d_sae
    assert points["matryoshka_batchtopk", 64].matryoshka_prefixes == (8, 32)
    deep = points["deep_topk", 32]
    assert (deep.deep_encoder_depth, deep.deep_decoder_depth, deep.deep_width) == (2, 1, 24)
    plain = expand_grid({**AXES, "ks": [4]}, d_in=16, total_steps=10, warmup_steps=0)[0][0]
    assert points["topk", 32].to_dict() == plain.to_dict(), "another architecture's knob leaked into a topk point (and its id)"


def test_deep_and_matryoshka_knobs_change_their_points_ids(harvest, tmp_path):
    axes = {**SMALL_AXES, "architectures": ["topk", "matryoshka_batchtopk", "deep_topk"], "ks": [2]}
    def by_arch(plan):
        return {p.sae_config.architecture: p.sae_id for p in plan.points}
    base = by_arch(plan_with(harvest, str(tmp_path), axes={**axes, "matryoshka_prefix_fractions": [0.25], "deep_width": 8}))
    changed = by_arch(plan_with(harvest, str(tmp_path), axes={**axes, "matryoshka_prefix_fractions": [0.5], "deep_width": 16}))
    assert base["topk"] == changed["topk"]
    assert base["matryoshka_batchtopk"] != changed["matryoshka_batchtopk"]
    assert base["deep_topk"] != changed["deep_topk"]


def test_the_dead_window_scales_with_the_run_unless_given_and_enters_the_sae_ids(harvest, tmp_path):
    scaled = plan_with(harvest, str(tmp_path))
    assert {p.sae_config.dead_after_tokens for p in scaled.points} == {4}, "a tenth of the run's 40 tokens"
    given = plan_with(harvest, str(tmp_path), axes={**SMALL_AXES, "dead_window_tokens": 7})
    assert {p.sae_config.dead_after_tokens for p in given.points} == {7}
    assert not ids(scaled)[1] & ids(given)[1], "every SAE id changes with the window"
    with pytest.raises(SweepSpecError, match=r"dead_window_tokens=0 is invalid: an integer >= 1"):
        plan_with(harvest, str(tmp_path), axes={**SMALL_AXES, "dead_window_tokens": 0})


# --- paired sweeps: kinds crossed with architectures, the target hookpoint in the ids ---

def test_kinds_cross_the_architectures_that_transcoders_support():
    axes = {**AXES, "architectures": ["topk", "jumprelu"], "ks": [4], "kinds": ["sae", "transcoder", "skip_transcoder"]}
    points = expand_grid(axes, d_in=16, total_steps=10, warmup_steps=0)
    assert [(s.kind, s.architecture) for s, _ in points] == [
        ("sae", "topk"), ("sae", "jumprelu"), ("transcoder", "topk"), ("skip_transcoder", "topk")]  # no jumprelu transcoder
    assert [s.d_out for s, _ in points] == [None, None, 16, 16]


def test_target_hookpoint_enters_every_id_and_leaves_unpaired_ids_alone(harvest, tmp_path):
    unpaired = plan_with(harvest, str(tmp_path))
    paired = plan_with(harvest, str(tmp_path), target_hookpoint=HOOKPOINTS[1])
    assert "target_hookpoint" not in unpaired.conditions()  # ids of sweeps without a target are as before
    assert ids(paired)[0] != ids(unpaired)[0] and not ids(paired)[1] & ids(unpaired)[1]
    with_kinds = plan_with(harvest, str(tmp_path), axes={**SMALL_AXES, "kinds": ["sae", "transcoder"]}, target_hookpoint=HOOKPOINTS[1])
    assert ids(paired)[1] < ids(with_kinds)[1]  # adding the transcoder kind keeps the SAE points' ids
    assert {p.sae_config.kind for p in with_kinds.points} == {"sae", "transcoder"}
    assert any(p.sae_id.startswith("transcoder-topk-") for p in with_kinds.points)


@pytest.mark.parametrize(
    "overrides, rule",
    [
        ({"axes": {**SMALL_AXES, "kinds": ["transcoder"]}}, r"kinds \['transcoder'\] need target_hookpoint"),
        ({"target_hookpoint": "blocks.0.hook_mlp_out"}, r"target_hookpoint 'blocks\.0\.hook_mlp_out' was not harvested in .*; it has"),
        ({"target_hookpoint": HOOKPOINTS[0]}, "is the input hookpoint"),
    ],
)
def test_bad_pairings_fail_while_planning(harvest, tmp_path, overrides, rule):
    from infra.sweep.grid import SweepSpecError

    with pytest.raises(SweepSpecError, match=rule):
        plan_with(harvest, str(tmp_path), **overrides)
