"""The steering stage on tiny models where the effect is known, its tables, its id and its input checks."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from infra.features.lens import logit_lens
from infra.lm.hookpoints import Hookpoint
from infra.lm.models import load_model
from infra.sae_store import load_sae, save_sae
from infra.steer.ablation import hookpoint_ablation, replaced_logp, token_losses
from infra.steer.conditions import condition_edits
from infra.steer.generate import edited_logits, prompt_ids, special_ids
from infra.steer.inputs import SteerInputError
from infra.steer.plan import SteerSettings, plan_steer
from infra.steer.run import run_steer
from sae_core import SaeConfig, build_sae
from sae_core.steering import set_latents
from tests.infra.feature_fixtures import TINY_HOOK, tiny_harvest, tiny_sae

LAST_HOOK = "blocks.2.hook_resid_post"  # the tiny models have 3 blocks: this one feeds the final norm
PROMPTS = ["It was a truth universally acknowledged", "The quick brown fox"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("steer")
    harvest, model_dir = tiny_harvest(base)
    sae = tiny_sae(harvest, str(base / "sae-b1"), str(model_dir))
    model, tokenizer = load_model(model_dir, device="cpu")
    return {"base": base, "harvest": harvest, "model_dir": str(model_dir), "sae": sae, "model": model, "tokenizer": tokenizer}


def unembedding_sae(model: nn.Module, directory: str, token: int, latent: int = 3) -> str:
    """An SAE at the last hookpoint whose latent's decoder direction is token's unembedding row."""
    sae = build_sae(SaeConfig(architecture="topk", d_in=32, d_sae=16, k=2, seed=0))
    with torch.no_grad():
        sae.W_dec[latent] = model.get_output_embeddings().weight[token] / model.get_output_embeddings().weight[token].norm()
    return save_sae(sae, directory, metadata={"hook_name": LAST_HOOK})


def test_adding_an_unembedding_row_raises_that_tokens_logit_by_scale_times_norm_times_its_length(tiny, tmp_path):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    token = 101
    directory = unembedding_sae(model, str(tmp_path / "sae"), token)
    plan = plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path), sae=directory, settings=SteerSettings(latents=[3], scales=[0.5]))
    linear = type(model)(model.config).eval()
    linear.load_state_dict(model.state_dict())
    linear.transformer.ln_f = nn.Identity()  # logits = resid @ W_U.T: the effect of an added vector is exact
    edit = condition_edits(plan, load_sae(directory), norm=8.0, caa_D=None)["add"]
    ids_1S = torch.tensor([prompt_ids(tokenizer, PROMPTS[0])])
    specials = special_ids(tokenizer)
    hook = Hookpoint.parse(LAST_HOOK)
    delta_V = (edited_logits(linear, hook, ids_1S, specials, edit) - edited_logits(linear, hook, ids_1S, specials, None))[0, -1]
    W_U_VD = model.get_output_embeddings().weight
    row_D = W_U_VD[token]
    assert delta_V[token].item() == pytest.approx(0.5 * 8.0 * row_D.norm().item(), rel=1e-4)
    torch.testing.assert_close(delta_V, 0.5 * 8.0 * W_U_VD @ (row_D / row_D.norm()), atol=1e-4, rtol=1e-4)


def test_clamping_a_latent_to_its_own_activation_with_the_error_added_back_leaves_the_logits_unchanged(tiny):
    model, sae = tiny["model"], load_sae(tiny["sae"])
    ids_1S = torch.tensor([prompt_ids(tiny["tokenizer"], PROMPTS[1])])
    specials = special_ids(tiny["tokenizer"])
    hook = Hookpoint.parse(TINY_HOOK)

    def own_value(x_BSD, keep_BS):
        x_ND = x_BSD.reshape(-1, x_BSD.shape[-1])
        own_N1 = sae.encode(x_ND)[:, [5]]
        return set_latents(sae, x_ND, [5], own_N1).reshape(x_BSD.shape)

    clean = edited_logits(model, hook, ids_1S, specials, None)
    torch.testing.assert_close(edited_logits(model, hook, ids_1S, specials, own_value), clean, atol=1e-4, rtol=1e-4)


def test_mean_ablation_of_a_hookpoint_equals_replacing_it_by_the_stored_mean(tiny):
    model, tokenizer = tiny["model"], tiny["tokenizer"]
    sequences = [prompt_ids(tokenizer, p) for p in PROMPTS]
    specials = special_ids(tokenizer)
    hook = Hookpoint.parse(TINY_HOOK)
    stats_ND = torch.randn(50, 32, generator=torch.Generator().manual_seed(0))
    frame = hookpoint_ablation(model, hook, sequences, specials, ["mean", "zero"], stats_ND, None, seed=0)
    total, count = 0.0, 0
    for ids in sequences:
        ids_1S = torch.tensor([ids])
        x_1SD = stats_ND.mean(0).expand(1, len(ids), 32).clone()
        x_1SD[0, 0] = edited_logits_input(model, hook, ids_1S)[0, 0]  # the BOS position stays clean
        losses = token_losses(replaced_logp(model, hook, ids_1S, x_1SD), ids_1S)[1:]  # predictions from BOS are not scored
        total, count = total + float(losses.sum()), count + len(losses)
    mean_row = frame.set_index("mode").loc["mean"]
    assert mean_row["ce_ablated"] == pytest.approx(total / count, rel=1e-5)
    assert mean_row["kl_ablated"] > 0 and math.isnan(mean_row["ce_loss_recovered"])


def edited_logits_input(model: nn.Module, hook: Hookpoint, ids_1S: torch.Tensor) -> torch.Tensor:
    """The clean activation at the hookpoint."""
    from infra.lm.hookpoints import capture_activations

    return capture_activations(model, [hook], ids_1S)[hook.name]


def test_the_stage_writes_side_by_side_generations_caa_and_ablations_then_caches(tiny, tmp_path):
    model = tiny["model"]
    token = 101
    directory = unembedding_sae(model, str(tmp_path / "sae"), token)
    settings = SteerSettings(latents=[3], scales=[6.0], clamp_latents=[3], clamp_values=[40.0], positive_prompts=["yes it is", "I love"],
                             negative_prompts=["no it is not", "I hate"], max_new_tokens=6, ablation_modes=["zero", "mean", "resample"],
                             ablation_latents=[3, 7])
    plan = plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path / "root"), sae=directory, settings=settings)
    assert not run_steer(plan, in_process=True, device="cpu")["cached"]
    folder = tmp_path / "root" / "steer" / plan.steer_id
    generations = pd.read_parquet(folder / "generations.parquet")
    assert sorted(set(generations["condition"])) == ["add", "caa", "clamp"] and len(generations) == 6
    # The direction's logit-lens top token is what steering promotes most and what the model now says next.
    top_ids, *_ = logit_lens(model, load_sae(directory).W_dec.detach()[[3]], k=1)
    added = generations[generations["condition"] == "add"]
    assert all(ids[0] == top_ids[0, 0] for ids in added["promoted_ids"])
    assert all(ids[0] == top_ids[0, 0] for ids in added["steered_ids"]) and (generations["kl_next"] > 0).all()
    cosines = pd.read_parquet(folder / "caa_cosines.parquet")
    assert len(cosines) == 16 and cosines["cosine"].abs().max() <= 1.0 + 1e-5
    ablation = pd.read_parquet(folder / "hookpoint_ablation.parquet")
    assert list(ablation["mode"]) == ["zero", "mean", "resample"] and ablation["ce_loss_recovered"].notna().all()
    latents = pd.read_parquet(folder / "latent_ablation.parquet")
    assert set(latents["latent"]) == {3, 7} and set(latents["mode"]) == {"zero", "mean", "resample"}
    # Zero-ablating a latent that is off changes nothing: the loss moves only where it fires.
    off = latents[(latents["mode"] == "zero") & (latents["activation"] == 0)]
    assert (off["delta"].abs() < 1e-4).all()
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["conditions"] == ["add", "clamp", "caa"] and manifest["typical_norm"] > 0
    report = (folder / "report.md").read_text()
    assert "| baseline | steered |" in report and "Hookpoint ablation" in report
    stamp = (folder / "_manifest.json").stat().st_mtime_ns
    assert run_steer(plan, in_process=True)["cached"] and (folder / "_manifest.json").stat().st_mtime_ns == stamp


def test_mean_and_resample_statistics_come_from_the_harvest(tiny, tmp_path):
    settings = SteerSettings(ablation_modes=["mean", "resample"], ablation_latents=[0], contexts=2, stat_rows=64)
    plan = plan_steer(tiny["model_dir"], PROMPTS[:1], str(tmp_path), sae=tiny["sae"], harvest=tiny["harvest"], settings=settings)
    assert plan.hookpoint == TINY_HOOK and plan.harvest_id and plan.conditions == []
    run_steer(plan, in_process=True, device="cpu")
    frame = pd.read_parquet(tmp_path / "steer" / plan.steer_id / "hookpoint_ablation.parquet")
    from infra.activations.split import split_eval
    from infra.activations.store import read_tokens_table
    from infra.lm.tokens import tokens_from_table

    held_out = sorted(split_eval(tiny["harvest"], 2)[1].ids[:2])
    special_NS = tokens_from_table(read_tokens_table(tiny["harvest"])).special_NS[held_out]
    # Two of the harvest's held-out contexts (a sweep's split for eval_contexts=2); predictions made from BOS / EOS are not scored.
    assert (frame["n_predictions"] == int((~special_NS[:, :-1]).sum())).all() and len(frame) == 2


def test_the_id_changes_with_every_result_changing_setting(tiny, tmp_path):
    base = dict(latents=[1], scales=[2.0], clamp_latents=[2], clamp_values=[3.0], positive_prompts=["a"], negative_prompts=["b"])
    ids = {plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path), sae=tiny["sae"], settings=SteerSettings(**base)).steer_id}
    changes = [dict(scales=[2.5]), dict(latents=[4]), dict(clamp_values=[3.5]), dict(clamp_latents=[5]), dict(positive_prompts=["c"]),
               dict(contrastive_scale=2.0), dict(max_new_tokens=5), dict(temperature=0.7), dict(seed=1), dict(top_tokens=3),
               dict(ablation_modes=["mean"]), dict(ablation_latents=[1]), dict(contexts=3), dict(stat_rows=10)]
    assert set(SteerSettings.__dataclass_fields__) == {k for c in changes for k in c} | {"negative_prompts"}
    for change in changes:
        ids.add(plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path), sae=tiny["sae"], settings=SteerSettings(**{**base, **change})).steer_id)
    ids.add(plan_steer(tiny["model_dir"], PROMPTS[:1], str(tmp_path), sae=tiny["sae"], settings=SteerSettings(**base)).steer_id)
    retrained = tmp_path / "retrained"
    save_sae(build_sae(SaeConfig(architecture="topk", d_in=32, d_sae=64, k=4, seed=9)), str(retrained), metadata={"hook_name": TINY_HOOK})
    ids.add(plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path), sae=str(retrained), settings=SteerSettings(**base)).steer_id)
    assert len(ids) == len(changes) + 3


@pytest.mark.parametrize(("settings", "sae_kind", "message"), [
    (dict(latents=[64], scales=[1.0]), "tiny", "latents: latent 64 is out of range: the SAE has d_sae=64"),
    (dict(clamp_latents=[-1], clamp_values=[1.0]), "tiny", "clamp_latents: latent -1 is out of range"),
    (dict(latents=[1], scales=[float("inf")]), "tiny", "scales: inf is not finite"),
    (dict(latents=[1], scales=[1.0, 2.0]), "tiny", "latents has 1 entries but scales has 2"),
    (dict(latents=[1], scales=[1.0]), "other_hook", "reads hookpoint 'blocks.0.hook_resid_post', not the requested"),
    (dict(latents=[1], scales=[1.0]), "wide", "has d_in=16 but the model's d_model is 32"),
    (dict(latents=[1], scales=[1.0]), "transcoder", "is a transcoder (blocks.1.hook_resid_post -> blocks.1.hook_mlp_out)"),
    (dict(latents=[1], scales=[1.0]), None, "sae: latents, clamp_latents and ablation_latents name SAE latents"),
])
def test_bad_inputs_are_one_line_before_any_compute(tiny, tmp_path, settings, sae_kind, message):
    saes = {"tiny": tiny["sae"], None: None}
    if sae_kind == "other_hook":
        saes[sae_kind] = save_sae(load_sae(tiny["sae"]), str(tmp_path / "hook"), metadata={"hook_name": "blocks.0.hook_resid_post"})
    if sae_kind == "transcoder":
        saes[sae_kind] = save_sae(load_sae(tiny["sae"]), str(tmp_path / "tc"),
                                  metadata={"hook_name": TINY_HOOK, "hook_name_out": "blocks.1.hook_mlp_out"})
    if sae_kind == "wide":
        saes[sae_kind] = save_sae(build_sae(SaeConfig(architecture="topk", d_in=16, d_sae=8, k=2)), str(tmp_path / "w"),
                                  metadata={"hook_name": TINY_HOOK})
    with pytest.raises(SteerInputError) as error:
        plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path / "root"), hookpoint=TINY_HOOK, sae=saes[sae_kind],
                   settings=SteerSettings(**settings))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "root").exists()


def test_cached_generation_equals_re_running_the_whole_sequence(tiny, tmp_path):
    from infra.steer.generate import generate

    model, tokenizer = tiny["model"], tiny["tokenizer"]
    directory = unembedding_sae(model, str(tmp_path / "sae"), token=101)
    plan = plan_steer(tiny["model_dir"], PROMPTS, str(tmp_path), sae=directory,
                      settings=SteerSettings(latents=[3], scales=[0.5], clamp_latents=[3], clamp_values=[5.0]))
    edits = condition_edits(plan, load_sae(directory), norm=8.0, caa_D=None)
    hook, specials = Hookpoint.parse(LAST_HOOK), special_ids(tokenizer)
    for edit in (None, edits["add"], edits["clamp"]):
        for temperature in (0.0, 1.0):
            args = (model, hook, prompt_ids(tokenizer, PROMPTS[1]), specials, edit, 12, temperature, 7, None)
            cached, full = generate(*args, use_cache=True), generate(*args, use_cache=False)
            assert cached.new_ids == full.new_ids
            torch.testing.assert_close(cached.first_logits_V, full.first_logits_V)
