"""Validate a diff request before any compute, and lay out its plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.activations.alignment import AlignmentError, check_same_tokenizer
from infra.ids import spec_id
from infra.lm.hookpoints import resolve_hookpoints
from infra.lm.models import ModelRef, load_model_config, model_facts
from infra.storage import join
from sae_core import TrainConfig
from sae_core.config import scaled_dead_window
from sae_core.crosscoder_config import CrosscoderConfig


@dataclass
class DiffPlan:
    """Everything the crosscoder actor needs; the task and the actor receive this object itself."""

    diff_id: str
    root: str
    models: list[str]
    harvests: list[str]
    hookpoint: str
    crosscoder_config: CrosscoderConfig
    train_config: TrainConfig
    batch_size: int
    eval_contexts: int
    checkpoint_every: int
    shuffle_buffer: int
    shared_band: tuple[float, float]
    exclusive_margin: float
    seed: int = 0
    exclusive_ratio: float = 0.3
    """Latent scaling: a norm-exclusive latent stays exclusive only if both beta ratios are below this."""
    presence_fraction: float = 0.3
    """A latent is present in a source when its decoder norm there is >= this fraction of its largest."""
    hookpoints: list[str] = field(default_factory=list)
    """A cross-layer diff's sources: hookpoints of the one model in `models`, read from its one harvest
    (`hookpoint` is then the first). Empty for a diff of checkpoints at `hookpoint`."""

    @property
    def sources(self) -> list[str]:
        """What each crosscoder source is, in order (A first, B last): the layers, or the checkpoints."""
        return self.hookpoints or self.models

    def uri(self, *parts: str) -> str:
        """A key under this diff's folder."""
        return join(self.root, "diffs", self.diff_id, *parts)


class DiffSpecError(ValueError):
    """A diff request that cannot run; raised before any harvest or training."""


def check_models(models: list[str], hookpoints: list[str]) -> int:
    """Two or more models with the hookpoint, one d_model and one tokenizer; returns d_model."""
    if len(models) < 2 and len(hookpoints) < 2:
        raise DiffSpecError(f"a diff needs two or more model references (checkpoints), or one model with two or more hookpoints; got {models}")
    if len(models) > 1 and len(hookpoints) > 1:
        raise DiffSpecError(f"compare checkpoints {models} at one hookpoint, or the hookpoints {hookpoints} of one model, not both")
    if len(set(models)) != len(models):
        raise DiffSpecError(f"model references repeat: {models}")
    widths = {}
    for ref in models:
        config = load_model_config(ref)
        resolve_hookpoints(config, hookpoints)
        widths[ref] = model_facts(config).d_model
    if len(set(widths.values())) != 1:
        raise DiffSpecError(f"models differ in d_model {widths}: a crosscoder needs one width per hookpoint")
    try:
        check_same_tokenizer(models)
    except AlignmentError as error:
        raise DiffSpecError(f"{error}: harvests on identical tokens need one tokenizer") from error
    return next(iter(widths.values()))


def plan_diff(spec: Mapping[str, Any], harvests: list[str], d_model: int) -> DiffPlan:
    """Build (and so validate) the crosscoder and training configs; the id hashes everything that matters."""
    crosscoder_config = CrosscoderConfig(
        architecture=spec["architecture"], n_sources=len(spec["hookpoints"] or spec["models"]), d_in=d_model, expansion_factor=spec["expansion_factor"],
        k=spec["k"], sparsity_coefficient=spec["sparsity_coefficient"], seed=spec["seed"],
        source_normalization=spec["source_normalization"],
        dead_after_tokens=scaled_dead_window(spec["train_tokens"]),  # AuxK engages in short runs too (sae_core.config)
    )
    total_steps = spec["train_tokens"] // spec["batch_size"]
    if total_steps < 1:
        raise DiffSpecError(f"train_tokens={spec['train_tokens']} must be >= batch_size={spec['batch_size']}")
    train_config = TrainConfig(total_steps=total_steps, lr=spec["lr"], warmup_steps=min(spec["warmup_steps"], total_steps))
    # Every setting that changes the crosscoder, its latents or the summary. The harvests' ids already
    # carry models, tokens, dtype and hookpoint. Left out on purpose: checkpoint_every (resuming is
    # exact), num_actors / ray_address / root / storage_secret / wandb_* (where and how it runs).
    identity = {"harvests": harvests, "hookpoint": spec["hookpoints"] or spec["hookpoint"], "crosscoder": crosscoder_config.to_dict(),
                "train": train_config.to_dict(), "batch": spec["batch_size"], "eval": spec["eval_contexts"],
                "shuffle_buffer": spec["shuffle_buffer"], "stream_seed": spec["seed"],
                "bands": [list(spec["shared_band"]), spec["exclusive_margin"]],
                "latent_scaling": [spec["exclusive_ratio"], spec["presence_fraction"]]}
    slug = "-vs-".join(ModelRef.parse(m).name.rstrip("/").split("/")[-1] for m in spec["models"])[:60]
    if spec["hookpoints"]:
        slug = f"{slug}-layers"
    return DiffPlan(
        diff_id=spec_id(slug, identity), root=spec["root"], models=spec["models"], harvests=harvests,
        hookpoint=(spec["hookpoints"] or [spec["hookpoint"]])[0], hookpoints=list(spec["hookpoints"]),
        crosscoder_config=crosscoder_config, train_config=train_config, batch_size=spec["batch_size"],
        eval_contexts=spec["eval_contexts"], checkpoint_every=spec["checkpoint_every"], shuffle_buffer=spec["shuffle_buffer"],
        shared_band=tuple(spec["shared_band"]), exclusive_margin=spec["exclusive_margin"], seed=spec["seed"],
        exclusive_ratio=spec["exclusive_ratio"], presence_fraction=spec["presence_fraction"],
    )
