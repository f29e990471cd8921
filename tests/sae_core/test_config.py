"""Bad configs fail at construction, naming the field, the value and what is allowed."""

from __future__ import annotations

import pytest

from sae_core import ConfigError, SaeConfig, TrainConfig


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        ({"architecture": "sigmoid"}, "architecture", "one of relu, topk"),
        ({"d_in": 0}, "d_in", "positive integer"),
        ({"expansion_factor": 0}, "expansion_factor", "> 0"),
        ({"expansion_factor": float("nan")}, "expansion_factor", "> 0"),
        ({"k": 0}, "k", "1..d_sae=128"),
        ({"k": 129}, "k", "1..d_sae=128"),
        ({"sparsity_coefficient": -1.0}, "sparsity_coefficient", ">= 0"),
        ({"jumprelu_bandwidth": 0.0}, "jumprelu_bandwidth", "> 0"),
        ({"b_dec_init": "median"}, "b_dec_init", "zeros, mean, geometric_median"),
        ({"dead_after_tokens": 0}, "dead_after_tokens", "positive integer"),
        ({"aux_k": 1000}, "aux_k", "1..d_sae=128"),
    ],
)
def test_bad_sae_config_names_field_value_and_rule(overrides, field, allowed):
    values = {"architecture": "topk", "d_in": 16, "expansion_factor": 8.0, **overrides}
    with pytest.raises(ConfigError) as error:
        SaeConfig(**values)
    message = str(error.value)
    assert f"SaeConfig.{field}={overrides[field]!r}" in message
    assert allowed in message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"lr": -1e-3}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": 11}, "warmup_steps"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"decay_fraction": 1.5}, "decay_fraction"),
        ({"adam_betas": (0.9, 1.0)}, "adam_betas"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"autocast_bf16": "cpu"}, "autocast_bf16"),
    ],
)
def test_bad_train_config_names_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"TrainConfig\.{field}="):
        TrainConfig(**{"total_steps": 10, **overrides})


def test_d_sae_follows_expansion_factor():
    assert SaeConfig(architecture="relu", d_in=576, expansion_factor=8).d_sae == 4608
    assert SaeConfig(architecture="relu", d_in=576, d_sae=100).d_sae == 100


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match=r"has no field\(s\) \['sparsity'\]"):
        SaeConfig.from_dict({"architecture": "relu", "d_in": 4, "sparsity": 1.0})


def test_config_round_trips_through_dict():
    cfg = SaeConfig(architecture="jumprelu", d_in=8, d_sae=32)
    assert SaeConfig.from_dict(cfg.to_dict()) == cfg
    train = TrainConfig(total_steps=5, optimizer="muon")
    assert TrainConfig.from_dict(train.to_dict()) == train


def test_matryoshka_prefixes_default_and_rules():
    from sae_core import ConfigError, SaeConfig

    assert SaeConfig(architecture="matryoshka_batchtopk", d_in=16, d_sae=64).matryoshka_prefixes == (4, 8, 16, 32)
    assert SaeConfig.from_dict({"architecture": "matryoshka_batchtopk", "d_in": 16, "d_sae": 64, "matryoshka_prefixes": [8]}).matryoshka_prefixes == (8,)
    for bad in ((16, 8), (8, 8), (64,), (0, 8)):
        with pytest.raises(ConfigError, match=r"SaeConfig\.matryoshka_prefixes=.*strictly increasing integers in 1\.\.d_sae-1=63"):
            SaeConfig(architecture="matryoshka_batchtopk", d_in=16, d_sae=64, matryoshka_prefixes=bad)


def test_deep_knob_rules():
    from sae_core import ConfigError, SaeConfig

    assert SaeConfig(architecture="deep_topk", d_in=16, d_sae=64).deep_width == 32
    for field, value in (("deep_encoder_depth", 0), ("deep_decoder_depth", -1), ("deep_width", 0)):
        with pytest.raises(ConfigError, match=rf"SaeConfig\.{field}={value} is invalid"):
            SaeConfig(architecture="deep_topk", d_in=16, d_sae=64, **{field: value})
