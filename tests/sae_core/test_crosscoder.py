"""Crosscoders: the SparseCoder contract over [B, M, D] batches, exact resume, config errors, diffing
math, and the known-answer test: shared vs source-exclusive features recovered from synthetic pairs."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from sae_core import (
    ConfigError,
    CrosscoderConfig,
    SaeTrainer,
    TrainConfig,
    build_crosscoder,
    fit_many,
    restore_trainer,
    trainer_state,
)
from sae_core.crosscoder import Crosscoder
from sae_core.diffing import (
    classify_latents,
    decoder_cosine,
    diff_summary,
    per_source_activation_frequency,
    per_source_explained_variance,
    relative_decoder_norm,
)
from sae_core.synthetic_pairs import SyntheticPairedFeatures, match_features
from tests.sae_core.helpers import make_sae

M, D, F = 2, 16, 64
VARIANTS = {"relu": {"sparsity_coefficient": 0.5}, "batchtopk": {"k": 4, "dead_after_tokens": 64}}


def make_crosscoder(architecture: str, **overrides) -> Crosscoder:
    """A small two-source crosscoder."""
    kwargs = {"n_sources": M, "d_in": D, "d_sae": F, **VARIANTS[architecture], **overrides}
    return build_crosscoder(CrosscoderConfig(architecture=architecture, **kwargs))


def paired_batch(num_tokens: int = 128, seed: int = 0) -> torch.Tensor:
    """[num_tokens, 2, D]: correlated sources with very different norms and non-zero means."""
    generator = torch.Generator().manual_seed(seed)
    shared_BD = torch.randn(num_tokens, D, generator=generator) + 0.5
    other_BD = torch.randn(num_tokens, D, generator=generator)
    return torch.stack([7.0 * shared_BD, 0.3 * (shared_BD + 0.5 * other_BD)], dim=1)


def trained(architecture: str, steps: int = 30) -> SaeTrainer:
    """A trainer after a few steps, so every parameter has moved."""
    trainer = SaeTrainer(make_crosscoder(architecture), TrainConfig(total_steps=steps, lr=1e-2))
    list(fit_many([trainer], (paired_batch(seed=i) for i in range(steps))))
    trainer.sae.eval()
    return trainer


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_shapes_and_loss_terms(architecture):
    crosscoder = make_crosscoder(architecture)
    out = crosscoder(paired_batch(32))
    assert out.x_hat_BD.shape == (32, M, D)
    assert out.acts_BF.shape == (32, F)
    assert crosscoder.W_enc.shape == (M, D, F) and crosscoder.W_dec.shape == (F, M, D)
    assert crosscoder.b_dec.shape == (M, D) and crosscoder.input_scale.shape == (M,)
    assert set(out.losses) == {"mse", "sparsity" if architecture == "relu" else "aux"}
    assert torch.allclose(out.loss, sum(out.losses.values()))
    with pytest.raises(ValueError, match=r"expected inputs \[batch, 2, 16\], got \[32, 16\]"):
        crosscoder(paired_batch(32)[:, 0])


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_decode_of_encode_is_forward(architecture):
    crosscoder = trained(architecture).sae
    x_BMD = paired_batch(64, seed=99)
    out = crosscoder(x_BMD)
    assert torch.equal(crosscoder.encode(x_BMD), out.acts_BF)
    assert torch.allclose(crosscoder.decode(crosscoder.encode(x_BMD)), out.x_hat_BD, atol=1e-5)


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_loss_decreases_on_fixed_batch(architecture):
    x_BMD = paired_batch(256)
    trainer = SaeTrainer(make_crosscoder(architecture), TrainConfig(total_steps=200, lr=5e-3))
    reports = list(fit_many([trainer], (x_BMD for _ in range(200))))
    first, last = float(reports[0].metrics[0]["loss"]), float(reports[-1].metrics[0]["loss"])
    assert last < 0.5 * first, f"{architecture}: loss went {first:.3f} -> {last:.3f}"
    assert float(reports[-1].metrics[0]["fvu"]) < 0.5
    assert float(reports[-1].metrics[0]["l0"]) < F / 2


def test_each_source_is_scaled_on_its_own():
    x_BMD = paired_batch(256)
    crosscoder = make_crosscoder("relu")  # default: each source's centred variance becomes d_in
    crosscoder.init_from_data(x_BMD)
    xs_BMD = crosscoder.scale_inputs(x_BMD)
    variance_M = (xs_BMD - xs_BMD.mean(dim=0)).pow(2).sum(dim=-1).mean(dim=0)
    assert torch.allclose(variance_M, torch.full((M,), float(D)), rtol=1e-4)
    crosscoder = make_crosscoder("relu", source_normalization="mean_norm")
    crosscoder.init_from_data(x_BMD)
    scaled_norms_M = crosscoder.scale_inputs(x_BMD).norm(dim=-1).mean(dim=0)
    assert torch.allclose(scaled_norms_M, torch.full((M,), math.sqrt(D)), rtol=1e-5)


def test_relu_sparsity_charges_the_sum_of_per_source_decoder_norms():
    crosscoder = make_crosscoder("relu")
    out = crosscoder(paired_batch(16))
    norm_sum_F = crosscoder.W_dec[:, 0].norm(dim=-1) + crosscoder.W_dec[:, 1].norm(dim=-1)
    expected = 0.5 * (out.acts_BF * norm_sum_F).sum(dim=-1).mean()
    assert torch.allclose(out.losses["sparsity"], expected)


def test_batchtopk_keeps_k_per_token_in_training_and_a_threshold_for_inference():
    trainer = trained("batchtopk")
    crosscoder = trainer.sae
    assert float(crosscoder.threshold) > 0
    crosscoder.train()
    assert float((crosscoder(paired_batch(64, seed=3)).acts_BF.to_dense() > 0).sum()) == 4 * 64  # CSR on the sparse path
    crosscoder.eval()
    assert 0 < float((crosscoder.encode(paired_batch(64, seed=3)) > 0).sum(dim=-1).float().mean()) < F / 2


@pytest.mark.parametrize("architecture", list(VARIANTS))
def test_resume_from_trainer_state_matches_uninterrupted_run(architecture):
    steps = 12
    batches = [paired_batch(seed=i) for i in range(steps)]
    config = TrainConfig(total_steps=steps, lr=1e-2, warmup_steps=3)
    straight = SaeTrainer(make_crosscoder(architecture), config)
    list(fit_many([straight], batches))

    first_half = SaeTrainer(make_crosscoder(architecture), config)
    list(fit_many([first_half], batches[: steps // 2]))
    tensors, meta = trainer_state(first_half)
    meta = json.loads(json.dumps(meta))  # what storage keeps is JSON
    assert meta["model_kind"] == "crosscoder"
    resumed = restore_trainer(tensors, meta)
    assert isinstance(resumed.sae, type(straight.sae))
    list(fit_many([resumed], batches[steps // 2:]))
    assert resumed.step == straight.step == steps
    for name, value in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), f"{name} differs after resume"


def test_sae_states_still_restore_with_and_without_model_kind():
    trainer = SaeTrainer(make_sae("relu"), TrainConfig(total_steps=2))
    tensors, meta = trainer_state(trainer)
    assert meta["model_kind"] == "sae"
    legacy = {key: value for key, value in meta.items() if key != "model_kind"}
    assert type(restore_trainer(tensors, legacy).sae) is type(trainer.sae)
    with pytest.raises(ValueError, match="model_kind='transcoder'"):
        restore_trainer(tensors, {**meta, "model_kind": "transcoder"})


@pytest.mark.parametrize(
    ("overrides", "field", "allowed"),
    [
        ({"architecture": "topk"}, "architecture", "one of relu, batchtopk"),
        ({"n_sources": 1}, "n_sources", "an integer >= 2"),
        ({"d_in": 0}, "d_in", "positive integer"),
        ({"k": 0}, "k", "1..d_sae=128"),
        ({"sparsity_coefficient": -1.0}, "sparsity_coefficient", ">= 0"),
        ({"b_dec_init": "median"}, "b_dec_init", "zeros, mean, geometric_median"),
        ({"batchtopk_threshold_momentum": 0.0}, "batchtopk_threshold_momentum", "(0, 1]"),
    ],
)
def test_bad_crosscoder_config_names_field_value_and_rule(overrides, field, allowed):
    values = {"architecture": "batchtopk", "n_sources": 2, "d_in": 16, **overrides}
    with pytest.raises(ConfigError) as error:
        CrosscoderConfig(**values)
    assert f"CrosscoderConfig.{field}={overrides[field]!r}" in str(error.value)
    assert allowed in str(error.value)


def test_crosscoder_config_dict_round_trip_rejects_unknown_keys():
    cfg = CrosscoderConfig(architecture="relu", n_sources=3, d_in=8)
    assert cfg.d_sae == 64 and cfg.aux_k == 12
    assert CrosscoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"has no field\(s\) \['sources'\]"):
        CrosscoderConfig.from_dict({**cfg.to_dict(), "sources": 2})


def test_diffing_math_on_known_decoders():
    W_dec_FMD = torch.zeros(5, 2, 3)
    W_dec_FMD[0, 0, 0] = 1.0  # a only
    W_dec_FMD[1, 1, 1] = 2.0  # b only
    W_dec_FMD[2, 0, 0], W_dec_FMD[2, 1, 0] = 1.0, 1.0  # shared, same direction
    W_dec_FMD[3, 0, 0], W_dec_FMD[3, 1, 1] = 1.0, 0.25  # rel 0.2: between classes
    rel_F = relative_decoder_norm(W_dec_FMD)
    assert rel_F[:4].tolist() == pytest.approx([0.0, 1.0, 0.5, 0.2]) and math.isnan(rel_F[4])
    assert classify_latents(rel_F) == ["a_only", "b_only", "shared", "other", "other"]
    assert classify_latents(rel_F, shared_band=(0.15, 0.85), exclusive_margin=0.05)[3] == "shared"
    with pytest.raises(ValueError, match="must not overlap"):
        classify_latents(rel_F, shared_band=(0.05, 0.9), exclusive_margin=0.1)
    assert decoder_cosine(W_dec_FMD)[2:4].tolist() == pytest.approx([1.0, 0.0])
    acts_BF = torch.tensor([[1.0, 0, 2, 0, 0], [0, 0, 3, 0, 0]])
    frequency = per_source_activation_frequency(acts_BF, W_dec_FMD)
    assert frequency.density_F.tolist() == [0.5, 0.0, 1.0, 0.0, 0.0]
    assert frequency.norm_share_FM[3].tolist() == pytest.approx([0.8, 0.2])
    x_BMD = torch.randn(64, 2, 3, generator=torch.Generator().manual_seed(0))
    x_hat_BMD = torch.stack([x_BMD[:, 0], x_BMD[:, 1].mean(dim=0).expand(64, 3)], dim=1)
    assert per_source_explained_variance(x_BMD, x_hat_BMD).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    summary = diff_summary(W_dec_FMD, x_BMD, x_hat_BMD, acts_BF)
    assert summary["counts"] == {"shared": 1, "a_only": 1, "b_only": 0, "spurious": 0, "other": 0}
    assert summary["dead_latents"] == 3 and summary["shared_decoder_cosine_mean"] == pytest.approx(1.0)


# Known answer (Lindsey et al. 2024's diffing setting): 48 shared features whose direction drifts
# between sources (cosine 0.5), 16 present in A only, 16 in B only, 2.4 active per token.
DIFF_SETTINGS = {"relu": {"sparsity_coefficient": 1.0}, "batchtopk": {"k": 3, "dead_after_tokens": 5_000}}
DIFF_STEPS, DIFF_BATCH = 1200, 512


def classification_accuracy(truth: SyntheticPairedFeatures, W_dec_FMD: torch.Tensor) -> tuple[float, float]:
    """(share of true features whose best-matching latent has the right class, mean match cosine)."""
    latent_N, cosine_N = match_features(truth.directions_NMD, W_dec_FMD)
    labels = classify_latents(relative_decoder_norm(W_dec_FMD))
    hits = [labels[latent] == label for latent, label in zip(latent_N.tolist(), truth.labels, strict=True)]
    return sum(hits) / len(hits), float(cosine_N.mean())


@pytest.mark.parametrize("architecture", list(DIFF_SETTINGS))
def test_crosscoder_finds_shared_and_exclusive_features(architecture):
    """>= 90% of true features map to a latent of the right class (shared / a_only / b_only)."""
    truth = SyntheticPairedFeatures(d=32, n_shared=48, n_a_only=16, n_b_only=16, shared_direction_cosine=0.5, seed=0)
    cfg = CrosscoderConfig(architecture=architecture, n_sources=2, d_in=32, d_sae=160, **DIFF_SETTINGS[architecture])
    crosscoder = build_crosscoder(cfg)
    untrained_accuracy, _ = classification_accuracy(truth, crosscoder.W_dec)
    trainer = SaeTrainer(crosscoder, TrainConfig(total_steps=DIFF_STEPS, lr=3e-3, warmup_steps=50))
    started = time.perf_counter()
    list(fit_many([trainer], truth.batches(DIFF_BATCH, DIFF_STEPS)))
    seconds = time.perf_counter() - started
    accuracy, mean_cosine = classification_accuracy(truth, crosscoder.W_dec)
    crosscoder.eval()
    x_BMD = next(truth.batches(2048, 1, seed=1234))
    out = crosscoder(x_BMD)
    summary = diff_summary(crosscoder.W_dec, x_BMD, out.x_hat_BD, out.acts_BF)
    print(f"{architecture}: accuracy {accuracy:.3f} (untrained {untrained_accuracy:.3f}), match cosine "
          f"{mean_cosine:.3f}, EV {summary['explained_variance_per_source']}, {summary['counts']}, {seconds:.1f}s")
    assert untrained_accuracy < 0.7, "the test must not pass without training"
    assert mean_cosine > 0.9, f"{architecture}: true features matched with mean cosine {mean_cosine:.3f}"
    assert accuracy >= 0.9, f"{architecture}: only {accuracy:.1%} of features classified right"
    assert min(summary["explained_variance_per_source"]) > 0.9
