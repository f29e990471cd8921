"""The steering stage's plan: the model, hookpoint, prompts, conditions, every setting, and the id they hash to.

steer_id = slug + hash of: the model reference, the hookpoint, the prompts, the steered latents and
their scales, the clamped latents and values, the contrastive prompt pairs and scale, the generation
settings (max_new_tokens, temperature, seed, top_tokens), the SAE's weights and cfg.json (hashed:
an SAE retrained in place is a new input), and the ablation settings with the harvest id they read.
Where the stage runs (root, device, Ray) stays out of the id.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from infra.activations.store import MANIFEST_FILE, read_manifest
from infra.ids import spec_id
from infra.lm.hookpoints import resolve_hookpoints
from infra.lm.models import load_model_config, model_facts
from infra.steer.inputs import SteerInputError, check_finite, check_latents, check_sae_cfg, check_same_length
from infra.storage import exists, join, read_bytes, read_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
NEEDS_STATS = ("mean", "resample")


@dataclass
class SteerSettings:
    """The knobs that change the stage's tables (all enter the id)."""

    latents: list[int] = field(default_factory=list)
    """Latents whose decoder directions are added (one 'add' condition, summed)."""
    scales: list[float] = field(default_factory=list)
    """One per latent, in units of the hookpoint's typical activation norm."""
    clamp_latents: list[int] = field(default_factory=list)
    """Latents clamped through the SAE (one 'clamp' condition)."""
    clamp_values: list[float] = field(default_factory=list)
    """One per clamped latent, in the latent's own activation units."""
    positive_prompts: list[str] = field(default_factory=list)
    negative_prompts: list[str] = field(default_factory=list)
    contrastive_scale: float = 4.0
    """Multiplier of the raw mean-difference vector (Panickssery et al.'s convention)."""
    max_new_tokens: int = 24
    temperature: float = 0.0
    """0 = greedy; > 0 samples with a seeded CPU generator (the same draws for baseline and steered)."""
    seed: int = 0
    top_tokens: int = 10
    """Promoted tokens listed per prompt and condition."""
    ablation_modes: list[str] = field(default_factory=lambda: ["zero"])
    ablation_latents: list[int] = field(default_factory=list)
    contexts: int = 8
    """The harvest's held-out split for N contexts (a sweep's with eval_contexts=N) evaluates the ablations (the prompts do
    when no harvest is given)."""
    stat_rows: int = 4096
    """Harvest rows the mean / resample statistics are taken over."""


@dataclass
class SteerPlan:
    """Everything the stage's worker needs; tasks and the Ray actor receive this object itself."""

    steer_id: str
    steer: str
    """URI of the stage's folder."""
    model: str
    hookpoint: str
    d_model: int
    prompts: list[str]
    sae: str | None
    sae_hash: str | None
    d_sae: int | None
    harvest: str | None
    harvest_id: str | None
    settings: SteerSettings = field(default_factory=SteerSettings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (for the stage manifest)."""
        return asdict(self)


    @property
    def conditions(self) -> list[str]:
        """The interventions compared with the baseline, in report order."""
        s = self.settings
        return [name for name, used in (("add", s.latents), ("clamp", s.clamp_latents), ("caa", s.positive_prompts)) if used]


def check_settings(settings: SteerSettings, has_sae: bool) -> None:
    """Rules across settings that need no file: pairs line up, values are finite, modes have their inputs."""
    check_same_length(settings.latents, settings.scales, "latents", "scales")
    check_same_length(settings.clamp_latents, settings.clamp_values, "clamp_latents", "clamp_values")
    check_same_length(settings.positive_prompts, settings.negative_prompts, "positive_prompts", "negative_prompts")
    check_finite(settings.scales, "scales")
    check_finite(settings.clamp_values, "clamp_values")
    check_finite([settings.contrastive_scale, settings.temperature], "contrastive_scale / temperature")
    if (settings.latents or settings.clamp_latents or settings.ablation_latents) and not has_sae:
        raise SteerInputError("sae: latents, clamp_latents and ablation_latents name SAE latents: set sae")
    unknown = sorted(set(settings.ablation_modes) - {"zero", *NEEDS_STATS})
    if unknown:
        raise SteerInputError(f"ablation_modes: {unknown} not among zero, mean, resample")


def sae_digest(uri: str) -> str:
    """Hash of an SAE's weights and cfg.json."""
    return hashlib.sha256(read_bytes(join(uri, WEIGHTS_FILE)) + read_bytes(join(uri, CFG_FILE))).hexdigest()[:16]


def plan_steer(model: str, prompts: list[str], root: str, hookpoint: str | None = None, sae: str | None = None,
               harvest: str | None = None, settings: SteerSettings | None = None) -> SteerPlan:
    """Check the model, SAE, latents and harvest against each other and lay out the stage; nothing runs."""
    settings = settings or SteerSettings()
    if not prompts:
        raise SteerInputError("prompts: at least one prompt to generate from")
    check_settings(settings, sae is not None)
    facts = model_facts(load_model_config(model))
    cfg = None
    if sae is not None:
        if not exists(join(sae, CFG_FILE)):
            raise SteerInputError(f"sae {sae}: not an SAE directory ({CFG_FILE} missing)")
        cfg = read_json(join(sae, CFG_FILE))
        hookpoint = check_sae_cfg(sae, cfg, hookpoint, facts.d_model)
        for key in ("latents", "clamp_latents", "ablation_latents"):
            check_latents(getattr(settings, key), cfg["d_sae"], key)
    if hookpoint is None:
        raise SteerInputError("hookpoint: set it (or give an SAE whose cfg.json names one)")
    resolve_hookpoints(facts, [hookpoint])  # in range for this model's depth
    harvest_id = None
    if harvest is not None:
        if not exists(join(harvest, MANIFEST_FILE)):
            raise SteerInputError(f"harvest {harvest} has no {MANIFEST_FILE}: run the harvest flow first (missing or unfinished)")
        manifest = read_manifest(harvest)
        if hookpoint not in manifest["hookpoints"]:
            raise SteerInputError(f"harvest {harvest} does not hold hookpoint {hookpoint!r} (it has {manifest['hookpoints']})")
        if manifest["d_model"] != facts.d_model:
            raise SteerInputError(f"harvest {harvest} stores d_model={manifest['d_model']}, the model has {facts.d_model}")
        harvest_id = manifest["harvest_id"]
    digest = sae_digest(sae) if sae is not None else None
    identity = {"model": model, "hookpoint": hookpoint, "prompts": prompts, "sae": digest, "harvest_id": harvest_id,
                "settings": asdict(settings)}
    slug = f"{model.rstrip('/').rsplit('/', 1)[-1]}-steer"
    steer_id = spec_id(slug, identity)
    return SteerPlan(steer_id=steer_id, steer=join(root, "steer", steer_id), model=model, hookpoint=hookpoint, d_model=facts.d_model,
                     prompts=list(prompts), sae=sae, sae_hash=digest, d_sae=cfg["d_sae"] if cfg else None, harvest=harvest,
                     harvest_id=harvest_id, settings=settings)
