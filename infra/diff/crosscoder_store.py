"""Crosscoders on storage: weights as safetensors plus a JSON config, written config-last."""

from __future__ import annotations

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from infra.storage import exists, join, read_bytes, read_json, write_bytes_atomic, write_json_atomic
from sae_core.crosscoder import Crosscoder, build_crosscoder
from sae_core.crosscoder_config import CrosscoderConfig

WEIGHTS_FILE = "crosscoder_weights.safetensors"
CONFIG_FILE = "crosscoder_cfg.json"


def save_crosscoder(crosscoder: Crosscoder, directory: str, metadata: dict | None = None) -> str:
    """Weights (W_enc [M, D, F], W_dec [F, M, D], biases, per-source input_scale) and config."""
    tensors = {name: value.detach().cpu().contiguous() for name, value in crosscoder.state_dict().items()}
    write_bytes_atomic(join(directory, WEIGHTS_FILE), save_safetensors(tensors))
    write_json_atomic(join(directory, CONFIG_FILE), {"config": crosscoder.cfg.to_dict(), "metadata": metadata or {}})
    return directory


def load_crosscoder(directory: str, device: torch.device | str = "cpu") -> Crosscoder:
    """Load a saved crosscoder; errors name the file and what is wrong."""
    cfg_uri = join(directory, CONFIG_FILE)
    if not exists(cfg_uri):
        raise FileNotFoundError(f"{directory}: not a crosscoder directory ({CONFIG_FILE} missing)")
    crosscoder = build_crosscoder(CrosscoderConfig.from_dict(read_json(cfg_uri)["config"]))
    weights_uri = join(directory, WEIGHTS_FILE)
    tensors = load_safetensors(read_bytes(weights_uri))
    expected = crosscoder.state_dict()
    problems = [f"{n} missing" for n in expected if n not in tensors] + [
        f"{n} has shape {tuple(tensors[n].shape)}, expected {tuple(v.shape)}" for n, v in expected.items() if n in tensors and tensors[n].shape != v.shape
    ]
    if problems:
        raise ValueError(f"{weights_uri}: {'; '.join(problems)}")
    crosscoder.load_state_dict(tensors, strict=True)
    return crosscoder.to(device).eval()
