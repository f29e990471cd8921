"""Validate a diff request before any compute, and lay out its plan."""

from __future__ import annotations

from typing import Any

from infra.activations.alignment import AlignmentError, check_same_tokenizer
from infra.diff.run import DiffPlan
from infra.ids import spec_id
from infra.lm.hookpoints import resolve_hookpoints
from infra.lm.models import ModelRef, load_model_config, model_facts
from sae_core import TrainConfig
from sae_core.config import scaled_dead_window
from sae_core.crosscoder_config import CrosscoderConfig


class DiffSpecError(ValueError):
    """A diff request that cannot run; raised before any harvest or training."""


def check_models(models: list[str], hookpoint: str) -> int:
    """Two or more models with the hookpoint, one d_model and one tokenizer; returns d_model."""
    if len(models) < 2:
        raise DiffSpecError(f"a diff needs at least two model references (checkpoints), got {models}")
    if len(set(models)) != len(models):
        raise DiffSpecError(f"model references repeat: {models}")
    widths = {}
    for ref in models:
        config = load_model_config(ref)
        resolve_hookpoints(config, [hookpoint])
        widths[ref] = model_facts(config).d_model
    if len(set(widths.values())) != 1:
        raise DiffSpecError(f"models differ in d_model {widths}: a crosscoder needs one width per hookpoint")
    try:
        check_same_tokenizer(models)
    except AlignmentError as error:
        raise DiffSpecError(f"{error}: harvests on identical tokens need one tokenizer") from error
    return next(iter(widths.values()))


def plan_diff(spec: dict[str, Any], harvests: list[str], d_model: int) -> DiffPlan:
    """Build (and so validate) the crosscoder and training configs; the id hashes everything that matters."""
    crosscoder_config = CrosscoderConfig(
        architecture=spec["architecture"], n_sources=len(spec["models"]), d_in=d_model, expansion_factor=spec["expansion_factor"],
        k=spec["k"], sparsity_coefficient=spec["sparsity_coefficient"], seed=spec["seed"],
        source_normalization=spec.get("source_normalization", "centred_variance"),
        dead_after_tokens=scaled_dead_window(spec["train_tokens"]),  # AuxK engages in short runs too (sae_core.config)
    )
    total_steps = spec["train_tokens"] // spec["batch_size"]
    if total_steps < 1:
        raise DiffSpecError(f"train_tokens={spec['train_tokens']} must be >= batch_size={spec['batch_size']}")
    train_config = TrainConfig(total_steps=total_steps, lr=spec["lr"], warmup_steps=min(spec["warmup_steps"], total_steps))
    # Every setting that changes the crosscoder, its latents or the summary. The harvests' ids already
    # carry models, tokens, dtype and hookpoint. Left out on purpose: checkpoint_every (resuming is
    # exact), num_actors / ray_address / root / storage_secret / wandb_* (where and how it runs).
    identity = {"harvests": harvests, "hookpoint": spec["hookpoint"], "crosscoder": crosscoder_config.to_dict(),
                "train": train_config.to_dict(), "batch": spec["batch_size"], "eval": spec["eval_contexts"],
                "shuffle_buffer": spec["shuffle_buffer"], "stream_seed": spec["seed"],
                "bands": [list(spec["shared_band"]), spec["exclusive_margin"]],
                "latent_scaling": [spec.get("exclusive_ratio", 0.3), spec.get("presence_fraction", 0.3)]}
    slug = "-vs-".join(ModelRef.parse(m).name.rstrip("/").split("/")[-1] for m in spec["models"])[:60]
    return DiffPlan(
        diff_id=spec_id(slug, identity), root=spec["root"], models=spec["models"], harvests=harvests, hookpoint=spec["hookpoint"],
        crosscoder_config=crosscoder_config.to_dict(), train_config=train_config.to_dict(), batch_size=spec["batch_size"],
        eval_contexts=spec["eval_contexts"], checkpoint_every=spec["checkpoint_every"], shuffle_buffer=spec["shuffle_buffer"],
        shared_band=tuple(spec["shared_band"]), exclusive_margin=spec["exclusive_margin"], seed=spec["seed"],
        exclusive_ratio=spec.get("exclusive_ratio", 0.3), presence_fraction=spec.get("presence_fraction", 0.3),
    )
