"""results.parquet's schema: failed points carry no metrics, finished ones must."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from infra.schemas import validate_results


def row(status: str, ev: float) -> dict:
    return {
        "sae_id": f"topk-{status}-{ev}", "status": status, "architecture": "topk", "d_sae": 64, "expansion_factor": 4.0, "k": 4,
        "sparsity_coefficient": 5.0, "lr": 1e-3, "seed": 0, "mse": 1.0 if status == "finished" else math.nan,
        "explained_variance": ev, "l0": 4.0, "dead_fraction": 0.1, "dense_fraction": 0.0, "l2_ratio": 0.9,
        "device_seconds": 1.0, "train_tokens": 100, "sae_uri": "file:///x", "features_uri": "file:///x.parquet",
    }


def test_a_failed_point_validates_without_metrics():
    frame = pd.DataFrame([row("finished", 0.8), row("failed", math.nan)])
    frame["train_tokens"] = frame["train_tokens"].astype("Int64")
    validate_results(frame, source="sweep s")


def test_a_finished_point_without_metrics_is_rejected():
    frame = pd.DataFrame([row("finished", math.nan)])
    frame["train_tokens"] = frame["train_tokens"].astype("Int64")
    with pytest.raises(ValueError, match=r"sweep s: results table .*every finished point has metrics"):
        validate_results(frame, source="sweep s")


def test_an_explained_variance_above_one_is_rejected():
    frame = pd.DataFrame([row("finished", 1.5)])
    frame["train_tokens"] = frame["train_tokens"].astype("Int64")
    with pytest.raises(ValueError, match=r"column 'explained_variance'"):
        validate_results(frame, source="sweep s")
