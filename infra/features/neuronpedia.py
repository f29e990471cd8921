"""Export in Neuronpedia's feature JSON: one object per latent with the field names its feature pages use.

activations (tokens, values, maxValue, maxValueTokenIndex), pos_str / pos_values and neg_str /
neg_values (the logit lens), frac_nonzero and freq_hist_data_bar_heights / _values (the
histogram). Written from the same data as the browser, so the two never disagree; no package is
needed (SAEDashboard pins transformer_lens / older numpy, which would fight this project's pins).
"""

from __future__ import annotations

from typing import Any

from infra.storage import join, write_json_atomic


def neuronpedia_features(payload: dict[str, Any], vocab: dict[int, str], model: str, hookpoint: str) -> list[dict[str, Any]]:
    """The latents of one SAE (its browser payload) as Neuronpedia feature objects."""
    features = []
    for latent in range(payload["d_sae"]):
        bins = len(payload["hist"][latent])
        top = payload["max"][latent]
        activations = []
        for e in payload["examples"].get(latent, []):
            values = e[8]
            activations.append({"tokens": [vocab.get(t, "") for t in e[7]], "values": values, "maxValue": max(values),
                                "maxValueTokenIndex": values.index(max(values)), "binMin": -1 if e[0] == "top" else e[1]})
        lens = payload["lens"].get(latent, {"p": [], "s": []})
        features.append({
            "modelId": model, "layer": hookpoint, "index": latent, "frac_nonzero": payload["density"][latent],
            "activations": activations,
            "pos_str": [vocab.get(t, "") for t, _ in lens["p"]], "pos_values": [v for _, v in lens["p"]],
            "neg_str": [vocab.get(t, "") for t, _ in lens["s"]], "neg_values": [v for _, v in lens["s"]],
            "freq_hist_data_bar_heights": payload["hist"][latent],
            "freq_hist_data_bar_values": [top * (k + 0.5) / bins for k in range(bins)],
        })
    return features


def export_neuronpedia(features_uri: str, data: dict[str, Any], model: str) -> dict[str, str]:
    """Write neuronpedia/{sae}.json per SAE; returns {sae: uri}."""
    vocab = {int(k): v for k, v in data["vocab"].items()}
    written = {}
    for payload in data["saes"]:
        uri = join(features_uri, "neuronpedia", f"{payload['name']}.json")
        write_json_atomic(uri, neuronpedia_features(payload, vocab, model, data["hookpoint"]))
        written[payload["name"]] = uri
    return written
