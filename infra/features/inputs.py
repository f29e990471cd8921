"""Which SAEs the features stage reads, and whether they fit a harvest: checked before any compute.

An input is one SAELens-format directory (cfg.json + sae_weights.safetensors, saeflow's or not)
or a folder of them (a sweep's `saes/{sweep_id}`). Each SAE must read the harvest's hookpoint,
have d_in == the harvest's d_model and, where its cfg names a model, come from the harvested model.
The checks are pure functions of the two JSON documents, so the CLI's preflight and the flow's
plan task apply the same rules.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from infra.lm.model_refs import PACKAGED_SMOLLM2, ModelError, ModelRef

CFG_FILE = "cfg.json"
# What infra.lm.models.model_provenance writes for the packaged alias (kept literal: that module imports torch).
PACKAGED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class FeaturesInputError(ValueError):
    """An SAE, harvest or query the features stage cannot use; the message names it and the rule."""


def sae_hook_name(cfg: dict[str, Any]) -> str | None:
    """The hookpoint an SAE reads: metadata.hook_name (SAELens >= 6) or a top-level hook_name (older)."""
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")


def sae_model_names(cfg: dict[str, Any]) -> set[str]:
    """Names an SAE's cfg gives its model (hub id, saeflow alias); empty when it names none."""
    meta = cfg.get("metadata") or {}
    names = {meta.get("model_name") or cfg.get("model_name"), meta.get("saeflow_model_alias")}
    return {name for name in names if name}


def harvest_model_names(model: str) -> set[str]:
    """Names the harvested model goes by: its reference, its bare name, and the hub id behind the alias."""
    names = {model}
    try:
        ref = ModelRef.parse(model)
    except ModelError:
        return names
    names.add(ref.name)
    if ref.kind == "local":
        names.add(ref.name.rstrip("/").split("/")[-1])  # a local directory's cfg may name it by its folder
    if ref.kind == "packaged":
        names.update({PACKAGED_SMOLLM2, PACKAGED_HUB_ID})
    return names


def sae_name(uri: str) -> str:
    """The name an SAE goes by in the stage's tables: its directory's name."""
    name = posixpath.basename(uri.rstrip("/"))
    if not SAFE_NAME.match(name):
        raise FeaturesInputError(f"SAE directory {uri}: name {name!r} must match {SAFE_NAME.pattern} (it becomes a partition value)")
    return name


def check_sae_fits(uri: str, cfg: dict[str, Any], manifest: dict[str, Any], harvest: str, hookpoint: str | None) -> str:
    """The hookpoint the SAE is read at, after checking it against the harvest; FeaturesInputError otherwise."""
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise FeaturesInputError(f"SAE {uri}: cfg.json field {key}={cfg.get(key)!r} must be a positive integer")
    hook = sae_hook_name(cfg)
    if hookpoint is not None and hook is not None and hook != hookpoint:
        raise FeaturesInputError(f"SAE {uri} reads hookpoint {hook!r}, not the requested {hookpoint!r}")
    wanted = hookpoint or hook
    if wanted is None:
        raise FeaturesInputError(f"SAE {uri}: cfg.json names no hook_name; set the spec's hookpoint")
    if wanted not in manifest.get("hookpoints", []):
        raise FeaturesInputError(f"SAE {uri} reads hookpoint {wanted!r}, which harvest {harvest} does not hold "
                                 f"(it has {manifest.get('hookpoints')})")
    if cfg["d_in"] != manifest.get("d_model"):
        raise FeaturesInputError(f"SAE {uri} has d_in={cfg['d_in']} but harvest {harvest} stores d_model={manifest.get('d_model')}")
    names = sae_model_names(cfg)
    if names and not names & harvest_model_names(str(manifest.get("model"))):
        raise FeaturesInputError(f"SAE {uri} was trained on model {sorted(names)}, but harvest {harvest} is of model "
                                 f"{manifest.get('model')!r}: latents only mean something on their own model's activations")
    return wanted


def check_one_hookpoint(hooks: dict[str, str]) -> str:
    """The single hookpoint of a set of SAEs (the stage reads one hookpoint of the harvest)."""
    distinct = sorted(set(hooks.values()))
    if len(distinct) != 1:
        raise FeaturesInputError(f"the SAEs read different hookpoints {hooks}: run the stage once per hookpoint")
    return distinct[0]


def check_latent(latent: int, d_sae: int, what: str) -> int:
    """latent, if it indexes one of d_sae latents; FeaturesInputError naming `what` otherwise."""
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < d_sae:
        raise FeaturesInputError(f"{what}: latent {latent!r} is not a latent index (0..{d_sae - 1})")
    return latent
