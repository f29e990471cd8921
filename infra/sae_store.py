"""SAEs and training state on storage: SAELens-format directories and resumable checkpoints.

Layout of an SAE directory (SAELens's): cfg.json, sae_weights.safetensors, sparsity.safetensors.
Layout of a training checkpoint: state.safetensors + state.json, the JSON written last so a
checkpoint without it is ignored (it was interrupted mid-write).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from infra.storage import exists, join, read_bytes, read_json, write_bytes_atomic, write_json_atomic
from sae_core import SaeTrainer, SparseCoder, from_saelens, restore_trainer, to_saelens, trainer_state
from sae_core.saelens_format import SAELENS_FORMAT_VERSION, sparsity_tensor

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_META_FILE = "state.json"


def _load_tensors(uri: str) -> dict[str, torch.Tensor]:
    try:
        return load_safetensors(read_bytes(uri))
    except SafetensorError as error:
        raise ValueError(f"{uri}: not a readable safetensors file ({error})") from error


def saelens_version() -> str:
    """The installed sae-lens's version (what cfg.json is written for); the format's tested version without it."""
    try:
        return version("sae-lens")
    except PackageNotFoundError:
        return SAELENS_FORMAT_VERSION


def save_sae(
    sae: SparseCoder,
    directory: str,
    metadata: Mapping[str, Any] | None = None,
    fire_count_F: torch.Tensor | None = None,
    num_tokens: int = 0,
) -> str:
    """Export an SAE in SAELens's format under directory; cfg.json is written last."""
    # The version of the installed SAELens, not a constant: it says which loader the file was checked against.
    installed = saelens_version()
    cfg, tensors = to_saelens(sae, {"sae_lens_version": installed, "sae_lens_training_version": installed, **(metadata or {})})
    write_bytes_atomic(join(directory, WEIGHTS_FILE), save_safetensors(tensors))
    if fire_count_F is not None:
        write_bytes_atomic(join(directory, SPARSITY_FILE), save_safetensors(sparsity_tensor(fire_count_F.cpu(), num_tokens)))
    write_json_atomic(join(directory, CFG_FILE), cfg)
    return directory


def load_sae(directory: str, device: torch.device | str = "cpu") -> SparseCoder:
    """Load a SAELens-format SAE directory (saeflow's or SAELens's own), checking every tensor."""
    cfg_uri = join(directory, CFG_FILE)
    if not exists(cfg_uri):
        raise FileNotFoundError(f"{directory}: not an SAE directory ({CFG_FILE} missing)")
    cfg = read_json(cfg_uri)
    weights_uri = join(directory, WEIGHTS_FILE)
    tensors = _load_tensors(weights_uri)
    return from_saelens(cfg, tensors, source=weights_uri).to(device)


def save_training_state(trainer: SaeTrainer, directory: str, extra: Mapping[str, Any] | None = None) -> str:
    """Checkpoint a trainer so it resumes exactly; state.json (the commit marker) goes last."""
    tensors, meta = trainer_state(trainer)
    write_bytes_atomic(join(directory, STATE_TENSORS_FILE), save_safetensors(tensors))
    write_json_atomic(join(directory, STATE_META_FILE), {**meta, "extra": dict(extra or {})})
    return directory


def load_training_state(directory: str, device: torch.device | str = "cpu") -> tuple[SaeTrainer, dict[str, Any]] | None:
    """(trainer, extra) from a checkpoint directory, or None when no complete checkpoint is there."""
    meta_uri = join(directory, STATE_META_FILE)
    if not exists(meta_uri):
        return None
    meta = read_json(meta_uri)
    tensors_uri = join(directory, STATE_TENSORS_FILE)
    try:
        trainer = restore_trainer(_load_tensors(tensors_uri), meta, device=device)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{tensors_uri}: training state does not match {meta_uri} ({error})") from error
    return trainer, meta.get("extra", {})
