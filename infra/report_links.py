"""Links from a saeflow sweep's report to what later stages built from its SAEs (feature browsers, steering runs).

The SAEs of a sweep live in {root}/saes/{sweep_id}/{sae_id} and its report in
{root}/evals/{sweep_id}/report.md. The report is the sweep's hub: each later stage keeps one
marked section at its end ("## Feature browsers", "## Steering runs") with one line per run,
rewritten idempotently (a re-run replaces its own line; other runs and sections are kept). The
stages' own outputs (a browser, a steering report) stay immutable, addressed by their ids.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from infra.storage import exists, join, read_bytes, write_bytes_atomic

NEXT_SECTION = "\n## "


def sweep_report_of(sae_uris: Iterable[str]) -> str | None:
    """The report of the sweep the SAEs came from, if they are one saeflow sweep's and it exists."""
    parents = {posixpath.dirname(uri.rstrip("/")) for uri in sae_uris}
    if len(parents) != 1:
        return None
    sweep_folder = parents.pop()
    if posixpath.basename(posixpath.dirname(sweep_folder)) != "saes":
        return None
    root, sweep_id = posixpath.dirname(posixpath.dirname(sweep_folder)), posixpath.basename(sweep_folder)
    report = join(root, "evals", sweep_id, "report.md")
    return report if exists(report) else None


def link_from_sweep_report(sae_uris: Iterable[str], section: str, run_id: str, target: str, summary: str) -> str | None:
    """Add (or refresh) the line `- [run_id](target): summary` in the sweep report's `section`; the report URI or None."""
    report = sweep_report_of(sae_uris)
    if report is None:
        return None
    relative = os.path.relpath(target, posixpath.dirname(report)) if "://" not in target else target
    line = f"- [{run_id}]({relative}): {summary}\n"
    header = f"\n## {section}\n\n"
    text = read_bytes(report).decode()
    before, found, after = text.partition(header)
    entries, next_header, rest = after.partition(NEXT_SECTION) if found else ("", "", "")
    kept = [entry for entry in entries.splitlines(keepends=True) if entry.strip() and f"[{run_id}]" not in entry]
    write_bytes_atomic(report, (before + header + "".join(kept) + line + next_header + rest).encode())
    return report
