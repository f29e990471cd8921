"""Artifact ids: a readable slug plus a short hash of the spec that produced the artifact.

One spec always maps to one place, so re-running finds finished work, and Prefect cache keys
built from the same spec agree with the storage layout.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any


def spec_hash(spec: Any, length: int = 10) -> str:
    """Stable short hash of a JSON-able spec (key order does not matter)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def spec_id(slug: str, spec: Any) -> str:
    """'{slug}-{hash}', the slug reduced to [a-z0-9-]."""
    clean = re.sub(r"[^a-z0-9]+", "-", slug.lower()).strip("-") or "run"
    return f"{clean}-{spec_hash(spec)}"
