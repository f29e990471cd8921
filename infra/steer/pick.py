"""Pick a feature from a committed features stage to steer with: the bridge from `saeflow features` to `saeflow steer`.

Reads only the features stage's manifest and one SAE's stats.parquet (by path, not through
infra.features: stages never import each other). The pick is a live latent that fires on between
0.1% and 10% of tokens (rarer ones are often noise, denser ones generic), largest max activation first.
"""

from __future__ import annotations

from typing import Any

from infra.parquet_io import read_parquet
from infra.steer.inputs import SteerInputError
from infra.storage import join, read_json

DENSITY_BAND = (1e-3, 0.1)


def pick_feature(features: str, sae_index: int = 0) -> dict[str, Any]:
    """{sae (uri), name, latent, max_activation, density} of the features stage's chosen latent."""
    manifest = read_json(join(features, "_manifest.json"))
    entry = manifest["saes"][sae_index]
    stats = read_parquet(join(features, "saes", entry["name"], "stats.parquet")).to_pandas()
    band = stats[(stats["density"] >= DENSITY_BAND[0]) & (stats["density"] <= DENSITY_BAND[1])]
    candidates = band if len(band) else stats[stats["fire_count"] > 0]
    if not len(candidates):
        raise SteerInputError(f"features {features}: SAE {entry['name']} has no live latent to steer with")
    best = candidates.sort_values(["max_activation", "latent"], ascending=[False, True]).iloc[0]
    return {"sae": entry["uri"], "name": entry["name"], "latent": int(best["latent"]), "max_activation": float(best["max_activation"]),
            "density": float(best["density"])}
