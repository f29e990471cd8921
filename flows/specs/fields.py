"""Field types and checks every flow spec shares (storage root, Ray address, hookpoint names, ...)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

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
