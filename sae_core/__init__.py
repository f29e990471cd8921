"""saeflow's pure-torch core: sparse autoencoder architectures, losses, metrics and training.

Nothing here does I/O or orchestration; infra/ stores what this package computes.
"""

from sae_core.base import SparseCoder
from sae_core.config import ARCHITECTURES, ConfigError, SaeConfig, TrainConfig
from sae_core.crosscoder import CROSSCODER_CLASSES, BatchTopKCrosscoder, Crosscoder, ReluCrosscoder, build_crosscoder
from sae_core.crosscoder_config import CROSSCODER_ARCHITECTURES, CrosscoderConfig
from sae_core.dictionary import Dictionary, SaeOutput
from sae_core.registry import DICTIONARY_KINDS, SAE_CLASSES, build_dictionary, build_sae
from sae_core.saelens_format import SaeFormatError, from_saelens, to_saelens
from sae_core.state import restore_trainer, trainer_state
from sae_core.trainer import NonFiniteLossError, SaeTrainer, StepReport, fit_many

__all__ = [
    "ARCHITECTURES",
    "BatchTopKCrosscoder",
    "CROSSCODER_ARCHITECTURES",
    "CROSSCODER_CLASSES",
    "ConfigError",
    "Crosscoder",
    "CrosscoderConfig",
    "DICTIONARY_KINDS",
    "Dictionary",
    "NonFiniteLossError",
    "ReluCrosscoder",
    "SAE_CLASSES",
    "SaeConfig",
    "SaeFormatError",
    "SaeOutput",
    "SaeTrainer",
    "SparseCoder",
    "StepReport",
    "TrainConfig",
    "build_crosscoder",
    "build_dictionary",
    "build_sae",
    "fit_many",
    "from_saelens",
    "restore_trainer",
    "to_saelens",
    "trainer_state",
]
