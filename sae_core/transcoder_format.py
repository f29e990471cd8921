"""Transcoders in SAELens's on-disk format (sae_lens.saes.transcoder, sae-lens >= 6.x).

SAELens has inference classes for ReLU and JumpReLU transcoders, each with and without a skip
path, and none for TopK transcoders:

    saeflow kind / architecture        cfg.json architecture      SAELens class
    transcoder / relu                  transcoder                 Transcoder
    skip_transcoder / relu             skip_transcoder            SkipTranscoder
    transcoder / batchtopk             jumprelu_transcoder        JumpReLUTranscoder (the global threshold per latent)
    skip_transcoder / batchtopk        jumprelu_skip_transcoder   JumpReLUSkipTranscoder
    (skip_)transcoder / topk           (skip_)transcoder_topk     none: saeflow's own name, which SAELens refuses

Both scales are folded into the weights so the export reads raw model activations and writes
the target in model units: pre = (x s_in) W_enc + b_enc, y = (a W_dec + b_dec + x s_in W_skip^T) / s_out.
A BatchTopK transcoder's inference rule, pre * (pre > threshold) with threshold >= 0, is SAELens's
JumpReLU relu(pre) * (pre > threshold) exactly. Our config rides along in metadata.saeflow_config.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sae_core.config import SaeConfig
from sae_core.transcoder import TRANSCODER_CLASSES, TranscoderMixin

_SAELENS_NAME = {("transcoder", "relu"): "transcoder", ("skip_transcoder", "relu"): "skip_transcoder",
                 ("transcoder", "batchtopk"): "jumprelu_transcoder", ("skip_transcoder", "batchtopk"): "jumprelu_skip_transcoder",
                 ("transcoder", "topk"): "transcoder_topk", ("skip_transcoder", "topk"): "skip_transcoder_topk"}  # fmt: skip
TRANSCODER_FORMATS = tuple(_SAELENS_NAME.values())
"""cfg.json architectures this module reads and writes."""
NATIVE_TRANSCODER_FORMATS = ("transcoder_topk", "skip_transcoder_topk")
"""Those SAELens has no class for (it refuses them by name)."""


class TranscoderFormatError(ValueError):
    """A transcoder cfg.json / tensor set that breaks a rule of the format."""


@torch.no_grad()
def transcoder_to_saelens(model: TranscoderMixin, metadata: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(cfg dict, tensors) for cfg.json and sae_weights.safetensors, both scales folded in."""
    s_in, s_out = float(model.input_scale), float(model.target_scale)
    tensors = {"W_enc": model.W_enc * s_in, "b_enc": model.b_enc.clone(), "W_dec": model.W_dec / s_out, "b_dec": model.b_dec / s_out}
    if model.has_skip:
        tensors["W_skip"] = model.W_skip * (s_in / s_out)
    if model.architecture == "batchtopk":
        tensors["threshold"] = model.threshold.expand(model.cfg.d_sae).clone()
    tensors = {name: value.detach().float().cpu().contiguous() for name, value in tensors.items()}
    meta = dict(metadata or {})
    # SAELens names a transcoder's input hook hook_name; its output hook is saeflow's hook_name_out.
    cfg: dict[str, Any] = {
        "architecture": _SAELENS_NAME[(model.cfg.kind, model.architecture)],
        "d_in": model.cfg.d_in, "d_sae": model.cfg.d_sae, "d_out": model.cfg.d_out, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"sae_lens_version": meta.pop("sae_lens_version", "6.49.2"), "training_architecture": model.architecture,
                     "saeflow_config": model.cfg.to_dict(), "saeflow_input_scale": s_in, "saeflow_target_scale": s_out, **meta},
    }  # fmt: skip
    if model.architecture == "topk":
        cfg["k"] = model.cfg.k
    return cfg, tensors


@torch.no_grad()
def transcoder_from_saelens(cfg: Mapping[str, Any], tensors: Mapping[str, Tensor], source: str = "<memory>") -> TranscoderMixin:
    """An inference-ready transcoder from a cfg dict and tensors (saeflow's export, or SAELens's own ReLU ones)."""
    name = cfg.get("architecture")
    if name not in TRANSCODER_FORMATS:
        raise TranscoderFormatError(f"{source}: architecture={name!r} is not a transcoder format ({', '.join(TRANSCODER_FORMATS)})")
    kind, architecture = next(key for key, value in _SAELENS_NAME.items() if value == name)
    for key in ("d_in", "d_sae", "d_out"):
        if isinstance(cfg.get(key), bool) or not isinstance(cfg.get(key), int) or cfg[key] < 1:
            raise TranscoderFormatError(f"{source}: cfg field {key}={cfg.get(key)!r} must be a positive integer")
    if cfg.get("apply_b_dec_to_input", False) or cfg.get("normalize_activations", "none") != "none":
        raise TranscoderFormatError(f"{source}: a transcoder needs apply_b_dec_to_input=false and normalize_activations='none'")
    saeflow = (cfg.get("metadata") or {}).get("saeflow_config")
    if architecture != "relu" and not isinstance(saeflow, Mapping):
        raise TranscoderFormatError(f"{source}: {name} needs metadata.saeflow_config (saeflow reads only its own {name} exports)")
    values = dict(saeflow) if isinstance(saeflow, Mapping) else {"architecture": "relu", "kind": kind}
    # The weights are already in model units: scales of 1, never re-initialised from data.
    values.update(d_in=cfg["d_in"], d_sae=cfg["d_sae"], d_out=cfg["d_out"], normalize_activations=False, b_dec_init="zeros")
    model = TRANSCODER_CLASSES[architecture](SaeConfig.from_dict(values))
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    if architecture == "batchtopk":
        expected["threshold"] = (cfg["d_sae"],)
    for tensor_name, shape in expected.items():
        if tensor_name not in tensors:
            raise TranscoderFormatError(f"{source}: {name} is missing tensor {tensor_name}")
        if tuple(tensors[tensor_name].shape) != shape or not torch.isfinite(tensors[tensor_name]).all():
            raise TranscoderFormatError(f"{source}: tensor {tensor_name} has shape {tuple(tensors[tensor_name].shape)} (expected {shape}) "
                                        "or holds NaN/inf")  # fmt: skip
    for tensor_name, parameter in model.named_parameters():
        parameter.copy_(tensors[tensor_name].float())
    if architecture == "batchtopk":
        threshold_F = tensors["threshold"].float()
        if not torch.all(threshold_F == threshold_F[0]):
            raise TranscoderFormatError(f"{source}: {name} has per-latent thresholds; saeflow's BatchTopK transcoder has one")
        model.threshold.fill_(float(threshold_F[0]))
        model.threshold_seen.fill_(True)
    model.initialized.fill_(True)
    return model.eval()
