"""A sweep's grid: axes -> validated grid points -> groups that share one activation stream.

Ids keep extending a grid cheap: a point's id depends only on its own configs and its data,
and the sweep's id only on the data and the budget, so adding a point leaves every existing
point where it was (found finished in storage, not retrained).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from infra.ids import spec_id
from infra.storage import join
from infra.training import GroupMember
from sae_core import SaeConfig, TrainConfig

K_ARCHITECTURES = ("topk", "batchtopk")
PENALTY_ARCHITECTURES = ("relu", "jumprelu", "gated")


@dataclass
class SweepPlan:
    """Everything the training actors and the report need, JSON-able."""

    sweep_id: str
    root: str
    harvest: str
    hookpoint: str
    d_in: int
    batch_size: int
    total_steps: int
    points: list[dict[str, Any]]
    """One dict per grid point: sae_id, sae_config, train_config, sae_uri, checkpoint_uri, features_uri."""

    def members(self, sae_ids: list[str] | None = None) -> list[GroupMember]:
        """GroupMembers of the given points (all when None)."""
        wanted = None if sae_ids is None else set(sae_ids)
        return [
            GroupMember(
                sae_id=p["sae_id"],
                sae_config=SaeConfig.from_dict(p["sae_config"]),
                train_config=TrainConfig.from_dict(p["train_config"]),
                sae_uri=p["sae_uri"],
                checkpoint_uri=p["checkpoint_uri"],
                features_uri=p["features_uri"],
            )
            for p in self.points
            if wanted is None or p["sae_id"] in wanted
        ]


def sweep_id_for(name: str, harvest_id: str, hookpoint: str, budget: dict[str, Any]) -> str:
    """Depends on the data and the budget only, never on the grid axes."""
    return spec_id(name, {"harvest": harvest_id, "hookpoint": hookpoint, **budget})


def expand_grid(
    axes: dict[str, list[Any]], d_in: int, total_steps: int, warmup_steps: int, autocast_bf16: str = "cuda"
) -> list[tuple[SaeConfig, TrainConfig]]:
    """Cartesian product of the axes; k applies to topk/batchtopk, sparsity_coefficient to the rest.

    Every point is built (and so validated) here, before any training starts.
    """
    points, seen = [], set()
    for architecture, expansion, lr, seed in itertools.product(axes["architectures"], axes["expansion_factors"], axes["lrs"], axes["seeds"]):
        variants = (
            [{"k": k} for k in axes["ks"]]
            if architecture in K_ARCHITECTURES
            else [{"sparsity_coefficient": c} for c in axes["sparsity_coefficients"]]
        )
        for variant in variants:
            sae_config = SaeConfig(architecture=architecture, d_in=d_in, expansion_factor=expansion, seed=seed, **variant)
            train_config = TrainConfig(
                total_steps=total_steps, lr=lr, warmup_steps=min(warmup_steps, total_steps), autocast_bf16=autocast_bf16
            )
            key = (repr(sae_config), repr(train_config))
            if key not in seen:
                seen.add(key)
                points.append((sae_config, train_config))
    return points


def point_label(sae_config: SaeConfig, lr: float) -> str:
    """Readable slug of a grid point."""
    knob = f"k{sae_config.k}" if sae_config.architecture in K_ARCHITECTURES else f"l{sae_config.sparsity_coefficient:g}"
    return f"{sae_config.architecture}-{sae_config.d_sae}-{knob}-lr{lr:g}-s{sae_config.seed}"


def plan_points(sweep_id: str, root: str, harvest_id: str, hookpoint: str, grid: list[tuple[SaeConfig, TrainConfig]]) -> list[dict[str, Any]]:
    """Storage locations of every point."""
    points = []
    for sae_config, train_config in grid:
        sae_id = spec_id(
            point_label(sae_config, train_config.lr),
            {"sae": sae_config.to_dict(), "train": train_config.to_dict(), "harvest": harvest_id, "hookpoint": hookpoint},
        )
        points.append(
            {
                "sae_id": sae_id,
                "sae_config": sae_config.to_dict(),
                "train_config": train_config.to_dict(),
                "sae_uri": join(root, "saes", sweep_id, sae_id),
                "checkpoint_uri": join(root, "checkpoints", sweep_id, sae_id),
                "features_uri": join(root, "evals", sweep_id, "features", f"{sae_id}.parquet"),
            }
        )
    return points


def training_bytes(sae_config: SaeConfig, batch_size: int) -> int:
    """Rough device memory of one SAE in training: fp32 weights, grads, two Adam moments, activations."""
    params = 2 * sae_config.d_in * sae_config.d_sae + sae_config.d_sae + sae_config.d_in
    activations = 4 * batch_size * sae_config.d_sae  # pre-acts, acts, their grads
    return 4 * (4 * params + activations)


def group_points(points: list[dict[str, Any]], batch_size: int, budget_bytes: int, max_group: int) -> list[list[str]]:
    """Pack points (largest first) into groups that fit the memory budget; returns lists of sae_ids."""
    sized = sorted(((training_bytes(SaeConfig.from_dict(p["sae_config"]), batch_size), p["sae_id"]) for p in points), reverse=True)
    groups: list[tuple[int, list[str]]] = []
    for size, sae_id in sized:
        for index, (used, ids) in enumerate(groups):
            if used + size <= budget_bytes and len(ids) < max_group:
                groups[index] = (used + size, [*ids, sae_id])
                break
        else:
            groups.append((size, [sae_id]))
    return [ids for _, ids in groups]


class SweepSpecError(ValueError):
    """A sweep request that cannot run; raised before any training."""


def memory_budget_bytes(cpu_budget_bytes: int = 4 * 2**30) -> int:
    """Memory one training group may use: 60% of the GPU's, or a fixed CPU budget."""
    import torch

    if torch.cuda.is_available():
        return int(0.6 * torch.cuda.get_device_properties(0).total_memory)
    return cpu_budget_bytes


def plan_sweep(
    name: str,
    root: str,
    harvest: str,
    hookpoint: str,
    axes: dict[str, list[Any]],
    train_tokens: int,
    batch_size: int,
    warmup_steps: int,
    autocast_bf16: str = "cuda",
) -> SweepPlan:
    """Check the harvest and the grid, then lay out every point's storage; nothing is trained."""
    from infra.activation_store import MANIFEST_FILE, read_manifest
    from infra.storage import exists

    if not exists(join(harvest, MANIFEST_FILE)):
        raise SweepSpecError(f"harvest {harvest} has no {MANIFEST_FILE}: run the harvest flow first (or give the sweep a harvest spec)")
    manifest = read_manifest(harvest)
    if hookpoint not in manifest["hookpoints"]:
        raise SweepSpecError(f"hookpoint {hookpoint!r} was not harvested in {harvest}; it has {manifest['hookpoints']}")
    if batch_size < 1 or train_tokens < batch_size:
        raise SweepSpecError(f"train_tokens={train_tokens} must be >= batch_size={batch_size} >= 1")
    total_steps = train_tokens // batch_size
    grid = expand_grid(axes, manifest["d_model"], total_steps, warmup_steps, autocast_bf16)
    budget = {"train_tokens": train_tokens, "batch_size": batch_size, "warmup_steps": warmup_steps}
    sweep_id = sweep_id_for(name, manifest["harvest_id"], hookpoint, budget)
    points = plan_points(sweep_id, root, manifest["harvest_id"], hookpoint, grid)
    return SweepPlan(sweep_id, root, harvest, hookpoint, manifest["d_model"], batch_size, total_steps, points)
