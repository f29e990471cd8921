"""Hookpoint names, validation before the forward pass, and captures checked against the model."""

from __future__ import annotations

import pytest
import torch

from infra.lm.hookpoints import (
    HOOK_KINDS,
    Hookpoint,
    HookpointError,
    capture_activations,
    hooked_module,
    resolve_hookpoints,
    transformer_blocks,
)
from infra.lm.models import ModelFacts, load_model, model_facts
from tests.infra.tiny_models import D_MODEL, FAMILIES, N_LAYERS, build_tiny_model

TEXTS = ["Emma Woodhouse, handsome, clever, and rich,", "with a comfortable home and happy disposition"]
FINAL_NORM = {"gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm", "llama": "model.norm"}


def forward_then_remove(model, handles, ids_BS, mask_BS) -> None:
    """One no-grad forward pass with the given hooks registered, which are removed whatever happens."""
    try:
        with torch.no_grad():
            model(input_ids=ids_BS, attention_mask=mask_BS)
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(scope="module", params=FAMILIES)
def tiny(request, tmp_path_factory):
    """(model, input_ids_BS, attention_mask_BS) for one family."""
    directory = build_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    model, tokenizer = load_model(directory, device="cpu")
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    return model, batch.input_ids, batch.attention_mask


def all_names(kinds=HOOK_KINDS) -> list[str]:
    return [Hookpoint(layer, kind).name for layer in range(N_LAYERS) for kind in kinds]


def count_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, handle


# -- names and validation -------------------------------------------------------------------
def test_parse_and_name_round_trip():
    for name in all_names():
        assert Hookpoint.parse(name).name == name
    assert Hookpoint.parse("blocks.12.hook_mlp_out") == Hookpoint(12, "mlp_out")


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("blocks.0.hook_resid", "unknown kind hook_resid"),
        ("blocks.0.hook_z", "unknown kind"),
        ("blocks.x.hook_resid_pre", "malformed"),
        ("block.0.hook_resid_pre", "malformed"),
        ("blocks.-1.hook_resid_pre", "malformed"),
        ("blocks.0.hook_resid_pre ", "malformed"),
        ("resid_pre", "malformed"),
    ],
)
def test_bad_names_are_rejected(name, fragment):
    with pytest.raises(HookpointError, match=fragment) as err:
        Hookpoint.parse(name)
    assert repr(name) in str(err.value) and "blocks.{L}.hook_resid_post" in str(err.value)


