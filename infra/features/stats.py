"""Per-latent statistics and example selection from one SAE's sparse latent rows (numpy, no model).

Examples come in two kinds, as in Anthropic's and Neuronpedia's dashboards:
  top       the `top_examples` largest activations (ties broken by seq_id, pos);
  quantile  each latent's non-zero activations split into `quantile_bins` equal-count bins (bin 0
            holds the largest), `per_bin` examples drawn uniformly from each with a seeded
            generator, so low and mid activations are shown too, not only the maxima.
Each example carries its context window's token ids and this latent's activation on each token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from infra.features.plan import FeatureSettings


@dataclass
class LatentRows:
    """One SAE's non-zeros sorted by (latent, value descending, seq_id, pos), and where each latent starts."""

    latent_M: np.ndarray
    seq_M: np.ndarray
    pos_M: np.ndarray
    value_M: np.ndarray
    start_F: np.ndarray
    """[d_sae + 1]: latent j's rows are start_F[j]:start_F[j + 1]."""

    @classmethod
    def build(cls, latent_M: np.ndarray, seq_M: np.ndarray, pos_M: np.ndarray, value_M: np.ndarray, d_sae: int) -> LatentRows:
        """Sort the rows and index the latents."""
        order = np.lexsort((pos_M, seq_M, -value_M, latent_M))
        latent_M = latent_M[order].astype(np.int64)
        start_F = np.searchsorted(latent_M, np.arange(d_sae + 1), side="left")
        return cls(latent_M, seq_M[order].astype(np.int64), pos_M[order].astype(np.int64), value_M[order].astype(np.float32), start_F)


def latent_stats(rows: LatentRows, d_sae: int, num_tokens: int, bins: int) -> pd.DataFrame:
    """One row per latent: fire_count, density, mean and max activation, histogram counts over (0, max]."""
    count_F = np.diff(rows.start_F)
    sum_F = np.bincount(rows.latent_M, weights=rows.value_M, minlength=d_sae)
    max_F = np.zeros(d_sae, np.float32)
    firing = count_F > 0
    max_F[firing] = rows.value_M[rows.start_F[:-1][firing]]  # rows are sorted descending within a latent
    scaled_M = rows.value_M / np.maximum(max_F[rows.latent_M], 1e-30)
    bin_M = np.minimum((scaled_M * bins).astype(np.int64), bins - 1)
    hist_FB = np.bincount(rows.latent_M * bins + bin_M, minlength=d_sae * bins).reshape(d_sae, bins)
    return pd.DataFrame({
        "latent": np.arange(d_sae, dtype=np.int32),
        "fire_count": count_F.astype(np.int64),
        "density": count_F / max(num_tokens, 1),
        "mean_activation": np.where(firing, sum_F / np.maximum(count_F, 1), 0.0),
        "max_activation": max_F,
        "histogram": list(hist_FB.astype(np.int64)),
    })


def stats_schema(d_sae: int, bins: int) -> pa.DataFrameSchema:
    """pandera schema of stats.parquet."""
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1), unique=True),
            "fire_count": pa.Column("int64", pa.Check.ge(0)),
            "density": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
            "mean_activation": pa.Column(float, pa.Check.ge(0)),
            "max_activation": pa.Column("float32", pa.Check.ge(0)),
            "histogram": pa.Column(object, pa.Check(lambda s: s.map(len) == bins, error=f"{bins} bins")),
        },
        strict=True, checks=pa.Check(lambda df: len(df) == d_sae, error=f"one row per latent ({d_sae})"), name="latent stats",
    )


def select_examples(rows: LatentRows, d_sae: int, settings: FeatureSettings) -> pd.DataFrame:
    """One row per example: latent, kind (top / quantile), bin, rank, seq_id, pos, value."""
    picked = []
    for latent in range(d_sae):
        start, stop = int(rows.start_F[latent]), int(rows.start_F[latent + 1])
        if stop == start:
            continue
        top = np.arange(start, min(stop, start + settings.top_examples))
        picked += [(latent, "top", -1, rank, index) for rank, index in enumerate(top)]
        rng = np.random.default_rng((settings.seed, latent))
        for bin_index, chunk in enumerate(np.array_split(np.arange(start, stop), settings.quantile_bins)):
            if len(chunk):
                draws = np.sort(rng.choice(chunk, size=min(settings.per_bin, len(chunk)), replace=False))
                picked += [(latent, "quantile", bin_index, rank, index) for rank, index in enumerate(draws)]
    index_E = np.asarray([p[4] for p in picked], dtype=np.int64)
    return pd.DataFrame({
        "latent": np.asarray([p[0] for p in picked], np.int32),
        "kind": [p[1] for p in picked],
        "bin": np.asarray([p[2] for p in picked], np.int32),
        "rank": np.asarray([p[3] for p in picked], np.int32),
        "seq_id": rows.seq_M[index_E] if len(picked) else np.zeros(0, np.int64),
        "pos": (rows.pos_M[index_E] if len(picked) else np.zeros(0)).astype(np.int32),
        "value": rows.value_M[index_E] if len(picked) else np.zeros(0, np.float32),
    })


def add_windows(examples: pd.DataFrame, rows: LatentRows, token_ids_NS: np.ndarray, settings: FeatureSettings) -> pd.DataFrame:
    """Each example's context window: window_start, token_ids and this latent's activation on every token."""
    context_length = token_ids_NS.shape[1]
    starts, tokens, acts = [], [], []
    for latent, seq, pos in zip(examples["latent"], examples["seq_id"], examples["pos"], strict=True):
        lo, hi = max(0, pos - settings.window_left), min(context_length, pos + settings.window_right + 1)
        a, b = int(rows.start_F[latent]), int(rows.start_F[latent + 1])
        # This latent's rows in this context; sorted keys make each window a handful of searchsorted calls.
        in_seq = rows.seq_M[a:b] == seq
        where_P = rows.pos_M[a:b][in_seq]
        value_P = rows.value_M[a:b][in_seq]
        window_W = np.zeros(hi - lo, np.float32)
        inside = (where_P >= lo) & (where_P < hi)
        window_W[where_P[inside] - lo] = value_P[inside]
        starts.append(lo)
        tokens.append(token_ids_NS[seq, lo:hi].astype(np.int32))
        acts.append(window_W)
    return examples.assign(window_start=np.asarray(starts, np.int32), token_ids=tokens, acts=acts)


def examples_schema(d_sae: int, settings: FeatureSettings) -> pa.DataFrameSchema:
    """pandera schema of examples.parquet."""
    width = settings.window_left + settings.window_right + 1
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1)),
            "kind": pa.Column(str, pa.Check.isin(["top", "quantile"])),
            "bin": pa.Column("int32", pa.Check.in_range(-1, settings.quantile_bins - 1)),
            "rank": pa.Column("int32", pa.Check.ge(0)),
            "seq_id": pa.Column("int64", pa.Check.ge(0)),
            "pos": pa.Column("int32", pa.Check.ge(0)),
            "value": pa.Column("float32", pa.Check.gt(0)),
            "window_start": pa.Column("int32", pa.Check.ge(0)),
            "token_ids": pa.Column(object, pa.Check(lambda s: s.map(len).between(1, width), error=f"1..{width} tokens")),
            "acts": pa.Column(object),
        },
        strict=True,
        checks=pa.Check(lambda df: (df["token_ids"].map(len) == df["acts"].map(len)).all(), error="one activation per window token"),
        name="latent examples",
    )
