"""Architecture name -> class, and the one constructor the rest of saeflow calls."""

from __future__ import annotations

from sae_core.base import SparseCoder
from sae_core.batchtopk import BatchTopKSae
from sae_core.config import SaeConfig
from sae_core.deep import DeepTopKSae
from sae_core.gated import GatedSae
from sae_core.jumprelu import JumpReluSae
from sae_core.matryoshka import MatryoshkaBatchTopKSae
from sae_core.relu import ReluSae
from sae_core.topk import TopKSae
from sae_core.transcoder import TRANSCODER_CLASSES

SAE_CLASSES: dict[str, type[SparseCoder]] = {
    cls.architecture: cls
    for cls in (ReluSae, TopKSae, BatchTopKSae, JumpReluSae, GatedSae, MatryoshkaBatchTopKSae, DeepTopKSae)
}


def build_sae(cfg: SaeConfig) -> SparseCoder:
    """A freshly initialised SAE (or transcoder, by cfg.kind) of the configured architecture."""
    if cfg.kind != "sae":
        return TRANSCODER_CLASSES[cfg.architecture](cfg)
    return SAE_CLASSES[cfg.architecture](cfg)
