"""Conversion to and from SAELens's on-disk format (cfg.json dict + sae_weights tensors).

Pure and I/O-free: infra writes the returned dicts to storage. The input scale used in
training is folded into the weights, so the exported SAE reads raw model activations:
pre = (x*s - b) W + c = (x - b/s)(sW) + c, and x_hat = (a W_dec + b)/s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sae_core.base import SparseCoder
from sae_core.batchtopk import BatchTopKSae
from sae_core.config import SaeConfig
from sae_core.jumprelu import JumpReluSae
from sae_core.registry import build_sae
from sae_core.transcoder_format import TRANSCODER_FORMATS, TranscoderFormatError, transcoder_from_saelens, transcoder_to_saelens

SAELENS_FORMAT_VERSION = "6.49.2"
"""Written as metadata.sae_lens_version: SAELens treats configs without it as pre-6.0 and drops metadata."""

_EXPORT_ARCHITECTURE = {"relu": "standard", "topk": "topk", "batchtopk": "jumprelu", "jumprelu": "jumprelu", "gated": "gated",
                        "matryoshka_batchtopk": "jumprelu"}
NATIVE_ARCHITECTURES = ("deep_topk",)
"""Architectures SAELens has no inference class for: stored in SAELens's directory layout with
cfg.json architecture set to saeflow's own name (SAELens refuses to load them, by that name),
every parameter unscaled plus the input_scale tensor, and the saeflow config in the metadata."""
_IMPORT_ARCHITECTURE = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu", "gated": "gated"}
_TENSOR_SHAPES = {
    "standard": {"W_enc": "DF", "b_enc": "F", "W_dec": "FD", "b_dec": "D"},
    "topk": {"W_enc": "DF", "b_enc": "F", "W_dec": "FD", "b_dec": "D"},
    "jumprelu": {"W_enc": "DF", "b_enc": "F", "W_dec": "FD", "b_dec": "D", "threshold": "F"},
    "gated": {"W_enc": "DF", "W_dec": "FD", "b_dec": "D", "b_gate": "F", "b_mag": "F", "r_mag": "F"},
}


class SaeFormatError(ValueError):
    """A SAELens-format config or tensor set breaks a rule of the format."""


@torch.no_grad()
def to_saelens(sae: SparseCoder, metadata: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(cfg dict, tensors) for cfg.json and sae_weights.safetensors, input scaling folded in."""
    if sae.paired:  # transcoders: sae_core.transcoder_format
        return transcoder_to_saelens(sae, metadata)
    if sae.architecture in NATIVE_ARCHITECTURES:
        return _to_native(sae, metadata)
    scale = float(sae.input_scale)
    tensors = {
        "W_enc": sae.W_enc * scale,
        "W_dec": sae.W_dec / scale,
        "b_dec": sae.b_dec / scale,
    }
    if hasattr(sae, "b_enc"):
        tensors["b_enc"] = sae.b_enc.clone()
    if isinstance(sae, JumpReluSae):
        tensors["threshold"] = sae.threshold.clone()
    elif isinstance(sae, BatchTopKSae):
        # Inference for (Matryoshka) BatchTopK is a JumpReLU whose threshold is the same for every latent.
        tensors["threshold"] = sae.threshold.expand(sae.cfg.d_sae).clone()
    elif sae.architecture == "gated":
        tensors.update(b_gate=sae.b_gate.clone(), b_mag=sae.b_mag.clone(), r_mag=sae.r_mag.clone())
    tensors = {name: value.detach().float().cpu().contiguous() for name, value in tensors.items()}
    cfg: dict[str, Any] = {
        "architecture": _EXPORT_ARCHITECTURE[sae.architecture],
        "d_in": sae.cfg.d_in,
        "d_sae": sae.cfg.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": SAELENS_FORMAT_VERSION,
            "sae_lens_training_version": SAELENS_FORMAT_VERSION,
            "training_architecture": sae.architecture,
            "saeflow_config": sae.cfg.to_dict(),
            "saeflow_input_scale": scale,
            **(metadata or {}),
        },
    }
    if sae.architecture == "topk":
        cfg.update(k=sae.cfg.k, rescale_acts_by_decoder_norm=False)
    return cfg, tensors


