"""The config a crosscoder sees (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features
and Model Diffing").

It exposes the same attribute names as SaeConfig wherever the meaning is the same, so SaeTrainer,
its schedules (``sparsity_scale_at``) and the metrics read a crosscoder's config unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from sae_core.config import DictionaryConfig, _reject

CROSSCODER_ARCHITECTURES = ("relu", "batchtopk")
SOURCE_NORMALIZATIONS = ("centred_variance", "mean_norm")


@dataclass
class CrosscoderConfig(DictionaryConfig):
    """What defines one acausal crosscoder over n_sources aligned activation streams."""

    architecture: str
    """relu (decoder-norm-weighted L1) or batchtopk (decoder-norm-weighted batch top-k)."""

    n_sources: int
    """Number of sources M read on the same token (models, checkpoints or layers); at least 2."""

    source_normalization: str = "centred_variance"
    """centred_variance: each source's variance around its mean, E||x - mean||^2, becomes d_in, so
    the summed MSE weighs every source's FVU equally and no source is starved when one carries
    its norm in a constant offset (an early checkpoint). mean_norm: E||x|| = sqrt(d_in), the
    Lindsey et al. / dictionary_learning convention, kept for comparison."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.architecture not in CROSSCODER_ARCHITECTURES:
            _reject(name, "architecture", self.architecture, f"one of {', '.join(CROSSCODER_ARCHITECTURES)}")
        if not isinstance(self.n_sources, int) or self.n_sources < 2:
            _reject(name, "n_sources", self.n_sources, "an integer >= 2 (a crosscoder reads several sources)")
        self.check_dictionary_fields(
            uses_k=self.architecture == "batchtopk",
            joint_sources=self.n_sources,
            positive_fields=("decoder_init_norm",),
        )
        if self.source_normalization not in SOURCE_NORMALIZATIONS:
            _reject(name, "source_normalization", self.source_normalization, f"one of {', '.join(SOURCE_NORMALIZATIONS)}")


__all__ = ["CROSSCODER_ARCHITECTURES", "SOURCE_NORMALIZATIONS", "CrosscoderConfig"]
