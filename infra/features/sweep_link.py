"""A link from a saeflow sweep's report to the feature browser built from its SAEs.

The SAEs of a sweep live in {root}/saes/{sweep_id}/{sae_id} and its report in
{root}/evals/{sweep_id}/report.md; the features stage rewrites one marked section at the report's
end (idempotent: a re-run replaces its own line, several feature runs each keep theirs).
"""

from __future__ import annotations

import os
import posixpath

from infra.features.plan import FeaturesPlan
from infra.storage import exists, join, read_bytes, write_bytes_atomic

SECTION = "\n## Feature browsers\n\n"


def sweep_report_for(plan: FeaturesPlan) -> str | None:
    """The report of the sweep the plan's SAEs came from, if they are one sweep's and it exists."""
    parents = {posixpath.dirname(s["uri"].rstrip("/")) for s in plan.saes}
    if len(parents) != 1:
        return None
    sweep_folder = parents.pop()
    root, sweep_id = posixpath.dirname(posixpath.dirname(sweep_folder)), posixpath.basename(sweep_folder)
    if posixpath.basename(posixpath.dirname(sweep_folder)) != "saes":
        return None
    report = join(root, "evals", sweep_id, "report.md")
    return report if exists(report) else None


def link_from_sweep_report(plan: FeaturesPlan, browser: str) -> str | None:
    """Add (or refresh) this stage's browser link in its sweep's report; returns the report URI or None."""
    report = sweep_report_for(plan)
    if report is None:
        return None
    text = read_bytes(report).decode()
    target = os.path.relpath(browser, posixpath.dirname(report)) if "://" not in browser else browser
    line = f"- [{plan.features_id}]({target}): {len(plan.saes)} SAEs on {plan.contexts} contexts\n"
    body, _, section = text.partition(SECTION)
    kept = [entry for entry in section.splitlines(keepends=True) if entry.strip() and f"[{plan.features_id}]" not in entry]
    write_bytes_atomic(report, (body + SECTION + "".join(kept) + line).encode())
    return report
