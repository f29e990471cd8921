"""Config dataclasses the SAE math sees: one for the architecture, one for its optimisation.

Every field has a docstring; ``__post_init__`` rejects a bad value before any tensor is made,
naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk", "deep_topk")
K_ARCHITECTURES = ("topk", "batchtopk", "matryoshka_batchtopk", "deep_topk")
"""Architectures whose sparsity is set by k (the others by sparsity_coefficient)."""
KINDS = ("sae", "transcoder", "skip_transcoder")
"""What a dictionary maps: an SAE reconstructs its input; a transcoder predicts another activation
(e.g. an MLP's output from its input); a skip transcoder adds a linear skip path x W_skip."""
TRANSCODER_ARCHITECTURES = ("topk", "batchtopk", "relu")
"""Sparsity rules a transcoder can use (sae_core.transcoder)."""
B_DEC_INITS = ("zeros", "mean", "geometric_median")
OPTIMIZERS = ("adam", "muon")
AUTOCAST_MODES = ("cuda", "always", "never")


class ConfigError(ValueError):
    """A config field holds a value the SAE cannot be built or trained with."""


def _reject(cls_name: str, name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{cls_name}.{name}={value!r} is invalid: {allowed}")


def _check_dictionary_fields(cfg: Any, uses_k: bool, joint_sources: int, positive_fields: tuple[str, ...]) -> None:
    """Checks SaeConfig and CrosscoderConfig share: shape, k, AuxK, coefficients, schedules, b_dec.

    Fills in d_sae and aux_k when they are None; aux_k defaults to half the joint input width,
    joint_sources * d_in // 2 (Gao et al. 2024), at most d_sae.
    """
    name = type(cfg).__name__
    if not isinstance(cfg.d_in, int) or cfg.d_in < 1:
        _reject(name, "d_in", cfg.d_in, "a positive integer")
    if not (cfg.expansion_factor > 0 and math.isfinite(cfg.expansion_factor)):
        _reject(name, "expansion_factor", cfg.expansion_factor, "a finite number > 0")
    if cfg.d_sae is None:
        cfg.d_sae = max(1, round(cfg.expansion_factor * cfg.d_in))
    if not isinstance(cfg.d_sae, int) or cfg.d_sae < 1:
        _reject(name, "d_sae", cfg.d_sae, "a positive integer")
    if uses_k and not 1 <= cfg.k <= cfg.d_sae:
        _reject(name, "k", cfg.k, f"an integer in 1..d_sae={cfg.d_sae}")
    if cfg.aux_k is None:
        cfg.aux_k = max(1, min(joint_sources * cfg.d_in // 2, cfg.d_sae))
    if not 1 <= cfg.aux_k <= cfg.d_sae:
        _reject(name, "aux_k", cfg.aux_k, f"an integer in 1..d_sae={cfg.d_sae}")
    for non_negative in ("sparsity_coefficient", "aux_k_coefficient", "pre_act_std_coefficient"):
        value = getattr(cfg, non_negative)
        if not (value >= 0 and math.isfinite(value)):
            _reject(name, non_negative, value, "a finite number >= 0")
    if not 0 <= cfg.sparsity_warmup_fraction <= 1:
        _reject(name, "sparsity_warmup_fraction", cfg.sparsity_warmup_fraction, "a number in [0, 1]")
    for positive in positive_fields:
        value = getattr(cfg, positive)
        if not (value > 0 and math.isfinite(value)):
            _reject(name, positive, value, "a finite number > 0")
    if not 0 < cfg.batchtopk_threshold_momentum <= 1:
        _reject(name, "batchtopk_threshold_momentum", cfg.batchtopk_threshold_momentum, "a number in (0, 1]")
    if cfg.b_dec_init not in B_DEC_INITS:
        _reject(name, "b_dec_init", cfg.b_dec_init, f"one of {', '.join(B_DEC_INITS)}")


def _check_deep_and_matryoshka(cfg: SaeConfig) -> None:
    """Rules of the matryoshka_batchtopk and deep_topk knobs; fills in their defaults."""
    name = type(cfg).__name__
    cfg.matryoshka_prefixes = tuple(cfg.matryoshka_prefixes)  # JSON round trips give lists
    if cfg.architecture == "matryoshka_batchtopk" and not cfg.matryoshka_prefixes:
        cfg.matryoshka_prefixes = tuple(sorted({cfg.d_sae // 2**i for i in (4, 3, 2, 1)} - {0}))
    sizes = cfg.matryoshka_prefixes
    if any(not isinstance(m, int) or not 1 <= m < cfg.d_sae for m in sizes) or list(sizes) != sorted(set(sizes)):
        _reject(name, "matryoshka_prefixes", sizes, f"strictly increasing integers in 1..d_sae-1={cfg.d_sae - 1}")
    if cfg.architecture == "matryoshka_batchtopk" and not sizes:
        _reject(name, "d_sae", cfg.d_sae, "at least 2 for matryoshka_batchtopk (a prefix and the whole dictionary)")
    if cfg.deep_width is None:
        cfg.deep_width = 2 * cfg.d_in
    for field, value, low in (("deep_encoder_depth", cfg.deep_encoder_depth, 1), ("deep_decoder_depth", cfg.deep_decoder_depth, 0),
                              ("deep_width", cfg.deep_width, 1)):
        if not isinstance(value, int) or value < low:
            _reject(name, field, value, f"an integer >= {low}")



DEAD_WINDOW_CAP = 10_000_000
"""Gao et al. (2024)'s dead-latent window: latents silent for 10M training tokens feed AuxK."""
DEAD_WINDOW_FRACTION = 0.1
"""Share of a run's training tokens the scaled window covers when the run is shorter than 10 x the cap."""


def scaled_dead_window(train_tokens: int) -> int:
    """The dead-latent window for a run of train_tokens: min(10M, train_tokens // 10), at least 1.

    A latent can only count as dead once it has been silent for a whole window, so AuxK engages
    after the first window at the earliest: with the fixed 10M it never does in a run shorter than
    that (the demo trains 131k tokens). A tenth of the run lets AuxK act on 90% of training while a
    latent still has to stay silent over a tenth of the run, long enough that a live latent rarely
    looks dead (one firing on a fraction p of tokens stays silent for W tokens with probability
    (1 - p)^W: below 5% for p >= 3 / W). Runs of 100M tokens or more keep the paper's 10M.
    """
    return max(1, min(DEAD_WINDOW_CAP, int(train_tokens * DEAD_WINDOW_FRACTION)))

@dataclass(kw_only=True)
class DictionaryConfig:
    """Fields every sparse dictionary has (an SAE, a crosscoder): its size, sparsity budget, dead-latent
    rules and initialisation. Keyword-only, so each kind keeps its own positional fields first."""

    d_in: int
    """Width of the activations read (the model's d_model at the hookpoint; each source's, for a crosscoder)."""

    expansion_factor: float = 8.0
    """Dictionary size as a multiple of d_in; ignored when d_sae is given."""

    d_sae: int | None = None
    """Dictionary size (number of latents). Defaults to round(expansion_factor * d_in)."""

    k: int = 32
    """Active latents per token (topk kinds); mean active latents per token (batchtopk kinds). Unused otherwise."""

    sparsity_coefficient: float = 5.0
    """Weight of the sparsity penalty: L1 (relu, gated; for a crosscoder weighted by the summed decoder
    norms) or L0 (jumprelu). Unused by the k kinds."""

    sparsity_warmup_fraction: float = 0.05
    """Fraction of training over which the sparsity weight ramps linearly from 0 (Anthropic, Apr 2024)."""

    aux_k_coefficient: float = 1.0 / 32.0
    """Weight of the AuxK dead-latent loss for the k kinds (Gao et al. 2024 use 1/32)."""

    aux_k: int | None = None
    """Latents the AuxK loss may use; defaults to half the joint input width, n_sources * d_in // 2
    (Gao et al. 2024), at most d_sae."""

    dead_after_tokens: int = 10_000_000
    """A latent that has not fired for this many training tokens counts as dead (AuxK, metrics).
    Gao et al.'s 10M suits long runs; a short run should pass scaled_dead_window(its tokens)."""

    batchtopk_threshold_momentum: float = 0.01
    """EMA rate of the BatchTopK inference threshold (mean of the smallest kept activation)."""

    pre_act_std_coefficient: float = 0.0
    """Weight of a penalty on the std across latents of the batch-mean encoder pre-activation.

    A practical dead-latent mitigation: it keeps any latent's mean pre-activation from drifting
    far below the others (where it would never fire again). 0 turns it off.
    """

    decoder_init_norm: float = 0.1
    """Initial norm of decoder rows for relu kinds (Anthropic, Apr 2024); the others start at unit norm."""

    b_dec_init: str = "geometric_median"
    """How b_dec is initialised from the first batch: zeros, mean or geometric_median."""

    normalize_activations: bool = True
    """Scale inputs to a fixed size (an SAE: mean norm sqrt(d_in), folded into exported weights; a
    crosscoder: per source, see its source_normalization); False keeps model units."""

    seed: int = 0
    """Seed of the weight initialisation."""

    def check_dictionary_fields(self, uses_k: bool, joint_sources: int, positive_fields: tuple[str, ...]) -> None:
        """The shared rules (fills in d_sae and aux_k); each kind calls it from __post_init__."""
        _check_dictionary_fields(self, uses_k, joint_sources, positive_fields)
        if not isinstance(self.dead_after_tokens, int) or self.dead_after_tokens < 1:
            _reject(type(self).__name__, "dead_after_tokens", self.dead_after_tokens, "a positive integer")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Any:
        """Build from a dict, rejecting keys that are not fields (typos must not pass silently)."""
        return _from_dict(cls, values)


@dataclass
class SaeConfig(DictionaryConfig):
    """What defines one sparse autoencoder: its shape, activation function and sparsity loss."""

    architecture: str
    """One of relu, topk, batchtopk, jumprelu, gated, matryoshka_batchtopk, deep_topk."""

    jumprelu_bandwidth: float = 0.05
    """Width of the rectangle kernel of JumpReLU's straight-through estimator."""

    jumprelu_init_threshold: float = 0.1
    """Initial JumpReLU threshold for every latent, in sqrt(d_in)-scaled units.

    0.1 rather than SAELens's 0.01: from 0.01 the threshold's pseudo-gradient (non-zero only
    within bandwidth/2 of it) dies out before it reaches the scale of real activations, and
    most latents stay on (measured: L0 ~100 of 256 on the synthetic benchmark vs 3.3 from 0.1).
    """

    encoder_init_scale: float | None = None
    """W_enc starts as this times W_dec^T. Default (None, filled in): d_in / d_sae for gated, 1 for
    the others. With the plain transpose of a unit-norm decoder, pre-activations of unit-scale inputs
    are O(1) for every latent, so about half of a Gated SAE's latents fire at step 0 and the
    reconstruction error is ~20x the variance; TopK picks k regardless of scale (Gao et al. 2024 use
    the transpose). JumpReLU's decoder starts at decoder_init_norm (0.1), so its transpose is already
    that small (Anthropic's 2025 recipe scales the encoder by d_in / d_sae for the same reason)."""

    init_firing_fraction: float = 0.01
    """jumprelu / gated: the threshold (gate bias) of each latent is set from the first batch so it
    fires on this fraction of tokens at step 0 (the starting L0 is this times d_sae)."""

    matryoshka_prefixes: tuple[int, ...] = ()
    """matryoshka_batchtopk: sizes m of the nested inner dictionaries (latents 0..m-1), strictly
    increasing, each < d_sae (the whole dictionary is always the last level); each prefix is trained
    to reconstruct the input alone (Bussmann et al. 2025). Empty: d_sae/16, /8, /4, /2."""

    deep_encoder_depth: int = 1
    """deep_topk: hidden layers of the MLP encoder in front of the sparse layer (>= 1)."""

    deep_decoder_depth: int = 0
    """deep_topk: hidden layers of an MLP decoder after the sparse layer (0: linear decoder only)."""

    deep_width: int | None = None
    """deep_topk: width of the MLP hidden layers; defaults to 2 * d_in."""

    kind: str = "sae"
    """sae (reconstruct the input), transcoder (predict a target activation from the input: W_dec and
    b_dec live in the target's space) or skip_transcoder (a transcoder plus a linear x W_skip path,
    W_skip starting at zero; Paulo et al. 2025). Transcoders use the sparsity of `architecture`:
    one of TRANSCODER_ARCHITECTURES."""

    d_out: int | None = None
    """Transcoders: width of the target activation; defaults to d_in. None for SAEs."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.architecture not in ARCHITECTURES:
            _reject(name, "architecture", self.architecture, f"one of {', '.join(ARCHITECTURES)}")
        self.check_dictionary_fields(
            uses_k=self.architecture in K_ARCHITECTURES,
            joint_sources=1,
            positive_fields=("jumprelu_bandwidth", "jumprelu_init_threshold", "decoder_init_norm"),
        )
        if self.encoder_init_scale is None:
            # Filled in, so the value an SAE was made with is in its config (and its id).
            self.encoder_init_scale = self.d_in / self.d_sae if self.architecture == "gated" else 1.0
        if not self.encoder_init_scale > 0:
            _reject(name, "encoder_init_scale", self.encoder_init_scale, "a number > 0")
        if not 0 < self.init_firing_fraction < 1:
            _reject(name, "init_firing_fraction", self.init_firing_fraction, "a fraction in (0, 1)")
        _check_deep_and_matryoshka(self)
        _check_kind(self)


def _check_kind(cfg: SaeConfig) -> None:
    """Rules of kind and d_out; fills in a transcoder's d_out."""
    name = type(cfg).__name__
    if cfg.kind not in KINDS:
        _reject(name, "kind", cfg.kind, f"one of {', '.join(KINDS)}")
    if cfg.kind == "sae":
        if cfg.d_out is not None:
            _reject(name, "d_out", cfg.d_out, "None for kind='sae' (an SAE's output is its input: d_in)")
        return
    if cfg.architecture not in TRANSCODER_ARCHITECTURES:
        _reject(name, "architecture", cfg.architecture, f"one of {', '.join(TRANSCODER_ARCHITECTURES)} for kind={cfg.kind!r}")
    if cfg.d_out is None:
        cfg.d_out = cfg.d_in
    if isinstance(cfg.d_out, bool) or not isinstance(cfg.d_out, int) or cfg.d_out < 1:
        _reject(name, "d_out", cfg.d_out, "a positive integer (the target activation's width)")


@dataclass
class TrainConfig:
    """How one SAE is optimised: learning rate, its schedule, the optimiser and clipping."""

    total_steps: int
    """Number of optimiser steps planned; the schedules (warm-up, decay, sparsity ramp) use it."""

    lr: float = 3e-4
    """Peak learning rate."""

    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0 to lr."""

    decay_fraction: float = 0.2
    """Final fraction of training over which the learning rate decays linearly to 0 (Anthropic, Apr 2024)."""

    optimizer: str = "adam"
    """adam, or muon (Muon on weight matrices, Adam on biases and thresholds)."""

    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam's beta1, beta2."""

    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""

    autocast_bf16: str = "cuda"
    """Where the forward runs its products in bfloat16 (parameters and optimiser state stay fp32):
    "cuda" (on CUDA devices), "always" (on CPUs too: worth it where they have bf16 matrix
    instructions, AVX512-BF16 or AMX) or "never"."""

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.total_steps, int) or self.total_steps < 1:
            _reject(name, "total_steps", self.total_steps, "a positive integer")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            _reject(name, "lr", self.lr, "a finite number > 0")
        if not 0 <= self.warmup_steps <= self.total_steps:
            _reject(name, "warmup_steps", self.warmup_steps, f"an integer in 0..total_steps={self.total_steps}")
        if not 0 <= self.decay_fraction <= 1:
            _reject(name, "decay_fraction", self.decay_fraction, "a number in [0, 1]")
        if self.optimizer not in OPTIMIZERS:
            _reject(name, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        self.adam_betas = tuple(self.adam_betas)  # JSON round trips give lists
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            _reject(name, "adam_betas", self.adam_betas, "two numbers in [0, 1)")
        if self.autocast_bf16 not in AUTOCAST_MODES:
            _reject(name, "autocast_bf16", self.autocast_bf16, f"one of {', '.join(AUTOCAST_MODES)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            _reject(name, "max_grad_norm", self.max_grad_norm, "a number > 0 or None")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        values = asdict(self)
        values["adam_betas"] = list(self.adam_betas)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict, rejecting keys that are not fields."""
        return _from_dict(cls, values)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}; known fields: {sorted(known)}")
    return cls(**values)


__all__ = ["ARCHITECTURES", "KINDS", "K_ARCHITECTURES", "TRANSCODER_ARCHITECTURES", "ConfigError", "SaeConfig", "TrainConfig"]
