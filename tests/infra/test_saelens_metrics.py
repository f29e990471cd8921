"""saeflow's splice scores equal sae-lens's own run_evals on the same model weights, tokens and SAE.

The tiny GPT-2 is loaded twice: by saeflow (Hugging Face, hooks by saeflow) and as a
TransformerLens HookedTransformer converted from the same weights (hooks by TransformerLens), so
the test checks the conventions (which positions are replaced, ablated and scored) and the hook
location, not one shared code path. The SAE is saeflow's export loaded by sae-lens itself.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from sae_lens import SAE
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

from infra.lm.models import load_model
from infra.lm.splice_eval import splice_metrics
from infra.sae_store import save_sae
from tests.infra.test_splice_eval import activations, topk_sae
from tests.infra.tiny_models import D_MODEL, build_tiny_model

HOOK = "blocks.1.hook_resid_post"
N_CONTEXTS, LENGTH = 6, 24


def hooked_twin(hf_model, tokenizer) -> HookedTransformer:
    """The same GPT-2 weights as a TransformerLens model (no weight processing, so logits match)."""
    config = hf_model.config
    cfg = HookedTransformerConfig(
        n_layers=config.n_layer, d_model=config.n_embd, n_heads=config.n_head, d_head=config.n_embd // config.n_head,
        d_mlp=4 * config.n_embd, n_ctx=config.n_positions, d_vocab=config.vocab_size, act_fn="gelu_new",
        normalization_type="LN", eps=config.layer_norm_epsilon, positional_embedding_type="standard",
        default_prepend_bos=False,
    )  # fmt: skip
    with warnings.catch_warnings():  # HookedTransformer is what sae-lens 6's run_evals takes
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, tokenizer=tokenizer)
    model.load_state_dict(convert_gpt2_weights(hf_model, cfg), strict=False)
    return model.eval()


class FixedTokens:
    """The part of sae-lens's ActivationsStore that run_evals' CE/KL path reads: fixed token batches."""

    def __init__(self, ids_NS: torch.Tensor) -> None:
        self.ids_NS, self.next = ids_NS, 0
        self.context_size = ids_NS.shape[1]  # run_evals reports tokens evaluated from it

    def get_batch_tokens(self, batch_size: int) -> torch.Tensor:
        batch = self.ids_NS[self.next : self.next + batch_size]
        self.next += batch_size
        return batch

    def reset_input_dataset(self) -> None:
        self.next = 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(hf_model, tokenizer, token ids with BOS first and an EOS inside, special mask, trained TopK SAE)."""
    directory = build_tiny_model("gpt2", tmp_path_factory.mktemp("gpt2"))
    hf_model, tokenizer = load_model(directory, device="cpu")
    with torch.no_grad():
        # Random-init logits are near uniform, so ablations barely change CE and CE recovered
        # would divide by ~0; larger (tied) embeddings give the model confident predictions to lose.
        hf_model.transformer.wte.weight.mul_(30)
    ids_NS = np.random.default_rng(3).integers(1, len(tokenizer), (N_CONTEXTS, LENGTH)).astype(np.int64)
    ids_NS[:, 0] = tokenizer.bos_token_id
    ids_NS[1, 9] = tokenizer.eos_token_id  # a document boundary inside a context
    special_NS = np.isin(ids_NS, tokenizer.all_special_ids)
    sae = topk_sae(activations(hf_model, HOOK, ids_NS).reshape(-1, D_MODEL), steps=15)
    return hf_model, tokenizer, ids_NS, special_NS, sae


