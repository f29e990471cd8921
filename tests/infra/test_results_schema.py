"""results.parquet's schema: failed points carry no metrics, finished ones must; ignored knobs are null."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from infra.sweep.schemas import validate_results


def row(status: str, ev: float, architecture: str = "topk") -> dict:
    uses_k = architecture in ("topk", "batchtopk")
    return {
        "sae_id": f"{architecture}-{status}-{ev}", "status": status, "architecture": architecture, "d_sae": 64, "expansion_factor": 4.0,
        "k": 4 if uses_k else None, "sparsity_coefficient": None if uses_k else 5.0, "lr": 1e-3, "seed": 0,
        "mse": 1.0 if status == "finished" else math.nan, "explained_variance": ev, "l0": 4.0, "dead_fraction": 0.1,
        "dead_fraction_tokens": 13_107.0 if status == "finished" else math.nan,
        "dense_fraction": 0.0, "l2_ratio": 0.9, "device_seconds": 1.0, "train_tokens": 100,
        "epochs": 2.5 if status == "finished" else None, "sae_uri": "file:///x", "features_uri": "file:///x.parquet",
    }


def frame_of(*rows: dict) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for column in ("k", "train_tokens"):
        frame[column] = frame[column].astype("Int64")
    for column in ("sparsity_coefficient", "epochs"):
        frame[column] = frame[column].astype("float64")
    return frame


def test_a_failed_point_validates_without_metrics():
    validate_results(frame_of(row("finished", 0.8), row("failed", math.nan)), source="sweep s")


def test_a_finished_point_without_metrics_is_rejected():
    with pytest.raises(ValueError, match=r"sweep s: results table .*every finished point has metrics"):
        validate_results(frame_of(row("finished", math.nan)), source="sweep s")


def test_an_explained_variance_above_one_is_rejected():
    with pytest.raises(ValueError, match=r"column 'explained_variance'"):
        validate_results(frame_of(row("finished", 1.5)), source="sweep s")


def test_knobs_the_architecture_ignores_are_null():
    validate_results(frame_of(row("finished", 0.8, "topk"), row("finished", 0.7, "relu")), source="sweep s")


@pytest.mark.parametrize(("architecture", "column", "value"), [("relu", "k", 4), ("topk", "sparsity_coefficient", 5.0)])
def test_an_ignored_knob_with_a_value_is_rejected(architecture, column, value):
    bad = {**row("finished", 0.8, architecture), column: value}
    with pytest.raises(ValueError, match=rf"{column} is set exactly for"):
        validate_results(frame_of(bad), source="sweep s")


def test_epochs_are_required():
    frame = frame_of(row("finished", 0.8)).drop(columns="epochs")
    with pytest.raises(ValueError, match=r"epochs"):
        validate_results(frame, source="sweep s")


def test_a_dead_fraction_must_say_how_many_tokens_it_was_measured_on():
    with pytest.raises(ValueError, match=r"every dead_fraction says how many tokens it was measured on"):
        validate_results(frame_of({**row("finished", 0.8), "dead_fraction_tokens": math.nan}), source="sweep s")
    with pytest.raises(ValueError, match=r"column 'dead_fraction_tokens'"):
        validate_results(frame_of({**row("finished", 0.8), "dead_fraction_tokens": 0.0}), source="sweep s")
