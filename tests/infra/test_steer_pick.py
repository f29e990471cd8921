"""Picking a feature from a features stage's stats table to steer with."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from infra.steer.inputs import SteerInputError
from infra.steer.pick import pick_feature


def features_stage(tmp_path, density, max_activation) -> str:
    folder = tmp_path / "features" / "f-1"
    (folder / "saes" / "a").mkdir(parents=True)
    (folder / "_manifest.json").write_text(json.dumps({"saes": [{"name": "a", "uri": "/saes/a"}]}))
    count = np.asarray(density) * 1000
    pd.DataFrame({"latent": np.arange(len(density), dtype=np.int32), "fire_count": count.astype(np.int64), "density": density,
                  "max_activation": np.asarray(max_activation, np.float32)}).to_parquet(folder / "saes" / "a" / "stats.parquet")
    return str(folder)


def test_the_pick_is_the_strongest_latent_in_the_density_band(tmp_path):
    folder = features_stage(tmp_path, [0.0, 0.5, 0.01, 0.02, 0.0005], [0.0, 90.0, 3.0, 7.0, 50.0])
    assert pick_feature(folder) == {"sae": "/saes/a", "name": "a", "latent": 3, "max_activation": 7.0, "density": 0.02}


def test_no_live_latent_is_one_line(tmp_path):
    with pytest.raises(SteerInputError, match="has no live latent"):
        pick_feature(features_stage(tmp_path, [0.0, 0.0], [0.0, 0.0]))
