"""The synthetic-activation training run behind the demo: grid expansion, shared stream, recovery."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from infra.ids import spec_id
from infra.sae_store import load_sae
from infra.storage import join
from infra.training.group import GroupMember, train_group
from sae_core import SaeConfig, TrainConfig
from sae_core.synthetic import SyntheticFeatures, recovery_score


def _truth(spec: dict[str, Any]) -> SyntheticFeatures:
    return SyntheticFeatures(spec["d"], spec["num_features"], spec["firing_probability"], spec["seed"])


def synthetic_members(spec: dict[str, Any]) -> list[GroupMember]:
    """One member per (architecture, expansion factor) grid point, all validated before training."""
    run_id = spec_id("synthetic", spec)
    members = []
    for architecture, expansion in itertools.product(spec["architectures"], spec["expansion_factors"]):
        sae_config = SaeConfig(
            architecture=architecture,
            d_in=spec["d"],
            expansion_factor=expansion,
            k=spec["k"],
            sparsity_coefficient=spec["sparsity_coefficients"].get(architecture, 1.0),
            seed=spec["seed"],
        )
        train_config = TrainConfig(total_steps=spec["steps"], lr=spec["lr"], warmup_steps=min(50, spec["steps"]))
        sae_id = spec_id(f"{architecture}-x{expansion:g}", {"sae": sae_config.to_dict(), "train": train_config.to_dict()})
        members.append(
            GroupMember(
                sae_id=sae_id,
                sae_config=sae_config,
                train_config=train_config,
                sae_uri=join(spec["root"], "saes", run_id, sae_id),
                checkpoint_uri=join(spec["root"], "checkpoints", run_id, sae_id),
            )
        )
    return members


def train_synthetic_group(spec: dict[str, Any], members: list[GroupMember]) -> list[dict[str, Any]]:
    """Train the members on one synthetic stream; held-out batches use a different seed."""
    truth = _truth(spec)

    def stream_from(start: int):
        generator = torch.Generator().manual_seed(spec["seed"] + 1)
        for index in range(spec["steps"]):
            batch_BD = truth.sample(spec["batch_size"], generator)
            if index >= start:
                yield batch_BD

    records = train_group(
        members,
        stream_from,
        eval_batches=lambda: truth.batches(spec["batch_size"], 8, seed=spec["seed"] + 2),
        checkpoint_every=spec["checkpoint_every"],
        metadata=lambda member: {"dataset_path": "synthetic", "hook_name": "synthetic"},
    )
    by_id = {m.sae_id: m for m in members}
    for record in records:
        record["architecture"] = by_id[record["sae_id"]].sae_config.architecture
    return records


def recovery_of(spec: dict[str, Any], sae_uri: str) -> float:
    """Mean best cosine between the true features and the stored SAE's decoder rows."""
    return recovery_score(_truth(spec).directions_ND, load_sae(sae_uri).W_dec)
