"""The feature browser: one static, self-contained HTML page over a features stage's tables.

Static rather than a served app: it opens from a file, an object-store link or a CI artifact
with nothing running, needs no port or credentials, and cannot drift from the tables it was
built from. All data is embedded as JSON (token strings only for the ids the page shows) and a
little vanilla JavaScript lists the SAEs and latents (search by index, sort by density) and
draws each latent's histogram, top and quantile-bin examples, logit lens and attribution.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from infra.features.details import read_table, sae_folder
from infra.features.plan import FeaturesPlan
from infra.storage import join, write_bytes_atomic

BROWSER_FILE = "browser.html"


def sae_payload(stats: pd.DataFrame, examples: pd.DataFrame, lens: pd.DataFrame, attribution: pd.DataFrame,
                name: str, d_sae: int) -> dict[str, Any]:
    """One SAE's part of the page's data, keyed by latent."""
    by_latent: dict[int, list] = {}
    for e in examples.itertuples():
        by_latent.setdefault(int(e.latent), []).append(
            [e.kind, int(e.bin), int(e.rank), int(e.seq_id), int(e.pos), round(float(e.value), 4), int(e.window_start),
             [int(t) for t in e.token_ids], [round(float(a), 4) for a in e.acts]])
    lenses: dict[int, dict[str, list]] = {}
    for row in lens.itertuples():
        lenses.setdefault(int(row.latent), {"p": [], "s": []})["p" if row.direction == "promoted" else "s"].append(
            [int(row.token_id), round(float(row.logit), 3)])
    ablations: dict[int, list] = {}
    for (latent, rank), group in attribution.groupby(["latent", "rank"], sort=True):
        first = group.iloc[0]
        ablations.setdefault(int(latent), []).append({
            "rank": int(rank), "seq": int(first.seq_id), "pos": int(first.pos), "original": round(float(first.original), 4),
            "token": None, "items": [[int(r.removed_pos), int(r.token_id), round(float(r.delta), 4)] for r in group.itertuples()]})
    return {
        "name": name, "d_sae": d_sae, "density": [float(x) for x in stats["density"]],
        "mean": [round(float(x), 4) for x in stats["mean_activation"]], "max": [round(float(x), 4) for x in stats["max_activation"]],
        "hist": [[int(c) for c in h] for h in stats["histogram"]], "examples": by_latent, "lens": lenses, "attribution": ablations,
    }


def used_token_ids(payloads: list[dict[str, Any]]) -> set[int]:
    """Every token id the page displays."""
    ids: set[int] = set()
    for payload in payloads:
        for examples in payload["examples"].values():
            for e in examples:
                ids.update(e[7])
        for lens in payload["lens"].values():
            ids.update(p[0] for p in lens["p"] + lens["s"])
        for ablations in payload["attribution"].values():
            for a in ablations:
                ids.update(t[1] for t in a["items"])
                ids.add(a["token"])
    return ids


def token_strings(tokenizer: Any, ids: set[int]) -> dict[int, str]:
    """{id: text} decoded one token at a time (spaces and newlines kept visible as text)."""
    return {i: tokenizer.decode([i]) for i in sorted(ids) if i is not None}


def build_browser(plan: FeaturesPlan, tokenizer: Any, token_ids_NS: np.ndarray) -> tuple[str, dict[str, Any]]:
    """Write browser.html for every SAE of the plan; returns (its URI, the embedded data)."""
    payloads = []
    for entry in plan.saes:
        folder = sae_folder(plan.features, entry["name"])
        tables = [read_table(join(folder, f"{t}.parquet")) for t in ("stats", "examples", "logit_lens", "attribution")]
        payload = sae_payload(*tables, entry["name"], entry["d_sae"])
        for ablations in payload["attribution"].values():
            for a in ablations:
                a["token"] = int(token_ids_NS[a["seq"], a["pos"]])
        payloads.append(payload)
    data = {"features_id": plan.features_id, "harvest": plan.harvest, "hookpoint": plan.hookpoint,
            "quantile_bins": plan.settings.quantile_bins, "saes": payloads,
            "vocab": token_strings(tokenizer, used_token_ids(payloads))}
    template = resources.files("infra.features").joinpath("browser_page.html").read_text()
    # </ inside the JSON would end the <script> element early.
    page = template.replace("__TITLE__", plan.features_id).replace("__DATA__", json.dumps(data).replace("</", "<\\/"))
    uri = join(plan.features, BROWSER_FILE)
    write_bytes_atomic(uri, page.encode())
    return uri, data
