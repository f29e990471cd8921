"""The steering stage's input rules that need no torch: the CLI's preflight and the plan task apply the same ones.

An SAE must read the stage's hookpoint, have d_in == the model's d_model, and every latent named
(steered, clamped, ablated) must index one of its d_sae latents; scales and clamp values must be finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


class SteerInputError(ValueError):
    """A steering input (SAE, latent, scale, prompt set, harvest) the stage cannot use; the message names it and the rule."""


def sae_hook_name(cfg: dict[str, Any]) -> str | None:
    """The hookpoint an SAE reads: metadata.hook_name (SAELens >= 6) or a top-level hook_name (older)."""
    return (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name")


def check_sae_cfg(uri: str, cfg: dict[str, Any], hookpoint: str | None, d_model: int | None) -> str:
    """The hookpoint the SAE is read at, after checking d_in / d_sae and its hook_name; SteerInputError otherwise."""
    for key in ("d_in", "d_sae"):
        if isinstance(cfg.get(key), bool) or not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise SteerInputError(f"SAE {uri}: cfg.json field {key}={cfg.get(key)!r} must be a positive integer")
    hook = sae_hook_name(cfg)
    hook_out = (cfg.get("metadata") or {}).get("hook_name_out") or cfg.get("hook_name_out")
    if hook_out is not None and hook_out != hook:
        # Its decoder writes at hook_name_out, not where it reads: steering, clamping and ablating at
        # hook_name would add output-space directions to the input. Refused rather than half right.
        raise SteerInputError(f"SAE {uri} is a transcoder ({hook} -> {hook_out}): the steering stage takes SAEs only "
                              "(a transcoder's latents write at another hookpoint than they read)")
    if hookpoint is not None and hook is not None and hook != hookpoint:
        raise SteerInputError(f"SAE {uri} reads hookpoint {hook!r}, not the requested {hookpoint!r}: its latents mean nothing there")
    if hookpoint is None and hook is None:
        raise SteerInputError(f"SAE {uri}: cfg.json names no hook_name; set the spec's hookpoint")
    if d_model is not None and cfg["d_in"] != d_model:
        raise SteerInputError(f"SAE {uri} has d_in={cfg['d_in']} but the model's d_model is {d_model}")
    return hookpoint or hook


def check_latents(latents: Sequence[int], d_sae: int, key: str) -> None:
    """Every latent indexes one of d_sae latents."""
    for latent in latents:
        if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent < d_sae:
            raise SteerInputError(f"{key}: latent {latent!r} is out of range: the SAE has d_sae={d_sae} (0..{d_sae - 1})")


def check_finite(values: Sequence[float], key: str) -> None:
    """Every value is a finite number."""
    for value in values:
        if not math.isfinite(value):
            raise SteerInputError(f"{key}: {value!r} is not finite")


def check_same_length(a: Sequence[Any], b: Sequence[Any], key_a: str, key_b: str) -> None:
    """Two lists that pair up element by element."""
    if len(a) != len(b):
        raise SteerInputError(f"{key_a} has {len(a)} entries but {key_b} has {len(b)}: one per entry")
