"""The parameters of the stages that read trained SAEs: the features stage and steering."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from flows.specs.fields import (
    RayAddress,
    StorageRoot,
    StorageSecret,
    check_hookpoint,
)


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
