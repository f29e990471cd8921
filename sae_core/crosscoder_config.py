"""The config a crosscoder sees (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features
and Model Diffing").

It exposes the same attribute names as SaeConfig wherever the meaning is the same, so SaeTrainer,
its schedules (``sparsity_scale_at``) and the metrics read a crosscoder's config unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sae_core.config import _check_dictionary_fields, _from_dict, _reject

CROSSCODER_ARCHITECTURES = ("relu", "batchtopk")
SOURCE_NORMALIZATIONS = ("centred_variance", "mean_norm")


@dataclass
class CrosscoderConfig:
    """What defines one acausal crosscoder over n_sources aligned activation streams."""

    architecture: str
    """relu (decoder-norm-weighted L1) or batchtopk (decoder-norm-weighted batch top-k)."""

    n_sources: int
    """Number of sources M read on the same token (models, checkpoints or layers); at least 2."""

    d_in: int
    """Width of each source's activations (every source has the same d_in)."""

    expansion_factor: float = 8.0
    """Dictionary size as a multiple of d_in; ignored when d_sae is given."""

    d_sae: int | None = None
    """Number of latents shared by all sources. Defaults to round(expansion_factor * d_in)."""

    k: int = 32
    """Mean active latents per token for batchtopk; unused by relu."""

    sparsity_coefficient: float = 5.0
    """Weight of the L1 penalty sum_f acts_f * sum_m ||W_dec[f, m]|| (relu); unused by batchtopk."""

    sparsity_warmup_fraction: float = 0.05
    """Fraction of training over which the sparsity weight ramps linearly from 0 (Anthropic, Apr 2024)."""

    aux_k_coefficient: float = 1.0 / 32.0
    """Weight of the AuxK dead-latent loss for batchtopk (Gao et al. 2024 use 1/32)."""

    aux_k: int | None = None
    """Latents AuxK may use; defaults to n_sources * d_in // 2 (half the joint width, as Gao et al.), at most d_sae."""

    dead_after_tokens: int = 10_000_000
    """A latent that has not fired for this many training tokens counts as dead (AuxK, metrics)."""

    batchtopk_threshold_momentum: float = 0.01
    """EMA rate of the inference threshold (smallest kept decoder-norm-weighted activation)."""

    pre_act_std_coefficient: float = 0.0
    """Weight of a penalty on the std across latents of the batch-mean pre-activation; 0 turns it off."""

    decoder_init_norm: float = 0.1
    """Initial norm of each per-source decoder vector W_dec[f, m] for relu; batchtopk starts each
    latent's concatenated decoder at unit norm."""

    b_dec_init: str = "geometric_median"
    """How each source's b_dec is initialised from the first batch: zeros, mean or geometric_median."""

    normalize_activations: bool = True
    """Scale each source separately (see source_normalization); False keeps model units."""

    source_normalization: str = "centred_variance"
    """centred_variance: each source's variance around its mean, E||x - mean||^2, becomes d_in, so
    the summed MSE weighs every source's FVU equally and no source is starved when one carries
    its norm in a constant offset (an early checkpoint). mean_norm: E||x|| = sqrt(d_in), the
    Lindsey et al. / dictionary_learning convention, kept for comparison."""

    seed: int = 0
    """Seed of the weight initialisation."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.architecture not in CROSSCODER_ARCHITECTURES:
            _reject(name, "architecture", self.architecture, f"one of {', '.join(CROSSCODER_ARCHITECTURES)}")
        if not isinstance(self.n_sources, int) or self.n_sources < 2:
            _reject(name, "n_sources", self.n_sources, "an integer >= 2 (a crosscoder reads several sources)")
        _check_dictionary_fields(
            self,
            uses_k=self.architecture == "batchtopk",
            joint_sources=self.n_sources,
            positive_fields=("decoder_init_norm",),
        )
        if self.source_normalization not in SOURCE_NORMALIZATIONS:
            _reject(name, "source_normalization", self.source_normalization, f"one of {', '.join(SOURCE_NORMALIZATIONS)}")
        if not isinstance(self.dead_after_tokens, int) or self.dead_after_tokens < 1:
            _reject(name, "dead_after_tokens", self.dead_after_tokens, "a positive integer")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CrosscoderConfig:
        """Build from a dict, rejecting keys that are not fields (typos must not pass silently)."""
        return _from_dict(cls, values)


__all__ = ["CROSSCODER_ARCHITECTURES", "SOURCE_NORMALIZATIONS", "CrosscoderConfig"]
