"""Training state as flat tensors + JSON (safetensors-ready), so a run resumes exactly, with no pickle."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sae_core.config import TrainConfig
from sae_core.registry import dictionary_from_dict
from sae_core.trainer import SaeTrainer

STATE_FORMAT_VERSION = 1


def trainer_state(trainer: SaeTrainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta): everything needed to rebuild the trainer mid-run."""
    tensors = {f"sae.{name}": value.detach().cpu().contiguous().clone() for name, value in trainer.sae.state_dict().items()}
    optimizers_meta = []
    for opt_index, optimizer in enumerate(trainer.optimizers):
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for param_index, param_state in state["state"].items():
            for key, value in param_state.items():
                if isinstance(value, Tensor):
                    tensors[f"optim.{opt_index}.{param_index}.{key}"] = value.detach().cpu().contiguous().clone()
                else:
                    scalars.setdefault(str(param_index), {})[key] = value
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in state["param_groups"]]
        optimizers_meta.append({"param_groups": groups, "scalars": scalars})
    meta = {
        "format_version": STATE_FORMAT_VERSION,
        "model_kind": trainer.sae.kind,
        "step": trainer.step,
        "tokens_seen": trainer.tokens_seen,
        "device_seconds": trainer.device_seconds,
        "sae_config": trainer.sae.cfg.to_dict(),  # the config of model_kind's class (a CrosscoderConfig's for a crosscoder)
        "train_config": trainer.cfg.to_dict(),
        "optimizers": optimizers_meta,
    }
    return tensors, meta


def restore_trainer(tensors: dict[str, Tensor], meta: dict[str, Any], device: torch.device | str = "cpu") -> SaeTrainer:
    """Rebuild a trainer from trainer_state's output; raises ValueError naming what is missing."""
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise ValueError(f"training state has format_version={meta.get('format_version')!r}, expected {STATE_FORMAT_VERSION}")
    # States written before crosscoders existed carry no model_kind: they are SAEs.
    sae = dictionary_from_dict(meta.get("model_kind", "sae"), meta["sae_config"])
    model_state = {name[len("sae."):]: value for name, value in tensors.items() if name.startswith("sae.")}
    missing = sorted(set(sae.state_dict()) - set(model_state))
    if missing:
        raise ValueError(f"training state lacks SAE tensors {missing}")
    sae.load_state_dict(model_state, strict=True)
    sae.to(device)
    trainer = SaeTrainer(sae, TrainConfig.from_dict(meta["train_config"]))
    for opt_index, (optimizer, opt_meta) in enumerate(zip(trainer.optimizers, meta["optimizers"], strict=True)):
        per_param: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{opt_index}."
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for name, value in tensors.items():
            if name.startswith(prefix):
                param_index, key = name[len(prefix):].split(".", 1)
                per_param.setdefault(int(param_index), {})[key] = _like_param(value, params[int(param_index)])
        for param_index, scalars in opt_meta["scalars"].items():
            per_param.setdefault(int(param_index), {}).update(scalars)
        optimizer.load_state_dict({"state": per_param, "param_groups": opt_meta["param_groups"]})
    trainer.step = int(meta["step"])
    trainer.tokens_seen = int(meta["tokens_seen"])
    trainer.device_seconds = float(meta.get("device_seconds", 0.0))
    return trainer


def _like_param(value: Tensor, param: Tensor) -> Tensor:
    """An optimiser moment in its parameter's memory layout (W_enc is column-major).

    Checkpoints store tensors contiguous; fused optimiser kernels walk a parameter and its
    moments in memory order, so a moment restored in another layout would pair wrong elements.
    """
    if value.shape != param.shape or value.stride() == param.stride():
        return value
    return torch.empty_strided(param.shape, param.stride(), dtype=value.dtype).copy_(value)
