"""Harvesting one shard: run the model over its contexts, capture hookpoints, write atomically.

A ShardHarvester loads the model once and harvests whatever shard indices it is given; Ray
wraps it as an actor (infra/ray_pool.py). Re-harvesting a committed shard is a no-op, so a
retried or duplicated task can never write a shard twice.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from infra.activations.store import (
    STORED_DTYPES,
    marker_uri,
    read_marker,
    read_tokens_table,
    shard_schema,
    shard_table,
    write_shard_file,
)
from infra.cost import device_label
from infra.lm.hookpoints import capture_activations, resolve_hookpoints
from infra.lm.models import load_model
from infra.lm.tokens import tokens_from_table
from infra.progress import ItemReporter
from infra.storage import write_json_atomic


@dataclass
class HarvestJob:
    """Everything an actor needs to harvest shards of one harvest."""

    harvest_id: str
    harvest: str
    """URI of the harvest folder."""
    model: str
    """Model reference (name@revision, local directory or packaged alias)."""
    hookpoints: list[str]
    dtype: str
    """Stored dtype: float16 or float32."""
    num_contexts: int
    context_length: int
    contexts_per_shard: int
    batch_contexts: int = 16
    """Contexts per forward pass."""
    schema_metadata: dict[str, Any] = field(default_factory=dict)
    """Key/values for each shard's Arrow schema metadata (model, revision, dataset, ...)."""
    token_spec: dict[str, Any] = field(default_factory=dict)
    """The TokenSpec the contexts were packed from (recorded in the manifest)."""

    @property
    def num_shards(self) -> int:
        """Shards of the harvest (the last may be short)."""
        return -(-self.num_contexts // self.contexts_per_shard)

    def shard_contexts(self, index: int) -> range:
        """Context (seq_id) range of a shard."""
        start = index * self.contexts_per_shard
        return range(start, min(start + self.contexts_per_shard, self.num_contexts))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return asdict(self)


class ShardHarvester:
    """Holds one loaded model and harvests shards of a job."""

    def __init__(
        self,
        job: HarvestJob,
        device: str | None = None,
        num_threads: int | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.job = job
        if num_threads:
            torch.set_num_threads(num_threads)
        # A caller may pass the already loaded model of job.model (benchmarks, repeated jobs).
        self.model = model if model is not None else load_model(self.job.model, device=device)[0]
        self.device = next(self.model.parameters()).device
        self.hookpoints = resolve_hookpoints(self.model.config, self.job.hookpoints)
        self.tokens = tokens_from_table(read_tokens_table(self.job.harvest))
        d_model = self.model.config.hidden_size
        self.schemas = {
            hp: shard_schema(d_model, self.job.dtype, {**self.job.schema_metadata, "hookpoint": hp, "d_model": d_model, "dtype": self.job.dtype})
            for hp in self.job.hookpoints
        }

    def harvest(self, index: int) -> dict[str, Any]:
        """Harvest shard `index` (or return its record if already committed)."""
        job = self.job
        done = read_marker(job.harvest, index)
        if done is not None:
            return done
        started = time.perf_counter()
        contexts = job.shard_contexts(index)
        captured: dict[str, list[np.ndarray]] = {hp: [] for hp in job.hookpoints}
        np_dtype = STORED_DTYPES[job.dtype]
        reporter = ItemReporter(index)  # tokens harvested, to the driver's progress bar (when one listens)
        for start in range(contexts.start, contexts.stop, job.batch_contexts):
            if reporter.due():
                reporter.send((start - contexts.start) * job.context_length)
            stop = min(start + job.batch_contexts, contexts.stop)
            input_ids_BS = torch.from_numpy(self.tokens.token_ids_NS[start:stop].astype(np.int64)).to(self.device)
            # Packed contexts have no padding: an all-ones mask says so (and silences HF's warning).
            mask_BS = torch.ones_like(input_ids_BS)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                acts = capture_activations(self.model, self.hookpoints, input_ids_BS, mask_BS)
            for hp in job.hookpoints:
                captured[hp].append(acts[hp].float().reshape(-1, acts[hp].shape[-1]).cpu().numpy().astype(np_dtype))
        try:
            return self._write_shard(index, contexts, captured, started)
        except FileNotFoundError:
            # Another run of this harvest id committed meanwhile and removed our temporary file
            # (storage.remove_partials); its shard holds the same rows, so its marker is the answer.
            done = read_marker(job.harvest, index)
            if done is None:
                raise
            return done

    def _write_shard(self, index: int, contexts: range, captured: dict[str, list[np.ndarray]], started: float) -> dict[str, Any]:
        """Write shard `index`'s file per hookpoint, then its marker (last); returns the marker's record."""
        job = self.job
        seq_N = np.repeat(np.arange(contexts.start, contexts.stop, dtype=np.int64), job.context_length)
        pos_N = np.tile(np.arange(job.context_length, dtype=np.int32), len(contexts))
        token_N = self.tokens.token_ids_NS[contexts.start : contexts.stop].reshape(-1)
        special_N = self.tokens.special_NS[contexts.start : contexts.stop].reshape(-1)
        files, norms = {}, {}
        for hp in job.hookpoints:
            acts_ND = np.concatenate(captured[hp])
            if not np.isfinite(acts_ND).all():
                raise FloatingPointError(f"{job.harvest}: shard {index} of {hp} has NaN/inf activations (model {job.model}); nothing written")
            table = shard_table(seq_N, pos_N, token_N, special_N, acts_ND, self.schemas[hp])
            files[hp] = write_shard_file(job.harvest, hp, index, table)
            norm_N = np.linalg.norm(acts_ND[~special_N].astype(np.float32), axis=1)
            norms[hp] = {"count": int(norm_N.size), "sum_norm": float(norm_N.sum()), "sum_sq_norm": float((norm_N**2).sum())}
        record = {
            "index": index,
            "rows": len(seq_N),
            "seq_start": contexts.start,
            "seq_stop": contexts.stop,
            "files": files,
            "norms": norms,
            "seconds": time.perf_counter() - started,
            "device": device_label(self.device),  # the rate's device, for later cost plans (infra.cost)
        }
        # The marker goes last: a shard without one is redone from scratch, never trusted.
        write_json_atomic(marker_uri(job.harvest, index), record)
        return record
