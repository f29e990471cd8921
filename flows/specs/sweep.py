"""The sweep flow's parameters: the SAE grid, its training budget and evaluation, at one hookpoint or several."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flows.specs.fields import (
    ARCHITECTURES,
    Architecture,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    RayAddress,
    StorageRoot,
    StorageSecret,
    WandbModeSetting,
    check_hookpoint,
    check_hookpoints,
    check_order,
)
from flows.specs.harvest import HarvestSpec


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
