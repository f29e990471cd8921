"""One contract, run over every architecture (as dictionary_learning does) and every transcoder.

A model is named by a MODELS entry: an SAE architecture ("topk") or a transcoder
("transcoder-topk", "skip_transcoder-relu"). Transcoders train on (x, y) pairs; the helpers
give each kind its batches (training_batch), output (target_of) and prediction (predict).
"""

from __future__ import annotations

import pytest
import torch

from infra.sae_store import load_sae, load_training_state, save_sae, save_training_state
from sae_core import SaeTrainer, TrainConfig, fit_many, from_saelens, to_saelens
from sae_core.metrics import fraction_variance_unexplained
from tests.sae_core.helpers import D_IN, D_OUT, D_SAE, MODELS, activation_batch, make_sae, parse_model, predict, run, target_of, training_batch

pytestmark = pytest.mark.parametrize("architecture", MODELS)


def trained(architecture: str, steps: int = 30, optimizer: str = "adam") -> SaeTrainer:
    """A trainer after a few steps on fixed data, so every parameter has moved."""
    trainer = SaeTrainer(make_sae(architecture), TrainConfig(total_steps=steps, lr=1e-2, optimizer=optimizer))
    for _ in fit_many([trainer], (training_batch(architecture, seed=i) for i in range(steps))):
        pass
    trainer.sae.eval()
    return trainer


def test_shapes(architecture):
    sae = make_sae(architecture)
    out = run(sae, training_batch(architecture, 32))
    assert out.x_hat_BD.shape == (32, D_IN if parse_model(architecture)[0] == "sae" else D_OUT)
    assert out.acts_BF.shape == (32, D_SAE)
    assert out.loss.shape == ()
    assert set(out.losses) >= {"mse"}
    assert torch.allclose(out.loss, sum(out.losses.values()))


def test_decode_of_encode_is_forward(architecture):
    sae = trained(architecture).sae
    batch = training_batch(architecture, 64, seed=99)
    x_BD, out = activation_batch(64, seed=99), run(sae, batch)
    assert torch.allclose(predict(sae, x_BD), out.x_hat_BD, atol=1e-5)
    assert torch.equal(sae.encode(x_BD), out.acts_BF)
    if parse_model(architecture)[0] != "skip_transcoder":  # the skip path is outside decode(encode(x))
        assert torch.allclose(sae.decode(sae.encode(x_BD)), out.x_hat_BD, atol=1e-5)


def test_loss_decreases_on_fixed_batch(architecture):
    batch = training_batch(architecture, 256)
    trainer = SaeTrainer(make_sae(architecture), TrainConfig(total_steps=200, lr=5e-3))
    reports = list(fit_many([trainer], (batch for _ in range(200))))
    first, last = float(reports[0].metrics[0]["loss"]), float(reports[-1].metrics[0]["loss"])
    assert last < 0.5 * first, f"{architecture}: loss went {first:.3f} -> {last:.3f}"
    assert float(reports[-1].metrics[0]["l0"]) < D_SAE / 2
    # fvu is measured on what the model outputs: the input (SAE) or the target (transcoder).
    final = run(trainer.sae.eval(), batch).x_hat_BD
    residual = fraction_variance_unexplained(target_of(batch), final.detach())
    assert float(residual) < 0.5


def test_decoder_rows_stay_unit_norm_where_constrained(architecture):
    sae = trained(architecture).sae
    norms_F = sae.W_dec.norm(dim=1)
    if sae.unit_norm_decoder:
        assert torch.allclose(norms_F, torch.ones_like(norms_F), atol=1e-5)
    else:
        assert not torch.allclose(norms_F, torch.ones_like(norms_F), atol=1e-3), "relu decoder norms are free"


def test_saelens_round_trip_in_memory(architecture):
    sae = trained(architecture).sae
    assert float(sae.input_scale) != pytest.approx(1.0), "the test must exercise input-scale folding"
    cfg, tensors = to_saelens(sae)
    loaded = from_saelens(cfg, tensors)
    x_BD = activation_batch(64, seed=5)
    assert torch.allclose(loaded.encode(x_BD), sae.encode(x_BD), atol=1e-4)
    assert torch.allclose(predict(loaded, x_BD), predict(sae, x_BD), atol=1e-4)


def test_saelens_round_trip_on_disk(architecture, tmp_path):
    sae = trained(architecture).sae
    directory = save_sae(sae, str(tmp_path / "sae"), metadata={"hook_name": "blocks.0.hook_resid_post"})
    assert {p.name for p in (tmp_path / "sae").iterdir()} == {"cfg.json", "sae_weights.safetensors"}
    loaded = load_sae(directory)
    x_BD = activation_batch(64, seed=6)
    assert torch.allclose(predict(loaded, x_BD), predict(sae, x_BD), atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_resume_from_saved_state_matches_uninterrupted_run(architecture, optimizer, tmp_path):
    steps = 12
    batches = [training_batch(architecture, seed=i) for i in range(steps)]
    config = TrainConfig(total_steps=steps, lr=1e-2, warmup_steps=3, optimizer=optimizer)

    straight = SaeTrainer(make_sae(architecture), config)
    list(fit_many([straight], batches))

    first_half = SaeTrainer(make_sae(architecture), config)
    list(fit_many([first_half], batches[: steps // 2]))
    save_training_state(first_half, str(tmp_path / "ckpt"), extra={"batches_consumed": steps // 2})
    resumed, extra = load_training_state(str(tmp_path / "ckpt"))
    list(fit_many([resumed], batches[extra["batches_consumed"]:]))

    assert resumed.step == straight.step == steps
    for name, value in straight.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[name], value), f"{name} differs after resume"


def test_pre_activation_std_penalty_is_optional(architecture):
    batch = training_batch(architecture, 64)
    assert "pre_act_std" not in run(make_sae(architecture), batch).losses
    penalised = run(make_sae(architecture, pre_act_std_coefficient=0.1), batch)
    assert float(penalised.losses["pre_act_std"].detach()) > 0
