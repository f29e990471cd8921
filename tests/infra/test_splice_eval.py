"""Splicing an SAE into tiny GPT-2 / GPT-NeoX / Llama models: exact limits, the matched-noise baseline, clean hooks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infra.lm.hookpoints import Hookpoint, capture_activations, hooked_module
from infra.lm.models import load_model
from infra.lm.splice_eval import replacing_activation, splice_metrics
from sae_core import SaeConfig, build_sae
from sae_core.geometry import matched_random_perturbation
from sae_core.metrics import ce_loss_recovered
from tests.infra.tiny_models import D_MODEL, FAMILIES, build_tiny_model

N_CONTEXTS, LENGTH = 4, 16
SPLICE_POINTS = ("blocks.1.hook_resid_post", "blocks.1.hook_mlp_out")


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    """(model, token_ids_NS, special_NS) for one family; position 0 is a BOS marked special."""
    directory = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    model, tokenizer = load_model(directory, device="cpu")
    ids_NS = np.random.default_rng(0).integers(0, len(tokenizer), (N_CONTEXTS, LENGTH)).astype(np.int32)
    ids_NS[:, 0] = tokenizer.bos_token_id
    special_NS = np.zeros_like(ids_NS, dtype=bool)
    special_NS[:, 0] = True
    return model, ids_NS, special_NS


def topk_sae(x_ND: torch.Tensor, steps: int = 30) -> torch.nn.Module:
    """A small TopK SAE trained briefly on the activations it will be spliced into."""
    sae = build_sae(SaeConfig("topk", d_in=D_MODEL, d_sae=64, k=4))
    sae.init_from_data(x_ND)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = sae(x_ND).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sae.apply_constraints()
    return sae


def activations(model, hookpoint: str, ids_NS: np.ndarray) -> torch.Tensor:
    return capture_activations(model, [hookpoint], torch.as_tensor(ids_NS, dtype=torch.long))[hookpoint]


# -- exact limits: identity and zero splices -------------------------------------------------
@pytest.mark.parametrize("hookpoint", [*SPLICE_POINTS, "blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre"])
def test_identity_splice_recovers_everything(tiny, hookpoint):
    model, ids_NS, special_NS = tiny
    result = splice_metrics(model, hookpoint, lambda x_BSD: x_BSD.clone(), ids_NS, special_NS, batch_contexts=4)
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-6)
    assert result["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert abs(result["kl_spliced"]) < 1e-6
    # A zero error has a zero matched perturbation, so the baseline is clean too.
    assert result["ce_random_perturbation"] == pytest.approx(result["ce_clean"], abs=1e-6)
    assert result["ce_zero_ablation"] != result["ce_clean"]  # the ablation is real, so the ratio is defined
    assert result["n_predictions"] == N_CONTEXTS * (LENGTH - 1) - N_CONTEXTS  # none from the BOS


@pytest.mark.parametrize("hookpoint", [*SPLICE_POINTS, "blocks.1.hook_resid_pre"])
def test_zero_splice_recovers_nothing(tiny, hookpoint):
    model, ids_NS, special_NS = tiny
    result = splice_metrics(model, hookpoint, torch.zeros_like, ids_NS, special_NS)
    # The splice never touches special positions, so a zero splice IS the special-kept ablation.
    assert result["ce_spliced"] == pytest.approx(result["ce_zero_ablation_special_kept"], abs=1e-6)
    assert result["ce_loss_recovered_special_kept"] == pytest.approx(0.0, abs=1e-3)
    assert result["kl_spliced"] == pytest.approx(result["kl_zero_ablation_special_kept"], abs=1e-7)
    assert result["kl_div_score_special_kept"] == pytest.approx(0.0, abs=1e-3)
    assert result["kl_zero_ablation"] > 0 and result["kl_zero_ablation_special_kept"] > 0


# -- a real SAE and the matched-noise baseline -----------------------------------------------
@pytest.mark.parametrize("hookpoint", SPLICE_POINTS)
def test_sae_splice_gives_finite_metrics_and_leaves_the_sae_as_it_was(tiny, hookpoint):
    model, ids_NS, special_NS = tiny
    sae = topk_sae(activations(model, hookpoint, ids_NS).reshape(-1, D_MODEL))
    before = {name: value.clone() for name, value in sae.state_dict().items()}
    sae.train()
    result = splice_metrics(model, hookpoint, sae, ids_NS, special_NS, batch_contexts=4, seed=1)
    assert all(math.isfinite(value) for value in result.values()), result
    assert result["kl_spliced"] > 0 and result["kl_random_perturbation"] > 0
    assert sae.training  # put in eval mode for the splice, then restored
    assert all(torch.equal(before[name], value) for name, value in sae.state_dict().items())
    again = splice_metrics(model, hookpoint, sae, ids_NS, special_NS, batch_contexts=3, seed=1)
    assert again["ce_spliced"] == pytest.approx(result["ce_spliced"], abs=1e-5)  # batching changes nothing
    other_seed = splice_metrics(model, hookpoint, sae, ids_NS, special_NS, seed=2)
    assert other_seed["ce_random_perturbation"] != result["ce_random_perturbation"]


@pytest.mark.parametrize("hookpoint", SPLICE_POINTS)
def test_matched_perturbation_has_the_sae_errors_norm_and_cosine(tiny, hookpoint):
    model, ids_NS, _ = tiny
    x_ND = activations(model, hookpoint, ids_NS).reshape(-1, D_MODEL)
    sae = topk_sae(x_ND, steps=5)
    with torch.no_grad():
        e_ND = sae.decode(sae.encode(x_ND)) - x_ND
    noise_ND = matched_random_perturbation(x_ND, e_ND, torch.Generator().manual_seed(0))
    cos = torch.nn.functional.cosine_similarity
    torch.testing.assert_close(noise_ND.norm(dim=-1), e_ND.norm(dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cos(noise_ND, x_ND, dim=-1), cos(e_ND, x_ND, dim=-1), rtol=1e-4, atol=1e-4)
    assert cos(noise_ND, e_ND, dim=-1).mean() < 0.9  # random otherwise: not the error itself


def test_error_along_x_makes_the_baseline_equal_the_splice(tiny):
    model, ids_NS, special_NS = tiny
    result = splice_metrics(model, SPLICE_POINTS[0], lambda x_BSD: 1.5 * x_BSD, ids_NS, special_NS)
    assert result["ce_random_perturbation"] == pytest.approx(result["ce_spliced"], abs=1e-4)
    assert result["kl_random_perturbation"] == pytest.approx(result["kl_spliced"], rel=1e-2, abs=1e-6)


# -- special positions, hooks, inputs ---------------------------------------------------------
def test_special_positions_stay_clean_and_unscored(tiny):
    model, ids_NS, special_NS = tiny

    def wreck_bos(x_BSD: torch.Tensor) -> torch.Tensor:
        x_hat_BSD = x_BSD.clone()
        x_hat_BSD[:, 0] = 1e4
        return x_hat_BSD

    result = splice_metrics(model, "blocks.1.hook_resid_post", wreck_bos, ids_NS, special_NS)
    assert result["ce_spliced"] == pytest.approx(result["ce_clean"], abs=1e-6)
    assert abs(result["kl_spliced"]) < 1e-7
    unmasked = splice_metrics(model, "blocks.1.hook_resid_post", wreck_bos, ids_NS)
    assert unmasked["n_predictions"] == N_CONTEXTS * (LENGTH - 1)
    assert unmasked["kl_spliced"] > 1e-5  # random-init models are insensitive, but not this much


def test_hooks_are_removed_even_when_the_splice_fails(tiny):
    model, ids_NS, _ = tiny
    input_ids_BS = torch.as_tensor(ids_NS, dtype=torch.long)
    with torch.no_grad():
        logits_before = model(input_ids=input_ids_BS).logits
    splice_metrics(model, "blocks.0.hook_resid_pre", torch.zeros_like, ids_NS)
    splice_metrics(model, Hookpoint(2, "mlp_out"), torch.zeros_like, ids_NS)

    def broken(x_BSD: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        splice_metrics(model, "blocks.1.hook_resid_post", broken, ids_NS)
    with pytest.raises(ValueError, match="keep the shape"):
        splice_metrics(model, "blocks.1.hook_mlp_out", lambda x_BSD: x_BSD[..., :4], ids_NS)
    for hookpoint in (Hookpoint(0, "resid_pre"), Hookpoint(1, "resid_post"), Hookpoint(1, "mlp_out"), Hookpoint(2, "mlp_out")):
        module = hooked_module(model, hookpoint)
        assert not module._forward_hooks and not module._forward_pre_hooks
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=input_ids_BS).logits, logits_before, rtol=0, atol=0)


def test_replacing_activation_attn_out_tuple_output(tiny):
    model, ids_NS, _ = tiny
    result = splice_metrics(model, "blocks.2.hook_attn_out", lambda x_BSD: x_BSD, ids_NS)
    assert result["kl_spliced"] == pytest.approx(0.0, abs=1e-7)
    seen = []
    with replacing_activation(model, Hookpoint(2, "attn_out"), lambda x_BSD: seen.append(x_BSD.shape) or x_BSD):
        with torch.no_grad():
            model(input_ids=torch.as_tensor(ids_NS[:2], dtype=torch.long))
    assert seen == [torch.Size([2, LENGTH, D_MODEL])]


def test_bad_inputs_are_rejected(tiny):
    model, ids_NS, special_NS = tiny
    with pytest.raises(ValueError, match="length >= 2"):
        splice_metrics(model, SPLICE_POINTS[0], torch.zeros_like, ids_NS[:, :1])
    with pytest.raises(ValueError, match="special_NS has shape"):
        splice_metrics(model, SPLICE_POINTS[0], torch.zeros_like, ids_NS, special_NS[:, :5])
    with pytest.raises(ValueError, match="nothing to score"):
        splice_metrics(model, SPLICE_POINTS[0], torch.zeros_like, ids_NS, np.ones_like(special_NS))
    with pytest.raises(ValueError, match="out of range"):
        splice_metrics(model, "blocks.9.hook_mlp_out", torch.zeros_like, ids_NS)


def test_ce_loss_recovered_formula():
    assert ce_loss_recovered(2.0, 2.0, 6.0) == 1.0
    assert ce_loss_recovered(2.0, 6.0, 6.0) == 0.0
    assert ce_loss_recovered(2.0, 3.0, 6.0) == 0.75
    assert math.isnan(ce_loss_recovered(2.0, 3.0, 2.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_with_cpu_sae(tiny):
    model, ids_NS, special_NS = tiny
    x_ND = activations(model, SPLICE_POINTS[0], ids_NS).reshape(-1, D_MODEL)
    sae = topk_sae(x_ND, steps=5)
    cpu = splice_metrics(model, SPLICE_POINTS[0], sae, ids_NS, special_NS)
    try:
        cuda = splice_metrics(model.cuda(), SPLICE_POINTS[0], sae, ids_NS, special_NS)
    finally:
        model.cpu()
    for name in ("ce_clean", "ce_spliced", "ce_zero_ablation", "ce_random_perturbation"):
        assert cuda[name] == pytest.approx(cpu[name], abs=1e-3)


# -- transcoders: spliced in place of the MLP ------------------------------------------------
def test_mlp_in_to_mlp_out_splice_replaces_the_mlp(tiny):
    """Exact limits: the MLP itself as the 'transcoder' recovers everything; zeros are the zero-ablated MLP."""
    model, ids_NS, special_NS = tiny
    mlp = hooked_module(model, Hookpoint(1, "mlp_out"))
    args = dict(source_hookpoint="blocks.1.hook_mlp_in", batch_contexts=4)
    itself = splice_metrics(model, "blocks.1.hook_mlp_out", lambda x_BSD: mlp(x_BSD), ids_NS, special_NS, **args)
    assert itself["ce_spliced"] == pytest.approx(itself["ce_clean"], abs=1e-5)
    assert itself["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    # The input the splice reads is the MLP's input, not its output: doubling it changes the result.
    doubled = splice_metrics(model, "blocks.1.hook_mlp_out", lambda x_BSD: mlp(2 * x_BSD), ids_NS, special_NS, **args)
    assert abs(doubled["ce_spliced"] - itself["ce_clean"]) > 1e-4
    zero = splice_metrics(model, "blocks.1.hook_mlp_out", torch.zeros_like, ids_NS, special_NS, **args)
    assert zero["ce_zero_ablation_special_kept"] == pytest.approx(zero["ce_spliced"], abs=1e-6)


def test_a_trained_transcoder_splices_through_its_prediction(tiny):
    model, ids_NS, special_NS = tiny
    pair = capture_activations(model, ["blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out"], torch.as_tensor(ids_NS, dtype=torch.long))
    x_ND, y_ND = (pair[name][torch.as_tensor(~special_NS)] for name in pair)
    transcoder = build_sae(SaeConfig("topk", kind="skip_transcoder", d_in=D_MODEL, d_sae=64, k=8))
    transcoder.init_from_data(x_ND, y_ND)
    optimizer = torch.optim.Adam(transcoder.parameters(), lr=1e-2)
    for _ in range(60):
        loss = transcoder(x_ND, y_ND).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        transcoder.apply_constraints()
    result = splice_metrics(model, "blocks.1.hook_mlp_out", transcoder, ids_NS, special_NS, source_hookpoint="blocks.1.hook_mlp_in")
    by_hand = splice_metrics(model, "blocks.1.hook_mlp_out", lambda x_BSD: transcoder.predict(x_BSD.reshape(-1, D_MODEL)).view(x_BSD.shape),
                             ids_NS, special_NS, source_hookpoint="blocks.1.hook_mlp_in")  # fmt: skip
    assert result["ce_spliced"] == pytest.approx(by_hand["ce_spliced"], abs=1e-6)
    assert result["ce_loss_recovered"] > 0.5  # fits its 60 training tokens' MLP far better than zero


def test_source_must_be_upstream_of_the_spliced_hookpoint(tiny):
    model, ids_NS, special_NS = tiny
    with pytest.raises(ValueError, match=r"source_hookpoint blocks\.1\.hook_mlp_out must be upstream of hookpoint blocks\.1\.hook_mlp_in"):
        splice_metrics(model, "blocks.1.hook_mlp_in", torch.zeros_like, ids_NS, special_NS, source_hookpoint="blocks.1.hook_mlp_out")


# -- selectable baselines: mean and resample ablation --------------------------------------------
def test_mean_and_resample_baselines_equal_splicing_in_what_they_replace_with(tiny):
    from infra.lm.splice_eval import AblationBaselines

    model, ids_NS, special_NS = tiny
    hookpoint = SPLICE_POINTS[0]
    x_ND = activations(model, hookpoint, ids_NS).reshape(-1, D_MODEL)
    mean_D, row_D = x_ND.mean(dim=0), x_ND[3]
    sae = topk_sae(x_ND, steps=5)
    # One pool row: every resampled position gets it, so resample ablation == splicing that constant row.
    baselines = AblationBaselines(mean_D=mean_D, resample_MD=row_D[None])
    result = splice_metrics(model, hookpoint, sae, ids_NS, special_NS, baselines=baselines)
    as_mean = splice_metrics(model, hookpoint, lambda x_BSD: mean_D.expand_as(x_BSD), ids_NS, special_NS)
    as_row = splice_metrics(model, hookpoint, lambda x_BSD: row_D.expand_as(x_BSD), ids_NS, special_NS)
    assert result["ce_mean_ablation"] == pytest.approx(as_mean["ce_spliced"], rel=1e-6)
    assert result["ce_resample_ablation"] == pytest.approx(as_row["ce_spliced"], rel=1e-6)
    expected = (result["ce_mean_ablation"] - result["ce_spliced"]) / (result["ce_mean_ablation"] - result["ce_clean"])
    assert result["ce_loss_recovered_mean_ablation"] == pytest.approx(expected, rel=1e-6)
    # SAELens's zero-ablation figure and the random baseline are untouched by asking for more baselines.
    plain = splice_metrics(model, hookpoint, sae, ids_NS, special_NS)
    for name in ("ce_loss_recovered", "ce_loss_recovered_random", "kl_div_score"):
        assert result[name] == pytest.approx(plain[name], rel=1e-9), name
    assert "ce_loss_recovered_mean_ablation" not in plain and "ce_resample_ablation" not in plain
