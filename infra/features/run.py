"""Run the features stage: encode shards on a Ray pool, describe each SAE, build the browser, commit.

Resumable at every level: committed shards (their markers) and described SAEs (theirs) are
skipped, and a stage whose manifest exists is returned without reading anything else.
"""

from __future__ import annotations

import time
from typing import Any

from infra.activations.store import read_manifest, read_tokens_table
from infra.features.browser import build_browser
from infra.features.details import DetailWriter, details_marker
from infra.features.encode import ShardEncoder, shard_marker
from infra.features.neuronpedia import export_neuronpedia
from infra.features.plan import FeaturesPlan
from infra.lm.tokens import tokens_from_table
from infra.storage import exists, join, read_json, write_json_atomic

MANIFEST_FILE = "_manifest.json"
FORMAT_VERSION = 1


def run_features(plan: FeaturesPlan, num_actors: int = 1, in_process: bool = False, device: str | None = None) -> dict[str, Any]:
    """Encode, describe, browse, commit; returns {manifest, browser, cached, seconds}."""
    manifest_uri = join(plan.features, MANIFEST_FILE)
    if exists(manifest_uri):
        return {"manifest": manifest_uri, "browser": read_json(manifest_uri)["browser"], "cached": True}
    started = time.perf_counter()
    shards = [s for s in plan.shards if not exists(shard_marker(plan.features, s))]
    saes = [i for i, s in enumerate(plan.saes) if not exists(details_marker(plan.features, s["name"]))]
    if in_process:
        encoder = ShardEncoder(plan, device=device) if shards else None
        for shard in shards:
            encoder.encode(shard)
        writer = DetailWriter(plan, device=device) if saes else None
        for index in saes:
            writer.describe(index)
    else:
        from infra.ray_pool import run_pool

        if shards:
            run_pool(ShardEncoder, (plan,), "encode", shards, num_actors, f"features-encode-{plan.features_id}")
        if saes:
            run_pool(DetailWriter, (plan,), "describe", saes, num_actors, f"features-describe-{plan.features_id}")
    return commit_features(plan, started)


def commit_features(plan: FeaturesPlan, started: float) -> dict[str, Any]:
    """Browser + Neuronpedia export from the committed tables, then the manifest (last)."""
    from infra.lm.models import load_tokenizer

    harvest = read_manifest(plan.harvest)
    tokenizer = load_tokenizer((harvest.get("token_spec") or {}).get("tokenizer") or plan.model)
    token_ids_NS = tokens_from_table(read_tokens_table(plan.harvest)).token_ids_NS
    browser, data = build_browser(plan, tokenizer, token_ids_NS)
    exports = export_neuronpedia(plan.features, data, plan.model)
    shard_records = [read_json(shard_marker(plan.features, s)) for s in plan.shards]
    sae_records = [{**s, "details": read_json(details_marker(plan.features, s["name"])), "neuronpedia": exports[s["name"]]}
                   for s in plan.saes]
    manifest = {
        "format_version": FORMAT_VERSION, **{k: v for k, v in plan.to_dict().items() if k != "saes"},
        "saes": sae_records, "shards": shard_records, "tokens": sum(r["tokens"] for r in shard_records), "browser": browser,
    }
    manifest_uri = join(plan.features, MANIFEST_FILE)
    write_json_atomic(manifest_uri, manifest)  # last: from here readers may trust the stage
    return {"manifest": manifest_uri, "browser": browser, "cached": False, "seconds": time.perf_counter() - started}