def test_resolve_rejects_out_of_range_duplicates_and_empty():
    facts = ModelFacts("llama", n_layers=3, d_model=32, max_positions=64, vocab_size=512)
    assert resolve_hookpoints(facts, ["blocks.2.hook_resid_post", Hookpoint(0, "attn_out")]) == [
        Hookpoint(2, "resid_post"),
        Hookpoint(0, "attn_out"),
    ]
    with pytest.raises(HookpointError) as err:
        resolve_hookpoints(facts, ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_pre"])
    message = str(err.value)
    assert "'blocks.3.hook_resid_pre'" in message and "n_layers=3" in message and "0..2" in message
    assert "blocks.{L}.hook_mlp_out" in message
    with pytest.raises(HookpointError, match="listed twice"):
        resolve_hookpoints(facts, ["blocks.1.hook_mlp_out", "blocks.1.hook_mlp_out"])
    with pytest.raises(HookpointError, match="non-empty"):
        resolve_hookpoints(facts, [])
    with pytest.raises(HookpointError, match="non-empty"):
        resolve_hookpoints(facts, "blocks.0.hook_mlp_out")


def test_bad_hookpoints_fail_before_any_forward(tiny):
    model, ids_BS, mask_BS = tiny
    embed_calls, handle = count_calls(model.get_input_embeddings())
    try:
        for names in (["blocks.3.hook_resid_post"], ["blocks.0.hook_foo"], ["blocks.0.hook_mlp_out"] * 2):
            with pytest.raises(HookpointError):
                capture_activations(model, names, ids_BS, mask_BS)
    finally:
        handle.remove()
    assert embed_calls[0] == 0


# -- captures match the model ---------------------------------------------------------------
def test_resid_matches_hidden_states(tiny):
    model, ids_BS, mask_BS = tiny
    acts = capture_activations(model, all_names(("resid_pre", "resid_post")), ids_BS, mask_BS)
    with torch.no_grad():
        hidden = model(input_ids=ids_BS, attention_mask=mask_BS, output_hidden_states=True).hidden_states
    assert len(hidden) == N_LAYERS + 1
    for layer in range(N_LAYERS):
        pre_BSD = acts[f"blocks.{layer}.hook_resid_pre"]
        assert pre_BSD.shape == (*ids_BS.shape, D_MODEL) and not pre_BSD.requires_grad
        torch.testing.assert_close(pre_BSD, hidden[layer])
        if layer < N_LAYERS - 1:
            torch.testing.assert_close(acts[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1])
    # The last hidden state has the final norm applied; resid_post of the last block does not.
    final_norm = model.get_submodule(FINAL_NORM[model.config.model_type])
    with torch.no_grad():
        torch.testing.assert_close(final_norm(acts[f"blocks.{N_LAYERS - 1}.hook_resid_post"]), hidden[-1])


def test_attn_and_mlp_out_match_module_outputs(tiny):
    model, ids_BS, mask_BS = tiny
    acts = capture_activations(model, all_names(), ids_BS, mask_BS)
    seen, handles = {}, []
    for layer in range(N_LAYERS):
        for kind in ("attn_out", "mlp_out"):
            hookpoint = Hookpoint(layer, kind)

            def store(_m, _a, out, name=hookpoint.name):
                seen[name] = out[0] if isinstance(out, tuple) else out

            handles.append(hooked_module(model, hookpoint).register_forward_hook(store))
    forward_then_remove(model, handles, ids_BS, mask_BS)
    for name, out_BSD in seen.items():
        torch.testing.assert_close(acts[name], out_BSD)
    # Independent of hooks: in eval mode every family's block adds exactly attn_out + mlp_out
    # to its residual (GPT-NeoX's parallel residual included).
    for layer in range(N_LAYERS):
        kinds = ("resid_pre", "attn_out", "mlp_out", "resid_post")
        pre, attn, mlp, post = (acts[f"blocks.{layer}.hook_{kind}"] for kind in kinds)
        torch.testing.assert_close(pre + attn + mlp, post)


def test_capture_stops_after_deepest_layer(tiny):
    model, ids_BS, mask_BS = tiny
    last_calls, last_handle = count_calls(transformer_blocks(model)[-1])
    head_calls, head_handle = count_calls(model.get_output_embeddings())
    try:
        acts = capture_activations(model, ["blocks.0.hook_resid_post", "blocks.0.hook_attn_out"], ids_BS, mask_BS)
        assert list(acts) == ["blocks.0.hook_resid_post", "blocks.0.hook_attn_out"]
        assert last_calls[0] == 0 and head_calls[0] == 0
        capture_activations(model, [f"blocks.{N_LAYERS - 1}.hook_mlp_out"], ids_BS, mask_BS)
        assert head_calls[0] == 0  # the unembedding never runs
    finally:
        last_handle.remove()
        head_handle.remove()


def hook_ids(model: torch.nn.Module) -> list[tuple[int, ...]]:
    # transformers 5 keeps its own output-capturing hooks on decoder layers: compare, not "empty".
    return [(*module._forward_hooks, *module._forward_pre_hooks) for module in model.modules()]


def test_hooks_are_removed_even_on_error(tiny):
    model, ids_BS, mask_BS = tiny
    with torch.no_grad():
        model(input_ids=ids_BS, output_hidden_states=True)  # let transformers install its hooks first
    before = hook_ids(model)
    capture_activations(model, all_names(), ids_BS, mask_BS)
    assert hook_ids(model) == before
    with pytest.raises(IndexError):
        capture_activations(model, all_names(), torch.full_like(ids_BS, 10**6), mask_BS)
    assert hook_ids(model) == before


def test_capture_without_attention_mask_and_batch_independence(tiny):
    model, ids_BS, _ = tiny
    names = ["blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
    both = capture_activations(model, names, ids_BS)
    first = capture_activations(model, [Hookpoint.parse(n) for n in names], ids_BS[:1])
    for name in names:
        torch.testing.assert_close(both[name][:1], first[name])
    assert model_facts(model.config).d_model == both[names[0]].shape[-1]


# -- paired MLP hookpoints: what a transcoder reads and predicts ---------------------------
# The norm each family applies right before its MLP: hook_mlp_in must equal its output.
MLP_NORM = {"gpt2": "ln_2", "gpt_neox": "post_attention_layernorm", "llama": "post_attention_layernorm"}


def mlp_io_by_module_hooks(model: torch.nn.Module, ids_BS: torch.Tensor, mask_BS: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """{hook_mlp_in: the pre-MLP norm's output, hook_mlp_out: the MLP's output} per layer, from the
    model's own modules (independent of capture_activations' pre-hook on the MLP)."""
    seen, handles = {}, []
    for layer, block in enumerate(transformer_blocks(model)):
        norm = getattr(block, MLP_NORM[model.config.model_type])
        for module, name in ((norm, f"blocks.{layer}.hook_mlp_in"), (block.mlp, f"blocks.{layer}.hook_mlp_out")):
            handles.append(module.register_forward_hook(lambda _m, _a, out, name=name: seen.__setitem__(name, out)))
    forward_then_remove(model, handles, ids_BS, mask_BS)
    return seen


def check_mlp_pairs(model: torch.nn.Module, ids_BS: torch.Tensor, mask_BS: torch.Tensor | None, layers: list[int]) -> None:
    names = [Hookpoint(layer, kind).name for layer in layers for kind in ("mlp_in", "mlp_out")]
    acts = capture_activations(model, names, ids_BS, mask_BS)
    expected = mlp_io_by_module_hooks(model, ids_BS, mask_BS)
    for layer in layers:
        mlp_in_BSD, mlp_out_BSD = acts[f"blocks.{layer}.hook_mlp_in"], acts[f"blocks.{layer}.hook_mlp_out"]
        assert mlp_in_BSD.shape == mlp_out_BSD.shape == (*ids_BS.shape, model.config.hidden_size)
        torch.testing.assert_close(mlp_in_BSD, expected[f"blocks.{layer}.hook_mlp_in"])
        torch.testing.assert_close(mlp_out_BSD, expected[f"blocks.{layer}.hook_mlp_out"])
        # Row-aligned pair from one pass: the MLP applied to the captured input gives the captured output.
        with torch.no_grad():
            torch.testing.assert_close(transformer_blocks(model)[layer].mlp(mlp_in_BSD), mlp_out_BSD)
        # Not the raw residual: the norm is applied (a transcoder reads what the MLP reads).
        assert not torch.allclose(mlp_in_BSD, capture_activations(model, [f"blocks.{layer}.hook_resid_pre"], ids_BS, mask_BS)[
            f"blocks.{layer}.hook_resid_pre"])


def test_mlp_in_and_out_match_the_model_modules(tiny):
    model, ids_BS, mask_BS = tiny
    check_mlp_pairs(model, ids_BS, mask_BS, list(range(N_LAYERS)))


def test_mlp_in_capture_stops_before_the_mlp_runs(tiny):
    model, ids_BS, mask_BS = tiny
    calls, handle = count_calls(transformer_blocks(model)[1].mlp)
    try:
        capture_activations(model, ["blocks.1.hook_mlp_in"], ids_BS, mask_BS)
    finally:
        handle.remove()
    assert calls[0] == 0  # recorded from the pre-hook: the MLP itself is never needed


def test_mlp_in_and_out_on_packaged_smollm2(smollm2_cache):
    from infra.lm.models import PACKAGED_SMOLLM2

    model, tokenizer = load_model(PACKAGED_SMOLLM2, device="cpu")
    batch = tokenizer(TEXTS, return_tensors="pt", padding=True)
    check_mlp_pairs(model, batch.input_ids, batch.attention_mask, [0, 6])