def test_ce_loss_recovered_and_kl_div_score_equal_saelens_run_evals(setup, tmp_path):
    hf_model, tokenizer, ids_NS, special_NS, sae = setup
    # float64 throughout: a random tiny model barely needs its residual stream, so CE recovered
    # divides by a small difference of losses and float32 rounding alone would move it by 1e-4.
    hf_model, sae = copy.deepcopy(hf_model).double(), copy.deepcopy(sae).double()
    ours = splice_metrics(hf_model, HOOK, sae, ids_NS, special_NS, batch_contexts=4)
    hooked = hooked_twin(hf_model, tokenizer).to(torch.float64)
    ids = torch.as_tensor(ids_NS)
    torch.testing.assert_close(hooked(ids), hf_model(input_ids=ids).logits, atol=1e-9, rtol=1e-9)  # same model
    theirs_sae = SAE.load_from_disk(save_sae(sae, str(tmp_path), metadata={"hook_name": HOOK}), device="cpu", dtype="float64")
    config = EvalConfig(batch_size_prompts=2, n_eval_reconstruction_batches=N_CONTEXTS // 2, compute_kl=True, compute_ce_loss=True)
    theirs, _ = run_evals(theirs_sae, FixedTokens(ids), hooked, ActivationScaler(), config)
    ce, kl = theirs["model_performance_preservation"], theirs["model_behavior_preservation"]
    assert ours["ce_clean"] == pytest.approx(ce["ce_loss_without_sae"], abs=1e-6)
    assert ours["ce_spliced"] == pytest.approx(ce["ce_loss_with_sae"], abs=1e-6)
    assert ours["ce_zero_ablation"] == pytest.approx(ce["ce_loss_with_ablation"], abs=1e-6)
    assert ours["ce_loss_recovered"] == pytest.approx(ce["ce_loss_score"], abs=1e-6)
    assert ours["kl_spliced"] == pytest.approx(kl["kl_div_with_sae"], abs=1e-6)
    assert ours["kl_zero_ablation"] == pytest.approx(kl["kl_div_with_ablation"], abs=1e-6)
    assert ours["kl_div_score"] == pytest.approx(kl["kl_div_score"], abs=1e-6)
    # Keeping the special positions clean is a different ablation, so a different score.
    assert ours["ce_zero_ablation_special_kept"] != pytest.approx(ours["ce_zero_ablation"], abs=1e-3)
    assert ours["ce_loss_recovered_special_kept"] != pytest.approx(ours["ce_loss_recovered"], abs=1e-3)
    print(f"\nce_loss_recovered: saeflow {ours['ce_loss_recovered']:.5f}  sae-lens {ce['ce_loss_score']:.5f}  "
          f"(special kept: {ours['ce_loss_recovered_special_kept']:.5f}); kl_div_score {ours['kl_div_score']:.5f} vs {kl['kl_div_score']:.5f}")


def test_intervals_bracket_the_scores_and_a_target_width_stops_early(setup):
    hf_model, _, ids_NS, special_NS, sae = setup
    full = splice_metrics(hf_model, HOOK, sae, ids_NS, special_NS, batch_contexts=2)
    for name in ("ce_loss_recovered", "kl_div_score", "kl_spliced"):
        assert full[f"{name}_ci_low"] <= full[name] <= full[f"{name}_ci_high"], name
        assert full[f"{name}_ci_high"] > full[f"{name}_ci_low"], name
    assert full["splice_contexts_used"] == N_CONTEXTS
    width = full["ce_loss_recovered_ci_high"] - full["ce_loss_recovered_ci_low"]
    loose = splice_metrics(hf_model, HOOK, sae, ids_NS, special_NS, batch_contexts=2, target_ci_width=1e6)
    assert loose["splice_contexts_used"] == 2  # the first batch whose interval exists already meets it
    strict = splice_metrics(hf_model, HOOK, sae, ids_NS, special_NS, batch_contexts=2, target_ci_width=width / 100)
    assert strict["splice_contexts_used"] == N_CONTEXTS  # never met: every context is scored
    assert strict["ce_loss_recovered"] == pytest.approx(full["ce_loss_recovered"], abs=1e-6)
    with pytest.raises(ValueError, match="target_ci_width=0"):
        splice_metrics(hf_model, HOOK, sae, ids_NS, special_NS, target_ci_width=0)
