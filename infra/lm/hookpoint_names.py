"""Hookpoint names alone: the grammar, parsing and errors, importing no torch or transformers.

Split out of infra.lm.hookpoints so the CLI and flows.preflight can reject a malformed name in
milliseconds, before anything heavy is imported; infra.lm.hookpoints re-exports everything here.

``blocks.{L}.hook_resid_pre``  the residual stream entering block L (its input)
``blocks.{L}.hook_resid_post`` the residual stream leaving block L (its output)
``blocks.{L}.hook_attn_out``   block L's attention output, before it joins the residual
``blocks.{L}.hook_mlp_in``     what block L's MLP reads: the residual after ln_2 / post_attention_layernorm
``blocks.{L}.hook_mlp_out``    block L's MLP output, before it joins the residual
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HOOK_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_in", "mlp_out")
"""What can be captured in each block."""
ALLOWED_FORMS = ", ".join(f"blocks.{{L}}.hook_{kind}" for kind in HOOK_KINDS)

_NAME = re.compile(r"^blocks\.(\d+)\.hook_(\w+)$")


class HookpointError(ValueError):
    """A hookpoint name that is malformed or does not exist in the model."""


@dataclass(frozen=True)
class Hookpoint:
    """One capturable activation: a block index and what to read there."""

    layer: int
    """Block index, 0-based."""
    kind: str
    """One of HOOK_KINDS."""

    def __post_init__(self) -> None:
        if self.kind not in HOOK_KINDS:
            raise HookpointError(f"hookpoint kind {self.kind!r} is unknown: one of {', '.join(HOOK_KINDS)}")
        if self.layer < 0:
            raise HookpointError(f"hookpoint layer {self.layer} is invalid: a block index >= 0")

    @classmethod
    def parse(cls, name: str) -> Hookpoint:
        """Parse "blocks.{L}.hook_{kind}"."""
        match = _NAME.match(name)
        if match is None:
            raise HookpointError(f"hookpoint {name!r} is malformed: allowed forms are {ALLOWED_FORMS}")
        layer, kind = int(match.group(1)), match.group(2)
        if kind not in HOOK_KINDS:
            raise HookpointError(f"hookpoint {name!r} has unknown kind hook_{kind}: allowed forms are {ALLOWED_FORMS}")
        return cls(layer, kind)

    @property
    def name(self) -> str:
        """The SAELens hook name, e.g. "blocks.3.hook_resid_post"."""
        return f"blocks.{self.layer}.hook_{self.kind}"
