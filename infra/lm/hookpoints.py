"""Hookpoints named as SAELens / TransformerLens name them, and capturing them with forward hooks.

``blocks.{L}.hook_resid_pre``  the residual stream entering block L (its input)
``blocks.{L}.hook_resid_post`` the residual stream leaving block L (its output)
``blocks.{L}.hook_attn_out``   block L's attention output, before it joins the residual
``blocks.{L}.hook_mlp_in``     what block L's MLP reads (after ln_2 / post_attention_layernorm)
``blocks.{L}.hook_mlp_out``    block L's MLP output, before it joins the residual

hook_mlp_in and hook_mlp_out of one block are an MLP's input and output, captured in one forward
pass (row-aligned): what a transcoder reads and predicts.
Names are validated against the model's config before anything runs, and a capture stops the
forward pass as soon as the last requested activation is recorded, so harvesting layer 3 of a
30-layer model costs 4 blocks, not 30 plus the unembedding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

# The name grammar lives in a torch-free module (the CLI validates names with it); re-exported here.
from infra.lm.hookpoint_names import ALLOWED_FORMS, HOOK_KINDS, Hookpoint, HookpointError  # noqa: F401
from infra.lm.models import ModelFacts, model_facts

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# Where each family keeps its blocks (causal LM, then bare base model) and names their parts.
_BLOCK_PATHS = {
    "gpt2": ("transformer.h", "h"),
    "gpt_neox": ("gpt_neox.layers", "layers"),
    "llama": ("model.layers", "layers"),
}
_ATTN_NAMES = {"gpt2": "attn", "gpt_neox": "attention", "llama": "self_attn"}


class _StopForward(Exception):
    """Raised from a hook once every requested activation is captured; never escapes."""


def resolve_hookpoints(facts_or_config: ModelFacts | PretrainedConfig, names: Sequence[str | Hookpoint]) -> list[Hookpoint]:
    """Validate hookpoint names against a model's depth, before it runs; rejects duplicates."""
    facts = facts_or_config if isinstance(facts_or_config, ModelFacts) else model_facts(facts_or_config)
    if isinstance(names, str) or len(names) == 0:
        raise HookpointError(f"hookpoints {names!r} are invalid: a non-empty list of names like {ALLOWED_FORMS}")
    hookpoints, seen = [], set()
    for item in names:
        hookpoint = item if isinstance(item, Hookpoint) else Hookpoint.parse(item)
        if hookpoint.layer >= facts.n_layers:
            raise HookpointError(
                f"hookpoint {hookpoint.name!r} is out of range: the {facts.family} model has n_layers={facts.n_layers} "
                f"(L in 0..{facts.n_layers - 1}); allowed forms are {ALLOWED_FORMS}"
            )
        if hookpoint in seen:
            raise HookpointError(f"hookpoint {hookpoint.name!r} is listed twice: each hookpoint once")
        seen.add(hookpoint)
        hookpoints.append(hookpoint)
    return hookpoints


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (causal LM or bare base model)."""
    family = model_facts(model.config).family
    for path in _BLOCK_PATHS[family]:
        try:
            return model.get_submodule(path)
        except AttributeError:
            continue
    raise HookpointError(f"{type(model).__name__} has none of the {family} block lists {_BLOCK_PATHS[family]}")


def hooked_module(model: nn.Module, hookpoint: Hookpoint) -> nn.Module:
    """The module whose input (resid_pre, mlp_in) or output (other kinds) is the hookpoint's activation."""
    block = transformer_blocks(model)[hookpoint.layer]
    if hookpoint.kind == "attn_out":
        return getattr(block, _ATTN_NAMES[model.config.model_type])
    if hookpoint.kind in ("mlp_in", "mlp_out"):
        # Every family calls block.mlp on the normalised residual (GPT-2: ln_2; GPT-NeoX, Llama:
        # post_attention_layernorm), so the MLP's own input is hook_mlp_in, whatever the norm is called.
        return block.mlp
    return block


READS_INPUT = ("resid_pre", "mlp_in")
"""Kinds captured as their hooked module's input (a forward pre-hook); the others are outputs."""


def capture_activations(
    model: nn.Module,
    hookpoints: Sequence[str | Hookpoint],
    input_ids_BS: Tensor,
    attention_mask_BS: Tensor | None = None,
) -> dict[str, Tensor]:
    """{hookpoint name: activations [B, S, d_model]}, running the model only as deep as needed.

    Through the same hooks as every intervention (replacing_activation), with an edit that records
    the activation and returns it unchanged: what the harvest stores is what a splice replaces.
    """
    wanted = resolve_hookpoints(model.config, hookpoints)
    captured: dict[str, Tensor] = {}

    def record(name: str, value: Tensor) -> Tensor:
        captured[name] = value.detach()
        if len(captured) == len(wanted):
            raise _StopForward  # nothing later is read: skip the remaining blocks and the unembedding
        return value

    with ExitStack() as hooks:
        for hookpoint in wanted:
            hooks.enter_context(replacing_activation(model, hookpoint, lambda x, name=hookpoint.name: record(name, x)))
        try:
            with torch.no_grad():
                model(input_ids=input_ids_BS, attention_mask=attention_mask_BS, use_cache=False)
        except _StopForward:
            pass
    missing = [h.name for h in wanted if h.name not in captured]
    if missing:
        raise HookpointError(f"hookpoints {missing} were never reached in {type(model).__name__}'s forward pass")
    return {h.name: captured[h.name] for h in wanted}


@contextmanager
def replacing_activation(model: nn.Module, hookpoint: Hookpoint, edit: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within the block, the hookpoint's activation x_BSD is replaced by edit(x_BSD)."""
    module = hooked_module(model, hookpoint)

    def new_value(x_BSD: Tensor) -> Tensor:
        x_new_BSD = edit(x_BSD)
        if x_new_BSD.shape != x_BSD.shape:
            raise ValueError(f"splice at {hookpoint.name}: replacement has shape {tuple(x_new_BSD.shape)}, "
                             f"the activation {tuple(x_BSD.shape)}; a splice must keep the shape")  # fmt: skip
        return x_new_BSD.to(device=x_BSD.device, dtype=x_BSD.dtype)

    if hookpoint.kind in READS_INPUT:
        # The block's (MLP's) input: GPT-2 / NeoX pass hidden_states positionally, Llama may pass it by keyword.
        def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if args:
                return (new_value(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new_value(kwargs["hidden_states"])}

        handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    else:
        # Attention returns (output, weights); blocks and MLPs return a bare tensor in transformers 5.
        def hook(_m: nn.Module, _args: tuple, output: Any) -> Any:
            if isinstance(output, (tuple, list)):
                return type(output)((new_value(output[0]), *output[1:]))
            return new_value(output)

        handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