def _to_native(sae: SparseCoder, metadata: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """NATIVE_ARCHITECTURES' export: the state's parameters and input_scale, as trained."""
    tensors = {name: value.detach().float().cpu().contiguous().clone() for name, value in sae.named_parameters()}
    tensors["input_scale"] = sae.input_scale.detach().float().cpu().reshape(1).clone()
    cfg = {
        "architecture": sae.architecture, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "dtype": "float32", "device": "cpu",
        "metadata": {"sae_lens_version": SAELENS_FORMAT_VERSION, "training_architecture": sae.architecture,
                     "saeflow_config": sae.cfg.to_dict(), "saeflow_input_scale": float(sae.input_scale), **(metadata or {})},
    }
    return cfg, tensors


def _from_native(cfg: Mapping[str, Any], tensors: Mapping[str, Tensor], source: str) -> SparseCoder:
    saeflow_config = cfg.get("metadata", {}).get("saeflow_config")
    if not isinstance(saeflow_config, Mapping) or saeflow_config.get("architecture") != cfg["architecture"]:
        raise SaeFormatError(f"{source}: {cfg['architecture']} SAE needs metadata.saeflow_config of that architecture")
    sae = build_sae(SaeConfig.from_dict(dict(saeflow_config)))
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()} | {"input_scale": (1,)}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise SaeFormatError(f"{source}: {cfg['architecture']} SAE is missing tensor(s) {missing}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise SaeFormatError(f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
        if not torch.isfinite(tensors[name]).all():
            raise SaeFormatError(f"{source}: tensor {name} holds NaN or inf values")
    parameters = dict(sae.named_parameters())
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(tensors[name].float())
        sae.input_scale.copy_(tensors["input_scale"].float().reshape(()))
        sae.initialized.fill_(True)
    return sae.eval()


def _check_tensors(architecture: str, tensors: Mapping[str, Tensor], d_in: int, d_sae: int, source: str) -> None:
    expected = _TENSOR_SHAPES[architecture]
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise SaeFormatError(f"{source}: {architecture} SAE is missing tensor(s) {missing}")
    sizes = {"D": d_in, "F": d_sae}
    for name, axes in expected.items():
        want = tuple(sizes[axis] for axis in axes)
        if tuple(tensors[name].shape) != want:
            raise SaeFormatError(f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {want} (d_in={d_in}, d_sae={d_sae})")
        if not torch.isfinite(tensors[name]).all():
            raise SaeFormatError(f"{source}: tensor {name} holds NaN or inf values")


@torch.no_grad()
def from_saelens(cfg: Mapping[str, Any], tensors: Mapping[str, Tensor], source: str = "<memory>") -> SparseCoder:
    """An inference-ready SAE from a SAELens cfg dict and tensors; errors name `source` and the rule."""
    architecture = cfg.get("architecture")
    if architecture in TRANSCODER_FORMATS:
        try:
            return transcoder_from_saelens(cfg, tensors, source)
        except TranscoderFormatError as error:  # one error type for every bad SAE directory
            raise SaeFormatError(str(error)) from None
    if architecture in NATIVE_ARCHITECTURES:
        return _from_native(cfg, tensors, source)
    if architecture not in _IMPORT_ARCHITECTURE:
        raise SaeFormatError(f"{source}: architecture={architecture!r} is not one of {sorted(_IMPORT_ARCHITECTURE)}")
    for key in ("d_in", "d_sae"):
        if not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise SaeFormatError(f"{source}: cfg field {key}={cfg.get(key)!r} must be a positive integer")
    normalize = cfg.get("normalize_activations", "none")
    if normalize not in ("none", "expected_average_only_in"):
        raise SaeFormatError(f"{source}: normalize_activations={normalize!r} is not supported (only none / expected_average_only_in)")
    if cfg.get("reshape_activations", "none") != "none":
        raise SaeFormatError(f"{source}: reshape_activations={cfg['reshape_activations']!r} is not supported")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    _check_tensors(architecture, tensors, d_in, d_sae, source)
    weights = {name: tensors[name].float() for name in _TENSOR_SHAPES[architecture]}
    if not cfg.get("apply_b_dec_to_input", True):
        # pre = x W + c = (x - b) W + (c + b W): fold so our encoder can always centre on b_dec.
        bias_name = "b_gate" if architecture == "gated" else "b_enc"
        weights[bias_name] = weights[bias_name] + weights["b_dec"] @ weights["W_enc"]
        if architecture == "gated":
            weights["b_mag"] = weights["b_mag"] + weights["b_dec"] @ (weights["W_enc"] * weights["r_mag"].exp())
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
        # acts scaled by decoder norms then decoded by unit rows == the same SAE with norms folded.
        norm_F = weights["W_dec"].norm(dim=1)
        weights.update(W_enc=weights["W_enc"] * norm_F, b_enc=weights["b_enc"] * norm_F, W_dec=weights["W_dec"] / norm_F[:, None])
    sae_cfg = SaeConfig(
        architecture=_IMPORT_ARCHITECTURE[architecture],
        d_in=d_in,
        d_sae=d_sae,
        k=int(cfg.get("k", min(32, d_sae))),
        normalize_activations=False,
        b_dec_init="zeros",
    )
    sae = build_sae(sae_cfg)
    if architecture == "jumprelu":
        # SAELens compares against relu(threshold): a negative stored threshold acts as 0.
        sae.threshold.copy_(weights.pop("threshold").clamp_min(0.0))
    for name, value in weights.items():
        getattr(sae, name).copy_(value)
    sae.initialized.fill_(True)
    return sae.eval()


def sparsity_tensor(fire_count_F: Tensor, num_tokens: int) -> dict[str, Tensor]:
    """sparsity.safetensors content: log10 feature density under the key SAELens reads."""
    density_F = fire_count_F.double() / max(num_tokens, 1)
    return {"sparsity": (density_F + 1e-10).log10().float().contiguous()}


__all__ = ["NATIVE_ARCHITECTURES", "SAELENS_FORMAT_VERSION", "SaeFormatError", "from_saelens", "sparsity_tensor", "to_saelens"]
