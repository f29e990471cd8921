"""The flow parameters (HarvestSpec, SweepSpec, DiffSpec, the demos' specs), free of Prefect, torch and Ray.

The CLI builds and validates specs without importing any of them (a spec error is reported in
milliseconds, not after a ~10 s import), and every rule that needs no file, model or network
lives here as a pydantic constraint or validator, so the Prefect UI's forms reject the same
values. Checks that read files or the environment are in flows.preflight.
flows.harvest / flows.sweep / flows.diff re-export these classes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from infra.lm.hookpoint_names import Hookpoint

ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk", "deep_topk")
Architecture = Literal["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka_batchtopk", "deep_topk"]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
WandbMode = Literal["online", "offline", "disabled"]
# Where and how a stage runs, declared once for every spec that has them (defaults at each use).
StorageRoot = Annotated[str, Field(min_length=1, description="Storage root: a path, file:// or s3:// URL.")]
RayAddress = Annotated[str | None, Field(description="Ray cluster address; local loopback-only Ray when empty.")]
StorageSecret = Annotated[str | None, Field(description="Prefect Secret block with S3 credentials; else the environment.")]
WandbModeSetting = Annotated[
    WandbMode | None, Field(description="online / offline / disabled; offline unless WANDB_API_KEY is set.")
]


def check_hookpoint(name: str) -> str:
    """The name, if it follows the hookpoint grammar (a ValueError naming the allowed forms otherwise)."""
    Hookpoint.parse(name)  # HookpointError is a ValueError: pydantic reports it against the field
    return name


def check_hookpoints(names: list[str]) -> list[str]:
    """The names, if each follows the hookpoint grammar and none is listed twice (a ValueError otherwise)."""
    for name in names:
        check_hookpoint(name)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"hookpoint(s) {repeated} listed twice: each hookpoint once")
    return names


def check_order(spec: BaseModel, small: str, large: str, rule: str) -> None:
    """spec.small <= spec.large, after validation (a field validator would skip unset defaults)."""
    if getattr(spec, small) > getattr(spec, large):
        raise ValueError(f"{small}={getattr(spec, small)} must be <= {large}={getattr(spec, large)} ({rule})")


class HarvestSpec(BaseModel):
    """What to harvest, on which tokens, and where to put it."""

    model: str = Field("smollm2-135m", min_length=1, description="Hugging Face id, local model directory, or 'smollm2-135m' (packaged, offline).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit), e.g. 'step3000' for Pythia.")
    hookpoints: list[str] = Field(["blocks.6.hook_resid_post"], min_length=1, description="SAELens-style names, e.g. blocks.6.hook_resid_post.")
    source: str = Field(
        "builtin:pydoc", min_length=1,
        description="Text: file / directory / glob (.txt .jsonl .parquet), 'hf:NAME[:SPLIT]' or 'builtin:pydoc'.",
    )
    tokenizer: str | None = Field(None, description="Model whose tokenizer to use; defaults to the model itself.")
    context_length: int = Field(128, ge=2, description="Tokens per context, BOS included.")
    num_tokens: int = Field(32_768, ge=2, description="Tokens to harvest (whole contexts).")
    seed: int = Field(0, description="Seed of the context shuffle.")
    text_column: str = Field("text", description="Text column / key of .jsonl, .parquet and HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype (Parquet has no bfloat16).")
    root: StorageRoot = "./artifacts"
    num_actors: int = Field(1, ge=1, description="Ray actors (one GPU each where there are GPUs).")
    contexts_per_shard: int = Field(64, ge=1, description="Contexts per Parquet shard.")
    batch_contexts: int = Field(16, ge=1, description="Contexts per forward pass.")
    ray_address: RayAddress = None
    storage_secret: str | None = Field(
        None, description="Prefect Secret block with S3 credentials / endpoint (JSON: AWS_ACCESS_KEY_ID, ...); else the environment."
    )

    _hookpoints = field_validator("hookpoints")(lambda cls, names: check_hookpoints(names))

    @model_validator(mode="after")
    def _whole_context(self) -> HarvestSpec:
        check_order(self, "context_length", "num_tokens", "at least one whole context")
        return self

    def model_ref(self) -> str:
        """model@revision."""
        return f"{self.model}@{self.revision}" if self.revision else self.model


class SweepSpec(BaseModel):
    """The grid, its data, its budget and where results go."""

    name: str = Field("sweep", min_length=1, description="Readable name; part of the sweep id.")
    harvest: str | None = Field(None, description="URI of a stored harvest; when empty, harvest_spec is run first (cached).")
    harvest_spec: HarvestSpec = Field(default_factory=HarvestSpec, description="Harvest to run when no stored harvest is given.")
    hookpoint: str = Field("blocks.6.hook_resid_post", description="Hookpoint whose activations the SAEs learn.")
    hookpoints: list[str] = Field(
        [], description="Layer sweep: the same grid at each of these hookpoints (hookpoint is then unused), from one harvest of "
        "all of them, with one results table and plots across layers; each layer keeps the ids a sweep of its hookpoint alone "
        "would have. Empty: sweep hookpoint alone."
    )
    architectures: list[Architecture] = Field(["topk", "relu"], min_length=1, description=", ".join(ARCHITECTURES) + ".")
    target_hookpoint: str | None = Field(
        None, description="What transcoders predict from hookpoint (e.g. blocks.6.hook_mlp_out from blocks.6.hook_mlp_in); "
        "the sweep's SAEs then learn this hookpoint, and every point is spliced here. Part of every id."
    )
    kinds: list[Literal["sae", "transcoder", "skip_transcoder"]] = Field(
        ["sae"], min_length=1, description="Crossed with architectures: sae, transcoder, skip_transcoder (transcoders need "
        "target_hookpoint and one of topk, batchtopk, relu; other architectures give SAE points only)."
    )
    expansion_factors: list[PositiveFloat] = Field([8.0], min_length=1, description="Dictionary sizes as multiples of d_model (> 0).")
    ks: list[PositiveInt] = Field([32], min_length=1, description="k values (topk, batchtopk, matryoshka_batchtopk, deep_topk), >= 1.")
    matryoshka_prefix_fractions: list[float] = Field(
        [0.0625, 0.125, 0.25, 0.5], min_length=1, description="matryoshka_batchtopk: nested inner dictionary sizes as fractions of "
        "d_sae, strictly increasing in (0, 1) (Bussmann et al. 2025); rounded per expansion factor into the SAE config."
    )
    deep_encoder_depth: PositiveInt = Field(1, description="deep_topk: hidden layers of the MLP encoder.")
    deep_decoder_depth: int = Field(0, ge=0, description="deep_topk: hidden layers of the MLP decoder (0: linear decoder).")
    deep_width: PositiveInt | None = Field(None, description="deep_topk: width of the MLP hidden layers; empty: 2 * d_model.")
    sparsity_coefficients: list[NonNegativeFloat] = Field([5.0], min_length=1, description="L1 / L0 weights (relu, jumprelu, gated), >= 0.")
    lrs: list[PositiveFloat] = Field([3e-4], min_length=1, description="Peak learning rates (> 0).")
    seeds: list[int] = Field([0], min_length=1, description="Initialisation seeds.")
    stream_seed: int = Field(
        0, ge=0, description="Seed of the training stream (shard order, shuffle). One per sweep, apart from the init seeds, "
        "so SAEs that differ only in seed saw identical batches; part of every id."
    )
    train_tokens: int = Field(2_000_000, ge=1, description="Training tokens per SAE.")
    dead_window_tokens: PositiveInt | None = Field(
        None, description="Training tokens a latent must stay silent to count as dead (AuxK's window, and dead_fraction's); empty: "
        "min(10M, train_tokens / 10), so AuxK engages in short runs too. Part of every SAE id."
    )
    batch_size: int = Field(4096, ge=1, description="Tokens per batch (<= train_tokens).")
    warmup_steps: int = Field(100, ge=0, description="Learning-rate warm-up steps.")
    autocast_bf16: Literal["cuda", "always", "never"] = Field(
        "cuda", description="bf16 autocast of the SAE products: on CUDA, also on CPUs (fast on AVX512-BF16/AMX), or never."
    )
    eval_contexts: int = Field(16, ge=1, description="Held-out contexts (whole documents, never trained on) for evaluation.")
    splice_contexts: int = Field(8, ge=0, description="Held-out contexts for CE loss recovered / KL (0 skips the model).")
    splice_ci_width: float | None = Field(
        None, gt=0, description="Stop scoring splice contexts once the 95% bootstrap interval of ce_loss_recovered is at most this "
        "wide (splice_contexts is then the most scored); empty scores all splice_contexts. Part of every id."
    )
    splice_baselines: list[Literal["mean", "resample"]] = Field(
        [], description="Ablation baselines besides zero ablation (SAELens's, always run) that CE loss recovered is also reported "
        "against: mean (the training rows' mean activation) and resample (a random training row per position). Part of every id."
    )
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    shuffle_buffer: int = Field(65_536, ge=1, description="Rows in the shuffle buffer mixing shards.")
    max_group_size: int = Field(8, ge=1, description="Most SAEs trained on one shared stream.")
    # From here on: where and how the sweep runs and is logged, never what it computes, so none of
    # these enters an id (nor max_group_size / checkpoint_every: see infra.sweep.grid.NOT_IN_IDS).
    num_actors: int = Field(1, ge=1, description="Training actors (one GPU each where there are GPUs).")
    root: StorageRoot = "./artifacts"
    ray_address: RayAddress = None
    storage_secret: StorageSecret = None
    wandb_project: str = Field("saeflow", description="W&B project; runs are grouped by sweep id.")
    wandb_mode: WandbModeSetting = None

    _hookpoint = field_validator("hookpoint")(check_hookpoint)
    _hookpoints = field_validator("hookpoints")(lambda cls, names: check_hookpoints(names))
    _target_hookpoint = field_validator("target_hookpoint")(lambda cls, v: v if v is None else check_hookpoint(v))

    @field_validator("matryoshka_prefix_fractions")
    @classmethod
    def _fractions(cls, fractions: list[float]) -> list[float]:
        if not all(0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
            raise ValueError(f"{fractions} must be strictly increasing fractions in (0, 1)")
        return fractions

    @model_validator(mode="after")
    def _one_batch(self) -> SweepSpec:
        check_order(self, "batch_size", "train_tokens", "at least one training step")
        return self

    @model_validator(mode="after")
    def _layers(self) -> SweepSpec:
        if not self.hookpoints:
            return self
        transcoders = [kind for kind in self.kinds if kind != "sae"]
        if self.target_hookpoint is not None or transcoders:
            raise ValueError(f"hookpoints {self.hookpoints} with target_hookpoint={self.target_hookpoint!r} / kinds {self.kinds}: "
                             "paired (transcoder) layer sweeps are not supported; sweep each pair on its own")
        # One harvest of every layer: the harvest run when no stored one is given reads them all. A
        # harvest_spec given without some layers (the UI's form always sends one, with its default
        # hookpoint) gets them added; one given without any hookpoints harvests exactly the layers.
        given = self.harvest_spec.hookpoints if "hookpoints" in self.harvest_spec.model_fields_set else []
        wanted = [*given, *(name for name in self.hookpoints if name not in given)]
        if wanted != self.harvest_spec.hookpoints:
            self.harvest_spec = self.harvest_spec.model_copy(update={"hookpoints": wanted})
        return self

    @model_validator(mode="after")
    def _pairing(self) -> SweepSpec:
        transcoders = [kind for kind in self.kinds if kind != "sae"]
        if transcoders and self.target_hookpoint is None:
            raise ValueError(f"kinds {transcoders} need target_hookpoint: what they predict from hookpoint {self.hookpoint!r}")
        if self.target_hookpoint is not None and self.target_hookpoint == self.hookpoint:
            raise ValueError(f"target_hookpoint {self.target_hookpoint!r} equals hookpoint: a transcoder predicts another activation")
        return self

    def layer_specs(self) -> list[SweepSpec]:
        """The single-hookpoint sweeps a layer sweep is made of, one per hookpoint (just this spec for a plain sweep).

        Each is the spec of a sweep of that hookpoint alone (hookpoints empty, the same harvest), so it
        plans to the same ids: a layer sweep finds per-layer work done, and leaves its work to be found.
        """
        if not self.hookpoints:
            return [self]
        return [self.model_copy(update={"hookpoint": name, "hookpoints": []}) for name in self.hookpoints]


class DiffSpec(BaseModel):
    """The checkpoints, the shared token spec, the crosscoder and where the diff goes."""

    models: list[str] = Field(..., min_length=1, description="Two or more refs: name@revision or local checkpoint dirs (A first, B last); "
                              "or ONE model whose layers (hookpoints) are compared.")
    hookpoint: str = Field("blocks.1.hook_resid_post", description="Hookpoint compared across the checkpoints.")
    hookpoints: list[str] = Field([], description="Cross-layer crosscoder: two or more hookpoints of the one model in models, each a source "
                                                  "(A = the first, B = the last); empty compares the checkpoints at hookpoint.")
    source: str = Field("builtin:pydoc", min_length=1, description="Text for the shared token spec (see the harvest flow).")
    context_length: int = Field(64, ge=2, description="Tokens per context.")
    num_tokens: int = Field(65_536, ge=2, description="Tokens harvested per checkpoint.")
    text_column: str = Field("text", description="Text column of .jsonl / .parquet / HF sources.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Stored activation dtype.")
    architecture: Literal["relu", "batchtopk"] = Field(
        "batchtopk", description="batchtopk (decoder-norm-weighted batch top-k + AuxK; Minder et al. 2025 find it far less prone to "
                                 "false exclusive latents) or relu (L1 on summed decoder norms, Lindsey et al. 2024).")
    source_normalization: Literal["centred_variance", "mean_norm"] = Field(
        "centred_variance", description="Per-source scaling: centred_variance (each source's variance around its mean = d_model, "
                                        "so every source counts in the loss) or mean_norm (mean norm sqrt(d_model), Lindsey et al.).")
    expansion_factor: float = Field(8.0, gt=0, description="Latents as a multiple of d_model.")
    k: int = Field(32, ge=1, description="k of the BatchTopK crosscoder.")
    sparsity_coefficient: float = Field(1.0, ge=0, description="L1 weight of the relu crosscoder.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    train_tokens: int = Field(1_000_000, ge=1, description="Training tokens.")
    batch_size: int = Field(1024, ge=1, description="Tokens per batch (<= train_tokens).")
    warmup_steps: int = Field(50, ge=0, description="Learning-rate warm-up steps.")
    eval_contexts: int = Field(32, ge=1, description="Held-out contexts for the diff statistics.")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    shuffle_buffer: int = Field(65_536, ge=0, description="Rows in the shuffle buffer.")
    shared_band: tuple[float, float] = Field((0.3, 0.7), description="Relative-norm band of shared latents (0 <= low < high <= 1).")
    exclusive_margin: float = Field(0.1, ge=0, le=0.5, description="Relative norm below which a latent is A-only (above 1 - it: B-only).")
    exclusive_ratio: float = Field(0.3, gt=0, le=1, description="Latent scaling: an A-/B-only latent stays exclusive only when both "
                                                                 "beta ratios (other source / own) are below this; else shared or spurious.")
    presence_fraction: float = Field(0.3, gt=0, le=1, description="A latent is present in a checkpoint when its decoder norm there is "
                                                                   ">= this fraction of its largest (first_present_source).")
    seed: int = Field(0, description="Seed of tokens, stream and initialisation.")
    root: StorageRoot = "./artifacts"
    num_actors: int = Field(1, ge=1, description="Harvest actors per checkpoint.")
    ray_address: RayAddress = None
    storage_secret: StorageSecret = None
    wandb_project: str = Field("saeflow", description="W&B project.")
    wandb_mode: WandbModeSetting = None

    _hookpoint = field_validator("hookpoint")(check_hookpoint)

    @field_validator("models")
    @classmethod
    def _distinct(cls, models: list[str]) -> list[str]:
        repeated = sorted({m for m in models if models.count(m) > 1})
        if repeated:
            raise ValueError(f"model reference(s) {repeated} repeat: each checkpoint once")
        return models

    _hookpoints = field_validator("hookpoints")(lambda cls, names: [check_hookpoint(name) for name in names])

    @model_validator(mode="after")
    def _sources(self) -> DiffSpec:
        if self.hookpoints:
            if len(self.models) != 1:
                raise ValueError(f"hookpoints {self.hookpoints} compare the layers of ONE model, got models {self.models}: "
                                 "compare checkpoints at one hookpoint, or layers of one model")
            if len(self.hookpoints) < 2 or len(set(self.hookpoints)) != len(self.hookpoints):
                raise ValueError(f"hookpoints {self.hookpoints}: a cross-layer diff needs two or more distinct hookpoints")
        elif len(self.models) < 2:
            raise ValueError(f"models {self.models}: a diff needs two or more checkpoints, or one model with two or more hookpoints")
        return self

    @model_validator(mode="after")
    def _sizes(self) -> DiffSpec:
        check_order(self, "context_length", "num_tokens", "at least one whole context")
        check_order(self, "batch_size", "train_tokens", "at least one training step")
        return self

    @field_validator("shared_band")
    @classmethod
    def _band(cls, band: tuple[float, float]) -> tuple[float, float]:
        low, high = band
        if not 0 <= low < high <= 1:
            raise ValueError(f"({low}, {high}) is not a band: 0 <= low < high <= 1")
        return band


class SyntheticDemoSpec(BaseModel):
    """What to train: the synthetic feature set, the SAE grid and the training budget."""

    d: int = Field(64, ge=2, description="Dimension of the synthetic activation space.")
    num_features: int = Field(128, ge=1, description="True features (more than d: superposition).")
    firing_probability: float = Field(0.03, gt=0, le=1, description="Chance each feature is active on a token.")
    architectures: list[Architecture] = Field(list(ARCHITECTURES[:5]), min_length=1, description="SAE architectures of the grid.")
    expansion_factors: list[float] = Field([4.0], min_length=1, description="Dictionary sizes as multiples of d.")
    k: int = Field(6, ge=1, description="k of TopK / BatchTopK.")
    sparsity_coefficients: dict[str, float] = Field(
        {"relu": 1.0, "jumprelu": 1.0, "gated": 1.0}, description="L1 / L0 weight per architecture."
    )
    steps: int = Field(1500, ge=1, description="Optimiser steps per SAE.")
    batch_size: int = Field(512, ge=1, description="Tokens per batch.")
    lr: float = Field(3e-3, gt=0, description="Peak learning rate.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between resumable checkpoints.")
    seed: int = Field(0, description="Seed of the features, the stream and the SAE initialisation.")
    root: str = Field("./artifacts", description="Storage root: a path, file:// or s3:// URL.")


class DemoSpec(BaseModel):
    """Budget knobs of the demo; defaults finish in a few minutes on 2 CPU cores."""

    root: str = Field("./artifacts", description="Storage root for every stage.")
    harvest_tokens: int = Field(24_576, ge=256, description="Tokens harvested from SmolLM2-135M.")
    hookpoints: list[str] = Field(["blocks.6.hook_resid_post", "blocks.12.hook_resid_post"], min_length=1, description="Hookpoints harvested.")
    sweep_tokens: int = Field(131_072, ge=1024, description="Training tokens per SAE of the sweep.")
    diff_tokens: int = Field(8_192, ge=512, description="Tokens harvested per checkpoint for the diff.")


class FeaturesSpec(BaseModel):
    """Which SAEs to describe, on which harvest's rows, how many examples, and where the tables go."""

    saes: str = Field(..., min_length=1, description="An SAELens-format SAE directory, or a folder of them (a sweep's saes/{sweep_id}).")
    harvest: str = Field(..., min_length=1, description="URI of a committed harvest of the SAEs' model and hookpoint.")
    hookpoint: str | None = Field(None, description="Hookpoint to read; defaults to the SAEs' cfg.json hook_name.")
    contexts: int = Field(16, ge=0, description="The harvest's held-out contexts for N (a sweep's split for eval_contexts=N: whole documents); 0 = all.")
    exclude_special: bool = Field(True, description="Skip BOS/EOS tokens (SAEs are trained without them).")
    top_examples: int = Field(10, ge=1, description="Top-activating examples per latent.")
    quantile_bins: int = Field(4, ge=1, description="Equal-count activation bins per latent that examples are drawn from.")
    per_bin: int = Field(2, ge=1, description="Examples drawn uniformly from each quantile bin.")
    window_left: int = Field(12, ge=0, description="Context tokens shown before an example's token.")
    window_right: int = Field(4, ge=0, description="Context tokens shown after it.")
    histogram_bins: int = Field(24, ge=1, description="Bins of each latent's activation histogram.")
    logit_tokens: int = Field(10, ge=1, description="Promoted / suppressed tokens of the logit lens.")
    ablation_latents: int = Field(16, ge=-1, description="Live latents (lowest index first) whose top examples are ablated; -1 = all.")
    ablation_examples: int = Field(2, ge=0, description="Top examples per latent that are ablated.")
    ablation_window: int = Field(12, ge=1, description="Earlier tokens removed one at a time.")
    seed: int = Field(0, description="Seed of the quantile-bin sampling.")
    # From here on: where and how the stage runs, never what it computes (none enters the id).
    encode_batch: int = Field(4096, ge=1, description="Rows per SAE encode batch.")
    num_actors: int = Field(1, ge=1, description="Ray actors over shards and SAEs (one GPU each where there are GPUs).")
    root: StorageRoot = "./artifacts"
    ray_address: RayAddress = None
    storage_secret: StorageSecret = None

    _hookpoint = field_validator("hookpoint")(lambda cls, v: v if v is None else check_hookpoint(v))


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
AblationMode = Literal["zero", "mean", "resample"]


