"""The features stage's plan: which SAEs, which rows, every setting, and the id they hash to.

features_id = slug + hash of: the harvest id, the hookpoint, the contexts read (held-out seq_ids), whether special
tokens are skipped, each SAE's name and a hash of its weights and cfg.json (an SAE retrained in
place is a new input), and every knob of the examples, histograms, logit lens and ablations.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from infra.activations.split import SeqSelection, split_eval
from infra.activations.store import MANIFEST_FILE, read_manifest
from infra.features.inputs import CFG_FILE, FeaturesInputError, check_one_hookpoint, check_sae_fits, sae_name
from infra.ids import spec_id
from infra.storage import exists, filesystem, join, read_bytes, read_json

WEIGHTS_FILE = "sae_weights.safetensors"


@dataclass
class FeatureSettings:
    """The knobs that change the stage's tables (all enter the id)."""

    top_examples: int = 10
    """Top-activating examples kept per latent."""
    quantile_bins: int = 4
    """Equal-count bins of each latent's non-zero activations, examples drawn from each."""
    per_bin: int = 2
    """Examples drawn uniformly from each quantile bin."""
    window_left: int = 12
    """Tokens of context shown before an example's token."""
    window_right: int = 4
    """Tokens shown after it."""
    histogram_bins: int = 24
    """Bins of the activation histogram, from 0 to the latent's maximum."""
    logit_tokens: int = 10
    """Promoted and suppressed tokens listed by the logit lens."""
    ablation_latents: int = 16
    """Live latents (lowest indices first) whose top examples get token ablations; -1 = every latent."""
    ablation_examples: int = 2
    """Top examples per latent that are ablated."""
    ablation_window: int = 12
    """Earlier tokens removed one at a time (the nearest ones)."""
    seed: int = 0
    """Seed of the quantile-bin sampling."""


@dataclass
class FeaturesPlan:
    """Everything the stage's workers need, JSON-able."""

    features_id: str
    features: str
    """URI of the stage's folder."""
    harvest: str
    harvest_id: str
    model: str
    hookpoint: str
    seqs: SeqSelection
    """The contexts read: a sweep's held-out contexts for the same number (split_eval), or all."""
    contexts: int
    """How many contexts seqs selects."""
    exclude_special: bool
    encode_batch: int
    saes: list[dict[str, Any]]
    """One dict per SAE: name, uri, d_sae, weights_hash."""
    shards: list[int]
    """Harvest shard indices that hold selected contexts."""
    settings: FeatureSettings = field(default_factory=FeatureSettings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (for the stage manifest)."""
        return asdict(self)


def sae_dirs(uri: str) -> list[str]:
    """uri itself when it is an SAE directory, else its sub-folders that are (sorted); error when none."""
    if exists(join(uri, CFG_FILE)):
        return [uri]
    fs, path = filesystem(uri)
    if not fs.isdir(path):
        raise FeaturesInputError(f"saes {uri}: no such SAE directory or folder of SAE directories")
    found = sorted(join(uri, entry.rstrip("/").rsplit("/", 1)[-1]) for entry in fs.ls(path, detail=False))
    found = [d for d in found if exists(join(d, CFG_FILE))]
    if not found:
        raise FeaturesInputError(f"saes {uri}: neither an SAE directory ({CFG_FILE}) nor a folder of them")
    return found


def seqs_for(harvest: str, manifest: dict[str, Any], contexts: int) -> SeqSelection:
    """The held-out contexts a sweep with eval_contexts=contexts evaluates on (never trained on), or all for 0."""
    total = int(manifest["num_contexts"])
    if contexts < 0 or contexts >= total:
        raise FeaturesInputError(f"contexts={contexts}: the harvest {manifest['harvest_id']} has {total} contexts; "
                                 f"0 (all) or a held-out split of 1..{total - 1}")
    return SeqSelection((), complement=True) if contexts == 0 else split_eval(harvest, contexts)[1]


def plan_features(
    saes: str, harvest: str, root: str, hookpoint: str | None = None, contexts: int = 16, exclude_special: bool = True,
    encode_batch: int = 4096, settings: FeatureSettings | None = None,
) -> FeaturesPlan:
    """Check every SAE against the committed harvest and lay out the stage; nothing is encoded."""
    settings = settings or FeatureSettings()
    if not exists(join(harvest, MANIFEST_FILE)):
        raise FeaturesInputError(f"harvest {harvest} has no {MANIFEST_FILE}: run the harvest flow first (missing or unfinished)")
    manifest = read_manifest(harvest)
    entries, hooks = [], {}
    for uri in sae_dirs(saes):
        name = sae_name(uri)
        cfg = read_json(join(uri, CFG_FILE))
        hooks[name] = check_sae_fits(uri, cfg, manifest, harvest, hookpoint)
        digest = hashlib.sha256(read_bytes(join(uri, WEIGHTS_FILE)) + read_bytes(join(uri, CFG_FILE))).hexdigest()[:16]
        entries.append({"name": name, "uri": uri, "d_sae": cfg["d_sae"], "weights_hash": digest})
    if len({e["name"] for e in entries}) != len(entries):
        raise FeaturesInputError(f"saes {saes}: two SAE directories share a name")
    hook = check_one_hookpoint(hooks)
    seqs = seqs_for(harvest, manifest, contexts)
    shards = [s["index"] for s in manifest["shards"] if seqs.count_in(s["seq_start"], s["seq_stop"]) > 0]
    identity = {
        "harvest_id": manifest["harvest_id"], "hookpoint": hook, "seq_ids": sorted(seqs.ids), "complement": seqs.complement,
        "exclude_special": exclude_special,
        "saes": sorted((e["name"], e["weights_hash"]) for e in entries), "settings": asdict(settings),
    }
    features_id = spec_id(f"{entries[0]['name'] if len(entries) == 1 else 'sweep'}-features", identity)
    return FeaturesPlan(
        features_id=features_id, features=join(root, "features", features_id), harvest=harvest, harvest_id=manifest["harvest_id"],
        model=manifest["model"], hookpoint=hook, seqs=seqs,
        contexts=seqs.count(int(manifest["num_contexts"])), exclude_special=exclude_special, encode_batch=encode_batch,
        saes=entries, shards=shards, settings=settings,
    )
