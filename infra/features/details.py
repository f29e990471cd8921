"""One SAE's feature tables: stats, examples, logit lens and ablation attribution, then its marker.

A DetailWriter loads the model once (the stage's only model runs are here) and describes
whichever SAEs it is given; Ray wraps it as an actor over SAEs. Every table is pandera-validated
before it is written, and `_details.json` goes last, so a re-run skips described SAEs and redoes
a half-described one from scratch.
"""

from __future__ import annotations

import io
import time
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as arrow
import pyarrow.parquet as pq
import torch

from infra.activations.store import read_manifest, read_tokens_table
from infra.features.encode import shard_marker
from infra.features.latent_table import latent_frame_schema, validate_frame
from infra.features.lens import (
    ablate_example,
    attribution_schema,
    logit_lens,
    logit_lens_frame,
    logit_lens_schema,
)
from infra.features.plan import FeaturesPlan
from infra.features.stats import LatentRows, add_windows, examples_schema, latent_stats, select_examples, stats_schema
from infra.lm.tokens import tokens_from_table
from infra.sae_store import load_sae
from infra.storage import exists, filesystem, join, read_bytes, read_json, write_bytes_atomic, write_json_atomic

TABLES = ("stats", "examples", "logit_lens", "attribution")


def sae_folder(features: str, name: str) -> str:
    """Folder of one SAE's tables."""
    return join(features, "saes", name)


def details_marker(features: str, name: str) -> str:
    """Commit marker of one SAE's tables."""
    return join(sae_folder(features, name), "_details.json")


def write_table(uri: str, frame: pd.DataFrame, schema: pa.DataFrameSchema) -> dict[str, Any]:
    """Validate with pandera, then write atomically as Parquet; returns its entry (rows, bytes)."""
    validate_frame(frame, schema, uri)
    sink = io.BytesIO()
    pq.write_table(arrow.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
    write_bytes_atomic(uri, sink.getvalue())
    return {"rows": len(frame), "bytes": sink.tell()}


def read_table(uri: str) -> pd.DataFrame:
    """A stage table as pandas."""
    return pq.read_table(io.BytesIO(read_bytes(uri))).to_pandas()


def load_latent_rows(plan: FeaturesPlan, name: str, d_sae: int, context_length: int) -> tuple[LatentRows, int]:
    """(all of one SAE's non-zeros, tokens encoded) from the committed shards, each file validated."""
    parts, tokens = [], 0
    schema = latent_frame_schema(d_sae, plan.seqs, context_length)
    for shard in plan.shards:
        record = read_json(shard_marker(plan.features, shard))
        uri = join(plan.features, record["files"][name]["path"])
        fs, path = filesystem(uri)
        with fs.open(path, "rb") as handle:
            frame = pq.read_table(handle).to_pandas()
        validate_frame(frame, schema, uri)
        parts.append(frame)
        tokens += record["tokens"]
    frame = pd.concat(parts, ignore_index=True)
    rows = LatentRows.build(frame["latent"].to_numpy(), frame["seq_id"].to_numpy(), frame["pos"].to_numpy(),
                            frame["value"].to_numpy(), d_sae)
    return rows, tokens


def ablation_latents(stats: pd.DataFrame, count: int) -> list[int]:
    """The live latents whose top examples are ablated: the lowest indices first (-1: all of them)."""
    live = stats.loc[stats["fire_count"] > 0, "latent"].astype(int).tolist()
    return live if count < 0 else live[:count]


class DetailWriter:
    """Holds the model and the harvest's tokens; writes one SAE's tables per call."""

    def __init__(self, plan: FeaturesPlan, device: str | None = None, num_threads: int | None = None,
                 model: torch.nn.Module | None = None) -> None:
        from infra.lm.models import load_model

        self.plan = plan
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model = model if model is not None else load_model(self.plan.model, device=device)[0]
        self.device = next(self.model.parameters()).device
        self.manifest = read_manifest(self.plan.harvest)
        self.token_ids_NS = tokens_from_table(read_tokens_table(self.plan.harvest)).token_ids_NS

    def describe(self, index: int) -> dict[str, Any]:
        """Write stats, examples, logit lens and attribution of plan.saes[index] (or return its record)."""
        entry, plan, settings = self.plan.saes[index], self.plan, self.plan.settings
        marker = details_marker(plan.features, entry["name"])
        if exists(marker):
            return read_json(marker)
        started = time.perf_counter()
        d_sae, folder = entry["d_sae"], sae_folder(plan.features, entry["name"])
        sae = load_sae(entry["uri"], device=self.device)
        rows, tokens = load_latent_rows(plan, entry["name"], d_sae, self.manifest["context_length"])
        stats = latent_stats(rows, d_sae, tokens, settings.histogram_bins)
        examples = add_windows(select_examples(rows, d_sae, settings), rows, self.token_ids_NS, settings)
        lens = logit_lens_frame(*logit_lens(self.model, sae.W_dec.detach(), settings.logit_tokens))
        attribution = self.attribution(sae, examples, ablation_latents(stats, settings.ablation_latents))
        files = {
            "stats": write_table(join(folder, "stats.parquet"), stats, stats_schema(d_sae, settings.histogram_bins)),
            "examples": write_table(join(folder, "examples.parquet"), examples, examples_schema(d_sae, settings)),
            "logit_lens": write_table(join(folder, "logit_lens.parquet"), lens, logit_lens_schema(d_sae, self.model.config.vocab_size)),
            "attribution": write_table(join(folder, "attribution.parquet"), attribution, attribution_schema(d_sae)),
        }
        record = {"name": entry["name"], "tokens": tokens, "nonzeros": int(len(rows.value_M)), "files": files,
                  "live_latents": int((stats["fire_count"] > 0).sum()), "seconds": time.perf_counter() - started}
        write_json_atomic(marker, record)
        return record

    def attribution(self, sae: Any, examples: pd.DataFrame, latents: list[int]) -> pd.DataFrame:
        """Ablate each earlier token of the top examples of `latents`; one row per removed token."""
        settings, parts = self.plan.settings, []
        chosen = examples[(examples["kind"] == "top") & (examples["rank"] < settings.ablation_examples)
                          & examples["latent"].isin(latents)]
        for example in chosen.itertuples():
            context_S = self.token_ids_NS[example.seq_id]
            original, removed_W, delta_W = ablate_example(self.model, sae, self.plan.hookpoint, context_S, int(example.pos),
                                                          int(example.latent), settings.ablation_window)
            parts.append(pd.DataFrame({
                "latent": np.int32(example.latent), "rank": np.int32(example.rank), "seq_id": np.int64(example.seq_id),
                "pos": np.int32(example.pos), "original": np.float32(original), "removed_pos": removed_W.astype(np.int32),
                "token_id": context_S[removed_W].astype(np.int32), "delta": delta_W,
            }))
        columns = {"latent": "int32", "rank": "int32", "seq_id": "int64", "pos": "int32", "original": "float32",
                   "removed_pos": "int32", "token_id": "int32", "delta": "float32"}
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
        return pd.concat(parts, ignore_index=True).astype(columns)
