"""Model references as people type them ("org/model@step1000", "./tiny", "smollm2-135m").

Pure parsing (no torch, no transformers), so flows.preflight can tell a local directory from a
hub id in milliseconds; infra.lm.models re-exports everything here and does the loading.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGED_SMOLLM2 = "smollm2-135m"
"""Alias of SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576), loadable offline."""

SUPPORTED_FAMILIES = ("gpt2", "gpt_neox", "llama")
"""``config.model_type`` values whose blocks infra.lm.hookpoints knows how to hook."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_REVISION = re.compile(r"^[\w./-]+$")


class ModelError(ValueError):
    """A model reference that cannot be parsed, found or loaded."""


@dataclass(frozen=True)
class ModelRef:
    """A model to load: a hub id (optionally pinned to a revision), a local directory or an alias."""

    name: str
    """Hub id ("org/model"), local directory path, or the packaged alias "smollm2-135m"."""
    revision: str | None = None
    """Hub branch, tag or commit; only hub ids have one."""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip():
            raise ModelError(f"model reference {self.name!r} is invalid: a non-empty name without surrounding spaces")
        if self.revision is not None and not _REVISION.match(self.revision):
            raise ModelError(
                f"model reference {self!s} has invalid revision {self.revision!r}: "
                "a branch, tag or commit of [A-Za-z0-9_./-]"
            )
        if self.kind != "hub" and self.revision is not None:
            raise ModelError(f"model reference {self!s} is invalid: only hub ids take '@revision', not a {self.kind} model")
        if self.kind == "hub" and not _HUB_ID.match(self.name):
            raise ModelError(
                f"model reference {self.name!r} is invalid: a hub id 'name' or 'org/name' of [A-Za-z0-9_.-], "
                f"an existing local directory, or {PACKAGED_SMOLLM2!r}"
            )

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """Parse "name@revision", "name", a local directory path or the packaged alias."""
        text = text.strip()
        if _is_local(text) and Path(text).expanduser().is_dir():
            return cls(text)  # an existing directory wins, even with an '@' in its path
        name, sep, revision = text.rpartition("@")
        if not sep:
            return cls(text)
        if not name or not revision:
            raise ModelError(f"model reference {text!r} is invalid: expected 'name' or 'name@revision'")
        return cls(name, revision)

    @property
    def kind(self) -> str:
        """"packaged", "local" or "hub"."""
        if self.name == PACKAGED_SMOLLM2:
            return "packaged"
        return "local" if _is_local(self.name) else "hub"

    def __str__(self) -> str:
        return self.name if self.revision is None else f"{self.name}@{self.revision}"


def _is_local(name: str) -> bool:
    # Hub ids have at most one '/', so anything path-shaped or already on disk is a directory.
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or Path(name).expanduser().is_dir()


def model_cache_root() -> Path:
    """Where converted packaged models live: $SAEFLOW_MODEL_CACHE or ~/.cache/saeflow/models."""
    return Path(os.environ.get("SAEFLOW_MODEL_CACHE") or "~/.cache/saeflow/models").expanduser()
