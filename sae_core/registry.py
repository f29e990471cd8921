"""Architecture name -> class, and the constructors the rest of saeflow calls (build_dictionary for any kind)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sae_core.base import SparseCoder
from sae_core.batchtopk import BatchTopKSae
from sae_core.config import DictionaryConfig, SaeConfig
from sae_core.crosscoder import build_crosscoder
from sae_core.crosscoder_config import CrosscoderConfig
from sae_core.deep import DeepTopKSae
from sae_core.dictionary import Dictionary
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


DICTIONARY_KINDS: dict[str, tuple[type[DictionaryConfig], Callable[[Any], Dictionary]]] = {
    "sae": (SaeConfig, build_sae),
    "crosscoder": (CrosscoderConfig, build_crosscoder),
}
"""Dictionary.kind -> (its config class, its constructor): what a checkpoint's model_kind names."""


def build_dictionary(cfg: DictionaryConfig) -> Dictionary:
    """A freshly initialised dictionary of whichever kind the config describes."""
    for config_class, build in DICTIONARY_KINDS.values():
        if type(cfg) is config_class:
            return build(cfg)
    raise TypeError(f"no dictionary kind is configured by {type(cfg).__name__}; known: {sorted(DICTIONARY_KINDS)}")


def dictionary_from_dict(kind: str, values: dict[str, Any]) -> Dictionary:
    """A fresh dictionary from a checkpoint's model_kind and config dict."""
    if kind not in DICTIONARY_KINDS:
        raise ValueError(f"training state has model_kind={kind!r}, expected one of {sorted(DICTIONARY_KINDS)}")
    config_class, build = DICTIONARY_KINDS[kind]
    return build(config_class.from_dict(values))
