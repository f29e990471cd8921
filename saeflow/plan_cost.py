"""The cost lines `--dry-run` prints: from the spec, a stored manifest or a model's config.json only.

Imports no Prefect, torch or Ray (like the rest of the dry run). The sweep flow's plan step logs
the exact figures (its grouping follows the device's memory); here groups assume the CPU budget.
"""

from __future__ import annotations

from pydantic import BaseModel

from flows.preflight import config_value, local_manifest, model_config
from flows.specs import HarvestSpec, SweepSpec
from infra.cost import harvest_cost, pack_groups, sweep_cost, training_bytes
from infra.storage import absolute_root

K_ARCHITECTURES = ("topk", "batchtopk")
CPU_BUDGET_BYTES = 4 * 2**30  # infra.sweep.grid.memory_budget_bytes on a machine without a GPU


def harvest_width(spec: HarvestSpec) -> int | None:
    """d_model from the model's config.json (None for a hub model, unknowable offline)."""
    config = model_config(spec.model_ref(), "model")
    return config_value(config, "hidden_size", "n_embd", "d_model") if config else None


def harvest_lines(spec: HarvestSpec, root: str) -> list[str]:
    """Cost of a harvest spec."""
    cost = harvest_cost(root, spec.model_ref(), spec.num_tokens, harvest_width(spec), len(spec.hookpoints), spec.dtype)
    return cost.lines()


def grid_shapes(spec: SweepSpec, d_in: int) -> list[tuple[str, int]]:
    """(point key, d_sae) of every distinct grid point, as infra.sweep.grid.expand_grid builds them."""
    points = set()
    for architecture in spec.architectures:
        knobs = spec.ks if architecture in K_ARCHITECTURES else spec.sparsity_coefficients
        for expansion in spec.expansion_factors:
            d_sae = max(1, round(expansion * d_in))
            points |= {(f"{architecture}-{d_sae}-{knob}-{lr}-{seed}", d_sae) for knob in knobs for lr in spec.lrs for seed in spec.seeds}
    return sorted(points)


def sweep_lines(spec: SweepSpec, root: str) -> list[str]:
    """Cost of a sweep spec (and of its harvest when it runs one)."""
    lines: list[str] = []
    if spec.harvest:
        manifest = local_manifest(spec.harvest) or {}
        d_in = manifest.get("d_model")
    else:
        lines += harvest_lines(spec.harvest_spec, root)
        d_in = harvest_width(spec.harvest_spec)
    if not isinstance(d_in, int):
        return [*lines, "sweep: d_model unknown before the harvest is read (object storage or a hub model): no cost plan"]
    points = grid_shapes(spec, d_in)
    train_tokens = spec.train_tokens // spec.batch_size * spec.batch_size
    sized = [(training_bytes(d_in, d_sae, spec.batch_size), key) for key, d_sae in points]
    groups = pack_groups(sized, CPU_BUDGET_BYTES, spec.max_group_size)
    notes = ["groups packed for a CPU's 4 GiB budget; on a GPU the plan step packs by 60% of its memory"]
    layers = len(spec.layer_specs())  # a layer sweep: the grid once per hookpoint
    if layers > 1:
        notes.append(f"layer sweep: {layers} hookpoints x {len(points)} grid points")
    shapes = [(d_in, d_sae) for _, d_sae in points] * layers
    return lines + sweep_cost(root, shapes, train_tokens, spec.batch_size, len(groups) * layers, notes).lines()


def cost_lines(command: str, spec: BaseModel) -> list[str]:
    """What running the spec will cost (empty for commands without a plan of their own)."""
    if isinstance(spec, SweepSpec):
        return sweep_lines(spec, absolute_root(spec.root))
    if isinstance(spec, HarvestSpec):
        return harvest_lines(spec, absolute_root(spec.root))
    return []
