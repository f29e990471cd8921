"""One contract, run over every architecture (as dictionary_learning does)."""

from __future__ import annotations

import pytest
import torch

from infra.sae_store import load_sae, load_training_state, save_sae, save_training_state
from sae_core import ARCHITECTURES, SaeTrainer, TrainConfig, fit_many, from_saelens, to_saelens
from tests.sae_core.helpers import D_IN, D_SAE, activation_batch, make_sae

pytestmark = pytest.mark.parametrize("architecture", ARCHITECTURES)


def trained(architecture: str, steps: int = 30, optimizer: str = "adam") -> SaeTrainer:
    """A trainer after a few steps on fixed data, so every parameter has moved."""
    trainer = SaeTrainer(make_sae(architecture), TrainConfig(total_steps=steps, lr=1e-2, optimizer=optimizer))
    for _ in fit_many([trainer], (activation_batch(seed=i) for i in range(steps))):
        pass
    trainer.sae.eval()
    return trainer


def test_shapes(architecture):
    sae = make_sae(architecture)
    x_BD = activation_batch(32)
    out = sae(x_BD)
    assert out.x_hat_BD.shape == (32, D_IN)
    assert out.acts_BF.shape == (32, D_SAE)
    assert out.loss.shape == ()
    assert set(out.losses) >= {"mse"}
    assert torch.allclose(out.loss, sum(out.losses.values()))


def test_decode_of_encode_is_forward(architecture):
    sae = trained(architecture).sae
    x_BD = activation_batch(64, seed=99)
    out = sae(x_BD)
    assert torch.allclose(sae.decode(sae.encode(x_BD)), out.x_hat_BD, atol=1e-5)
    assert torch.equal(sae.encode(x_BD), out.acts_BF)


def test_loss_decreases_on_fixed_batch(architecture):
    x_BD = activation_batch(256)
    trainer = SaeTrainer(make_sae(architecture), TrainConfig(total_steps=200, lr=5e-3))
    reports = list(fit_many([trainer], (x_BD for _ in range(200))))
    first, last = float(reports[0].metrics[0]["loss"]), float(reports[-1].metrics[0]["loss"])
    assert last < 0.5 * first, f"{architecture}: loss went {first:.3f} -> {last:.3f}"
    assert float(reports[-1].metrics[0]["l0"]) < D_SAE / 2


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
    assert torch.allclose(loaded(x_BD).x_hat_BD, sae(x_BD).x_hat_BD, atol=1e-4)


def test_saelens_round_trip_on_disk(architecture, tmp_path):
    sae = trained(architecture).sae
    directory = save_sae(sae, str(tmp_path / "sae"), metadata={"hook_name": "blocks.0.hook_resid_post"})
    assert {p.name for p in (tmp_path / "sae").iterdir()} == {"cfg.json", "sae_weights.safetensors"}
    loaded = load_sae(directory)
    x_BD = activation_batch(64, seed=6)
    assert torch.allclose(loaded(x_BD).x_hat_BD, sae(x_BD).x_hat_BD, atol=1e-4)


@pytest.mark.parametrize("optimizer", ["adam", "muon"])
def test_resume_from_saved_state_matches_uninterrupted_run(architecture, optimizer, tmp_path):
    steps = 12
    batches = [activation_batch(seed=i) for i in range(steps)]
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
    x_BD = activation_batch(64)
    assert "pre_act_std" not in make_sae(architecture)(x_BD).losses
    penalised = make_sae(architecture, pre_act_std_coefficient=0.1)(x_BD)
    assert float(penalised.losses["pre_act_std"].detach()) > 0