class SteerSpec(BaseModel):
    """Which model and SAE, the prompts, the interventions, the generation settings, the ablations, and where it goes."""

    model: str = Field("smollm2-135m", min_length=1, description="Hugging Face id, local model directory, or 'smollm2-135m' (packaged, offline).")
    sae: str | None = Field(None, description="An SAELens-format SAE directory; needed by latents, clamp_latents and ablation_latents.")
    hookpoint: str | None = Field(None, description="Hookpoint to intervene at; defaults to the SAE's cfg.json hook_name.")
    harvest: str | None = Field(None, description="A committed harvest of the model: its held-out contexts score the ablations, its rows "
                                                  "give the mean / resample statistics (else the prompts do).")
    prompts: list[str] = Field(["The weather today is"], min_length=1, description="Prompts generated from, baseline and steered.")
    latents: list[int] = Field([], description="SAE latents whose decoder directions are added (summed: one 'add' condition).")
    scales: list[FiniteFloat] = Field([], description="One per latent, in units of the hookpoint's typical activation norm.")
    clamp_latents: list[int] = Field([], description="SAE latents clamped through the SAE, its error added back (one 'clamp' condition).")
    clamp_values: list[FiniteFloat] = Field([], description="One per clamped latent, in the latent's activation units.")
    positive_prompts: list[str] = Field([], description="Contrastive pairs (CAA): prompts showing the behaviour ...")
    negative_prompts: list[str] = Field([], description="... and their paired counterparts without it (one per positive).")
    contrastive_scale: FiniteFloat = Field(4.0, description="Multiplier of the raw mean-difference vector.")
    max_new_tokens: int = Field(24, ge=0, description="Tokens generated per prompt and condition.")
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False, description="0 = greedy; > 0 seeded sampling (same draws for baseline and steered).")
    seed: int = Field(0, description="Seed of sampling and of resample ablation.")
    top_tokens: int = Field(10, ge=1, description="Promoted next tokens listed per prompt and condition.")
    ablation_modes: list[AblationMode] = Field(["zero", "mean", "resample"], description="Hookpoint (and latent) ablations scored; [] skips them.")
    ablation_latents: list[int] = Field([], description="SAE latents ablated one at a time: per-example next-token loss change.")
    contexts: int = Field(8, ge=1, description="The harvest's held-out contexts for N (a sweep's split for eval_contexts=N) score the ablations.")
    stat_rows: int = Field(4096, ge=1, description="Harvest rows the mean / resample statistics are taken over.")
    # From here on: where and how the stage runs, never what it computes (none enters the id).
    root: StorageRoot = "./artifacts"
    ray_address: RayAddress = None
    storage_secret: StorageSecret = None

    _hookpoint = field_validator("hookpoint")(lambda cls, v: v if v is None else check_hookpoint(v))

    @model_validator(mode="after")
    def _pairs(self) -> SteerSpec:
        for a, b in (("latents", "scales"), ("clamp_latents", "clamp_values"), ("positive_prompts", "negative_prompts")):
            if len(getattr(self, a)) != len(getattr(self, b)):
                raise ValueError(f"{a} has {len(getattr(self, a))} entries but {b} has {len(getattr(self, b))}: one per entry")
        if (self.latents or self.clamp_latents or self.ablation_latents) and not self.sae:
            raise ValueError("latents, clamp_latents and ablation_latents name SAE latents: set sae")
        if not self.sae and not self.hookpoint:
            raise ValueError("set hookpoint (or an SAE whose cfg.json names one)")
        return self

    def settings(self) -> dict:
        """The fields that enter the steer id besides model, hookpoint, prompts, SAE and harvest (infra.steer.plan.SteerSettings)."""
        keys = ("latents", "scales", "clamp_latents", "clamp_values", "positive_prompts", "negative_prompts", "contrastive_scale",
                "max_new_tokens", "temperature", "seed", "top_tokens", "ablation_modes", "ablation_latents", "contexts", "stat_rows")
        return {key: getattr(self, key) for key in keys}
