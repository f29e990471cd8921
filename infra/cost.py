"""What a run will cost before it starts: tokens, points, groups, storage bytes, device time.

Device time comes only from throughput measured by earlier runs on the same storage root
(`{root}/throughput/{stage}.json`, one rate per device): a run records its own rate when it
finishes, and a plan with no measurement says so instead of guessing. Imports neither torch
nor Prefect, so `saeflow ... --dry-run` can print a cost in milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from infra.storage import exists, join, read_json, write_json_atomic

STORED_BYTES = {"float16": 2, "float32": 4}
ROW_BYTES = 8 + 4 + 4 + 1  # seq_id, position, token_id, special of every stored activation row
TOKEN_TABLE_BYTES = 5  # token id + special flag per token in tokens.parquet (before compression)
FEATURE_ROW_BYTES = 4 + 8 + 8 + 8 + 4  # latent, fire_count, density, mean and max activation


def training_bytes(d_in: int, d_sae: int, batch_size: int) -> int:
    """Rough device memory of one SAE in training: fp32 weights, grads, two Adam moments, activations."""
    params = 2 * d_in * d_sae + d_sae + d_in
    activations = 4 * batch_size * d_sae  # pre-acts, acts, their grads
    return 4 * (4 * params + activations)


def pack_groups(sized: list[tuple[int, str]], budget_bytes: int, max_group: int) -> list[list[str]]:
    """First-fit of (bytes, id) pairs, largest first, into groups within the budget; returns lists of ids."""
    groups: list[tuple[int, list[str]]] = []
    for size, key in sorted(sized, reverse=True):
        for index, (used, ids) in enumerate(groups):
            if used + size <= budget_bytes and len(ids) < max_group:
                groups[index] = (used + size, [*ids, key])
                break
        else:
            groups.append((size, [key]))
    return [ids for _, ids in groups]


@dataclass
class Cost:
    """The cost of one stage; work is in the unit its measured rates count (see rate_unit)."""

    stage: str
    tokens: int
    storage_bytes: int
    work: float
    rate_unit: str
    points: int = 0
    groups: int = 0
    estimates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """device -> {seconds, source}: work / the rate measured on that device."""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [f"{self.stage}: {self.tokens:,} tokens" + (f", {self.points} points in {self.groups} groups" if self.points else "")]
        out.append(f"  storage: {human_bytes(self.storage_bytes)}")
        if not self.estimates:
            out.append(f"  device time: unknown - no {self.stage} throughput measured under this root yet "
                       f"(a finished {self.stage} records one)")
        for device, estimate in self.estimates.items():
            out.append(f"  device time on {device}: ~{human_seconds(estimate['seconds'])} "
                       f"(at {estimate['rate']:.3g} {self.rate_unit}/s, measured by {estimate['source']})")
        out += [f"  note: {note}" for note in self.notes]
        return out


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def human_seconds(seconds: float) -> str:
    """75 -> '1.2 min'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def throughput_uri(root: str, stage: str) -> str:
    """Where a stage's measured rates live."""
    return join(root, "throughput", f"{stage}.json")


def measured_rates(root: str, stage: str, key: str) -> dict[str, dict[str, Any]]:
    """{device: {rate, source, at}} measured for this stage and key (model for harvests)."""
    uri = throughput_uri(root, stage)
    if not exists(uri):
        return {}
    return {device: record for device, by_key in read_json(uri).items() if (record := by_key.get(key))}


def record_rate(root: str, stage: str, key: str, device: str, work: float, seconds: float, source: str) -> None:
    """Store work/seconds as the latest rate of (stage, key, device).

    Read-modify-write without a lock: two runs finishing together may drop one's rate, which
    costs an estimate, never a result.
    """
    if seconds <= 0 or work <= 0:
        return
    uri = throughput_uri(root, stage)
    rates = read_json(uri) if exists(uri) else {}
    rates.setdefault(device, {})[key] = {"rate": work / seconds, "source": source, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(uri, rates)


def with_estimates(cost: Cost, root: str, key: str) -> Cost:
    """Fill cost.estimates from the rates measured under root."""
    for device, record in measured_rates(root, cost.stage, key).items():
        cost.estimates[device] = {"seconds": cost.work / record["rate"], "rate": record["rate"], "source": record["source"]}
    return cost


def harvest_cost(root: str, model: str, num_tokens: int, d_model: int | None, hookpoints: int, dtype: str) -> Cost:
    """Tokens and bytes of a harvest; device time from earlier harvests of the same model."""
    notes = []
    if d_model is None:
        notes.append("d_model unknown offline (a hub model): storage counts only tokens")
    width = (d_model or 0) * STORED_BYTES.get(dtype, 4)
    storage = num_tokens * TOKEN_TABLE_BYTES + num_tokens * hookpoints * (width + ROW_BYTES)
    cost = Cost("harvest", num_tokens, storage, float(num_tokens), "tokens", notes=notes)
    return with_estimates(cost, root, model)


def sweep_cost(
    root: str, shapes: list[tuple[int, int]], train_tokens: int, batch_size: int, groups: int, notes: list[str] | None = None
) -> Cost:
    """Tokens, bytes and device time of training SAEs of the given (d_in, d_sae) shapes.

    A point's work is train_tokens x d_in x d_sae (its encoder and decoder matmuls), so one
    measured rate prices every dictionary size.
    """
    storage = 0
    for d_in, d_sae in shapes:
        params = 2 * d_in * d_sae + d_sae + d_in
        # Export (fp32) + its sparsity, the checkpoint (weights + two Adam moments), the features table.
        storage += 4 * params + 4 * d_sae + 3 * 4 * params + FEATURE_ROW_BYTES * d_sae
    work = float(sum(train_tokens * d_in * d_sae for d_in, d_sae in shapes))
    cost = Cost("sweep", train_tokens * len(shapes), storage, work, "token*d_in*d_sae", len(shapes), groups, notes=list(notes or []))
    return with_estimates(cost, root, "sae")


def device_label(device: Any) -> str:
    """'cpu' or the GPU's name ('NVIDIA H100 80GB HBM3'): rates only transfer between like devices."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
