"""Plan, run and commit a harvest: the whole stage as three calls the Prefect tasks make.

plan_harvest validates everything that can be checked cheaply (model config, hookpoints,
context length, dtype) before any forward pass, and writes the packed tokens once.
run_harvest farms the missing shards out to a Ray pool; commit_harvest writes the manifest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from infra.activations.schemas import validate_tokens_table
from infra.activations.store import (
    MANIFEST_FILE,
    MANIFEST_FORMAT_VERSION,
    STORED_DTYPES,
    TOKENS_FILE,
    harvest_uri,
    read_manifest,
    read_marker,
    write_manifest,
)
from infra.cost import record_rate
from infra.harvest.worker import HarvestJob, ShardHarvester
from infra.ids import spec_id
from infra.lm.hookpoints import resolve_hookpoints
from infra.lm.models import ModelRef, load_model_config, load_tokenizer, model_facts
from infra.lm.tokens import TokenSpec, pack_tokens, token_table
from infra.parquet_io import write_parquet_atomic
from infra.progress import PoolProgress
from infra.ray_pool import ensure_ray, run_pool
from infra.storage import exists, join, remove_partials

logger = logging.getLogger(__name__)


class HarvestSpecError(ValueError):
    """A harvest request that cannot be run; raised before any model forward pass."""


def harvest_id_for(model: str, hookpoints: list[str], token_spec: TokenSpec, dtype: str, contexts_per_shard: int) -> str:
    """Readable slug + hash of everything that determines the stored bytes."""
    # The layout version is part of the id: re-harvesting a spec never lands on an old-layout folder.
    payload = {
        "model": model, "hookpoints": sorted(hookpoints), "tokens": token_spec.to_dict(), "dtype": dtype,
        "shard": contexts_per_shard, "layout": MANIFEST_FORMAT_VERSION,
    }
    slug = ModelRef.parse(model).name.rstrip("/").split("/")[-1]
    return spec_id(slug, payload)


def plan_harvest(
    model: str,
    hookpoints: list[str],
    token_spec: TokenSpec,
    root: str,
    dtype: str = "float16",
    contexts_per_shard: int = 64,
    batch_contexts: int = 16,
) -> HarvestJob:
    """Validate the request and materialise its tokens; returns the job the actors run."""
    if dtype not in STORED_DTYPES:
        raise HarvestSpecError(f"dtype={dtype!r} is not storable: one of {sorted(STORED_DTYPES)} (Parquet has no bfloat16)")
    if contexts_per_shard < 1 or batch_contexts < 1:
        raise HarvestSpecError(f"contexts_per_shard={contexts_per_shard} and batch_contexts={batch_contexts} must be >= 1")
    config = load_model_config(model)
    facts = model_facts(config)
    resolve_hookpoints(config, hookpoints)
    if token_spec.context_length > facts.max_positions:
        raise HarvestSpecError(
            f"context_length={token_spec.context_length} exceeds {model}'s limit of {facts.max_positions} positions"
        )
    harvest_id = harvest_id_for(model, hookpoints, token_spec, dtype, contexts_per_shard)
    harvest = harvest_uri(root, harvest_id)
    tokens_uri = join(harvest, TOKENS_FILE)
    if not exists(tokens_uri) and not exists(join(harvest, MANIFEST_FILE)):
        tokens = pack_tokens(token_spec, load_tokenizer(token_spec.tokenizer))
        if int(tokens.token_ids_NS.max()) >= facts.vocab_size:
            raise HarvestSpecError(f"tokenizer {token_spec.tokenizer} produces ids >= {model}'s vocab_size {facts.vocab_size}")
        table = token_table(tokens)
        validate_tokens_table(tokens_uri, table, token_spec.num_contexts, token_spec.context_length, facts.vocab_size)
        write_parquet_atomic(tokens_uri, table, compression="zstd")
    ref = ModelRef.parse(model)
    return HarvestJob(
        harvest_id=harvest_id,
        harvest=harvest,
        model=model,
        hookpoints=list(hookpoints),
        dtype=dtype,
        num_contexts=token_spec.num_contexts,
        context_length=token_spec.context_length,
        contexts_per_shard=contexts_per_shard,
        batch_contexts=batch_contexts,
        token_spec=token_spec.to_dict(),
        schema_metadata={
            "model": ref.name,
            "revision": ref.revision or "",
            "dataset": token_spec.source,
            "context_length": token_spec.context_length,
            "harvest_id": harvest_id,
        },
    )


def missing_shards(job: HarvestJob) -> list[int]:
    """Shards without a commit marker."""
    return [i for i in range(job.num_shards) if read_marker(job.harvest, i) is None]


def run_harvest(
    job: HarvestJob, num_actors: int = 1, ray_address: str | None = None, sink: Callable[[float, str], None] | None = None
) -> dict[str, Any]:
    """Harvest every missing shard on a Ray pool, then commit; returns a summary for the flow.

    Tokens harvested show as a tqdm bar; sink(percent, description) gets them every few seconds.
    """
    if exists(join(job.harvest, MANIFEST_FILE)):
        return {"manifest": join(job.harvest, MANIFEST_FILE), "harvested_shards": 0, "cached": True}
    todo = missing_shards(job)
    started = time.perf_counter()
    if todo:
        ensure_ray(ray_address)
        totals = {i: len(job.shard_contexts(i)) * job.context_length for i in todo}
        progress = PoolProgress(totals, dict.fromkeys(todo, "harvest"), "tok", sink)
        run_pool(ShardHarvester, (job,), "harvest", todo, num_actors, name_prefix=f"harvest-{job.harvest_id}", progress=progress)
    manifest_uri = commit_harvest(job)
    record_harvest_rate(job, todo)
    return {"manifest": manifest_uri, "harvested_shards": len(todo), "cached": False, "seconds": time.perf_counter() - started}


def record_harvest_rate(job: HarvestJob, shards: list[int]) -> None:
    """Tokens per device second of the shards harvested now, per device, for later cost plans."""
    by_device: dict[str, list[float]] = {}
    for record in filter(None, (read_marker(job.harvest, i) for i in shards)):
        if "device" in record:
            rows, seconds = by_device.setdefault(record["device"], [0.0, 0.0]), record["seconds"]
            rows[0], rows[1] = rows[0] + record["rows"], rows[1] + seconds
    root = job.harvest.rsplit("/activations/", 1)[0]
    for device, (rows, seconds) in by_device.items():
        record_rate(root, "harvest", job.model, device, rows, seconds, f"harvest {job.harvest_id}")


def harvest_in_process(job: HarvestJob, device: str | None = None) -> str:
    """Harvest every missing shard in this process (no Ray), then commit; returns the manifest URI."""
    todo = missing_shards(job)
    if todo:
        harvester = ShardHarvester(job, device=device)
        for index in todo:
            harvester.harvest(index)
    return commit_harvest(job)


def commit_harvest(job: HarvestJob) -> str:
    """Aggregate the shard markers into the manifest (written last)."""
    records = [read_marker(job.harvest, i) for i in range(job.num_shards)]
    missing = [i for i, record in enumerate(records) if record is None]
    if missing:
        raise RuntimeError(f"{job.harvest}: cannot commit, shards {missing} have no marker")
    # Every shard is committed, so a temporary file still here is a killed attempt's: not data.
    removed = remove_partials(job.harvest)
    if removed:
        logger.info("%s: removed %d temporary file(s) left by killed writers", job.harvest, removed)
    config = load_model_config(job.model)
    facts = model_facts(config)
    norm_stats = {}
    for hp in job.hookpoints:
        count = sum(r["norms"][hp]["count"] for r in records)
        norm_stats[hp] = {
            "mean_norm": sum(r["norms"][hp]["sum_norm"] for r in records) / max(count, 1),
            "mean_sq_norm": sum(r["norms"][hp]["sum_sq_norm"] for r in records) / max(count, 1),
            "tokens": count,
        }
    manifest = {
        "harvest_id": job.harvest_id,
        "model": job.model,
        "model_facts": facts.__dict__,
        "hookpoints": job.hookpoints,
        "d_model": facts.d_model,
        "vocab_size": facts.vocab_size,
        "dtype": job.dtype,
        "context_length": job.context_length,
        "num_contexts": job.num_contexts,
        "num_rows": job.num_contexts * job.context_length,
        "contexts_per_shard": job.contexts_per_shard,
        "tokens_file": TOKENS_FILE,
        "token_spec": job.token_spec,
        "norm_stats": norm_stats,
        "shards": [{k: r[k] for k in ("index", "rows", "seq_start", "seq_stop", "files")} for r in records],
    }
    return write_manifest(job.harvest, manifest)


def load_committed(root: str, harvest_id: str) -> dict[str, Any]:
    """The manifest of a finished harvest, by id."""
    return read_manifest(harvest_uri(root, harvest_id))
