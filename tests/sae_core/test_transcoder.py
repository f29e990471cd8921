"""Transcoders: config rules, the skip path, paired batches in fit_many, and ground truth on a synthetic sparse MLP."""

from __future__ import annotations

import pytest
import torch

from sae_core import ConfigError, SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.synthetic import fraction_recovered
from sae_core.synthetic_mlp import SyntheticSparseMlp
from sae_core.transcoder import TRANSCODER_CLASSES, TopKTranscoder
from tests.sae_core.helpers import D_IN, D_OUT, make_sae, training_batch


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"architecture": "topk", "kind": "crosscoder"}, "SaeConfig.kind='crosscoder' is invalid: one of sae, transcoder, skip_transcoder"),
        ({"architecture": "jumprelu", "kind": "transcoder"},
         "SaeConfig.architecture='jumprelu' is invalid: one of topk, batchtopk, relu for kind='transcoder'"),
        ({"architecture": "topk", "d_out": 8}, "SaeConfig.d_out=8 is invalid: None for kind='sae'"),
        ({"architecture": "topk", "kind": "transcoder", "d_out": 0}, "SaeConfig.d_out=0 is invalid: a positive integer"),
    ],
)
def test_bad_transcoder_configs_are_one_line_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        SaeConfig(d_in=D_IN, **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_d_out_defaults_to_d_in_and_every_sparsity_builds():
    cfg = SaeConfig(architecture="topk", kind="transcoder", d_in=D_IN, k=4)
    assert cfg.d_out == D_IN and isinstance(build_sae(cfg), TopKTranscoder)
    assert SaeConfig.from_dict(cfg.to_dict()) == cfg  # kind and d_out survive the JSON round trip (state, ids)
    for architecture, cls in TRANSCODER_CLASSES.items():
        model = make_sae(f"skip_transcoder-{architecture}")
        assert type(model) is cls and model.W_skip.shape == (D_OUT, D_IN) and model.W_dec.shape[1] == D_OUT


def test_skip_transcoder_starts_as_the_plain_one_and_learns_its_skip_path():
    plain, skip = make_sae("transcoder-topk"), make_sae("skip_transcoder-topk")
    assert not hasattr(plain, "W_skip") and torch.count_nonzero(skip.W_skip) == 0
    batch = training_batch("transcoder-topk", 64)
    torch.testing.assert_close(plain(*batch).x_hat_BD, skip(*batch).x_hat_BD)
    trainer = SaeTrainer(skip, TrainConfig(total_steps=20, lr=1e-2))
    list(fit_many([trainer], (training_batch("skip_transcoder-topk", seed=i) for i in range(20))))
    assert torch.count_nonzero(skip.W_skip) > 0


def test_an_sae_on_a_paired_stream_reconstructs_the_target():
    """SAEs and transcoders share a paired stream (a sweep over kinds): the SAE learns the target y."""
    x_BD, y_BO = training_batch("transcoder-topk", 64)
    sae = build_sae(SaeConfig(architecture="topk", d_in=D_OUT, d_sae=32, k=4))
    transcoder = make_sae("transcoder-topk")
    trainers = [SaeTrainer(m, TrainConfig(total_steps=3)) for m in (sae, transcoder)]
    reports = list(fit_many(trainers, [(x_BD, y_BO)] * 3))
    assert len(reports) == 3 and all(m is not None for r in reports for m in r.metrics)
    assert float(sae.input_scale) == pytest.approx(D_OUT**0.5 / y_BO.norm(dim=1).mean().item(), rel=1e-5)
    assert float(transcoder.input_scale) != pytest.approx(float(transcoder.target_scale))


def test_a_transcoder_given_single_tensors_says_what_it_needs():
    trainer = SaeTrainer(make_sae("transcoder-relu"), TrainConfig(total_steps=1))
    with pytest.raises(ValueError, match=r"^transcoder \(relu\) trains on \(input, target\) pairs, got one tensor"):
        list(fit_many([trainer], [training_batch("topk")]))
    with pytest.raises(ValueError, match=r"target shape \(64, 5\) does not pair with input \(64, 16\)"):
        make_sae("transcoder-relu")(torch.zeros(64, D_IN), torch.zeros(64, 5))


@pytest.mark.parametrize(
    "kind, architecture, extra",
    [("transcoder", "topk", {"k": 6}), ("skip_transcoder", "topk", {"k": 6}), ("transcoder", "batchtopk", {"k": 6}),
     ("transcoder", "relu", {"sparsity_coefficient": 1.0})],
)  # fmt: skip
def test_transcoder_recovers_the_output_directions_of_a_sparse_mlp(kind, architecture, extra):
    """Known answer: x = sum of active features' input directions + noise, y = sum of their output
    directions (128 features, d_in 64, d_out 48: superposition, and y is not linear in x). The
    decoder must hold the true output directions: the fraction found at cosine > 0.9 reaches 0.95.
    Data seed 1, model seed 0 (with equal seeds the initial decoder rows would BE the answer)."""
    truth = SyntheticSparseMlp(d_in=64, d_out=48, num_features=128, firing_probability=0.03, seed=1)
    steps = 1000
    model = build_sae(SaeConfig(architecture=architecture, kind=kind, d_in=64, d_out=48, d_sae=256, **extra))
    trainer = SaeTrainer(model, TrainConfig(total_steps=steps, lr=3e-3, warmup_steps=50))
    for _ in fit_many([trainer], truth.batches(512, steps)):
        pass
    found = fraction_recovered(truth.output_directions_NO, model.W_dec)
    print(f"{kind} {architecture}: {found:.3f} of output directions at cos > 0.9")
    assert found >= 0.95, f"{kind} {architecture} recovered only {found:.3f} of the true output directions"
    assert fraction_recovered(truth.output_directions_NO, torch.randn(256, 48)) < 0.05  # the bar is not trivially met
