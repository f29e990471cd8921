"""Encode harvest shards with every SAE of a plan and store the non-zeros: the stage's only bulk compute.

A ShardEncoder loads the SAEs once and encodes whatever shard indices it is given; Ray wraps it
as an actor (infra.ray_pool), one GPU each where there are GPUs. A shard is read once and fed to
every SAE in batches of encode_batch rows; its marker is written after every SAE's file, so a
re-run skips committed shards and redoes the rest from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from infra.activations.store import activations_numpy, read_manifest
from infra.features.latent_table import sparse_table, write_latent_file
from infra.features.plan import FeaturesPlan
from infra.sae_store import load_sae
from infra.storage import exists, filesystem, join, read_json, write_json_atomic
from sae_core import SparseCoder


def shard_marker(features: str, shard: int) -> str:
    """Commit marker of one encoded shard."""
    return join(features, "_shards", f"part-{shard:05d}.json")


def read_shard_rows(plan: FeaturesPlan, manifest: dict[str, Any], shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seq_id [N], pos [N], activations [N, d]) of one harvest shard inside the plan's rows."""
    entry = next(s for s in manifest["shards"] if s["index"] == shard)["files"][plan.hookpoint]
    fs, path = filesystem(join(plan.harvest, entry["path"]))
    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=["seq_id", "pos", "special", "activation"])
    keep_N = plan.seqs.mask(table["seq_id"].to_numpy())
    if plan.exclude_special:
        # BOS/EOS rows are outliers the SAEs never trained on; their latents would crowd every top list.
        keep_N &= ~table["special"].to_numpy(zero_copy_only=False)
    table = table.filter(keep_N)
    return table["seq_id"].to_numpy(), table["pos"].to_numpy(), activations_numpy(table).astype(np.float32)


@torch.no_grad()
def encode_sparse(sae: SparseCoder, acts_ND: np.ndarray, batch: int, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row [M], latent [M], value [M]) of the non-zero latent activations, encoded batch by batch."""
    rows, latents, values = [], [], []
    for start in range(0, len(acts_ND), batch):
        x_BD = torch.from_numpy(acts_ND[start : start + batch]).to(device)
        acts_BF = sae.encode(x_BD)
        row_M, latent_M = torch.nonzero(acts_BF > 0, as_tuple=True)
        rows.append((row_M + start).cpu().numpy())
        latents.append(latent_M.cpu().numpy())
        values.append(acts_BF[row_M, latent_M].float().cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(latents), np.concatenate(values)


class ShardEncoder:
    """Holds a plan's SAEs and encodes harvest shards into sparse latent files."""

    def __init__(self, plan: FeaturesPlan, device: str | None = None, num_threads: int | None = None) -> None:
        self.plan = plan
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.saes = {s["name"]: load_sae(s["uri"], device=self.device) for s in self.plan.saes}
        self.manifest = read_manifest(self.plan.harvest)

    def encode(self, shard: int) -> dict[str, Any]:
        """Encode one shard with every SAE (or return its record if already committed)."""
        marker = shard_marker(self.plan.features, shard)
        if exists(marker):
            return read_json(marker)
        started = time.perf_counter()
        seq_N, pos_N, acts_ND = read_shard_rows(self.plan, self.manifest, shard)
        files = {}
        for name, sae in self.saes.items():
            row_M, latent_M, value_M = encode_sparse(sae, acts_ND, self.plan.encode_batch, self.device)
            if not np.isfinite(value_M).all():
                raise FloatingPointError(f"{self.plan.features}: SAE {name} gives NaN/inf latents on shard {shard}; nothing written")
            table = sparse_table(latent_M, seq_N[row_M], pos_N[row_M], value_M)
            files[name] = write_latent_file(self.plan.features, name, shard, table)
        record = {"index": shard, "tokens": int(len(seq_N)), "files": files, "seconds": time.perf_counter() - started}
        write_json_atomic(marker, record)  # last: a shard without its marker is redone, never trusted
        return record
