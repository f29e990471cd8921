"""Links from a saeflow sweep's report to what later stages built from its SAEs (feature browsers, steering runs).

The SAEs of a sweep live in {root}/saes/{sweep_id}/{sae_id} and its report in
{root}/evals/{sweep_id}/report.md. The report is the sweep's hub: each later stage keeps one
section ("## Feature browsers", "## Steering runs") of `- [run_id](target): summary` lines,
rewritten in place (a re-run replaces its own line; other lines, sections and text are kept),
and the sweep carries the sections over when it rewrites its report. The stages' own outputs
(a browser, a steering report) stay immutable, addressed by their ids.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from infra.storage import exists, join, read_bytes, write_bytes_atomic

LINK_SECTIONS = ("Feature browsers", "Steering runs")
ENTRY = "- ["


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


def _header(section: str) -> str:
    return f"\n## {section}\n\n"


def _split(text: str, section: str) -> tuple[str, list[str], str, bool]:
    """(text before the section's header, its entry lines, the text after them, whether it was found)."""
    before, found, after = text.partition(_header(section))
    if not found:
        return text, [], "", False
    lines = after.splitlines(keepends=True)
    count = 0
    while count < len(lines) and lines[count].startswith(ENTRY):
        count += 1
    return before, lines[:count], "".join(lines[count:]), True


def link_from_sweep_report(sae_uris: Iterable[str], section: str, run_id: str, target: str, summary: str) -> str | None:
    """Add (or refresh) the line `- [run_id](target): summary` in the sweep report's `section`; the report URI or None."""
    report = sweep_report_of(sae_uris)
    if report is None:
        return None
    relative = os.path.relpath(target, posixpath.dirname(report)) if "://" not in target else target
    line = f"{ENTRY}{run_id}]({relative}): {summary}\n"
    before, entries, after, _ = _split(read_bytes(report).decode(), section)
    kept = [entry for entry in entries if not entry.startswith(f"{ENTRY}{run_id}]")]
    write_bytes_atomic(report, (before + _header(section) + "".join(kept) + line + after).encode())
    return report


def carried_links(report: str) -> str:
    """The link sections of the report at `report` (nothing when it does not exist), for its rewrite to end with."""
    if not exists(report):
        return ""
    text = read_bytes(report).decode()
    carried = ""
    for section in LINK_SECTIONS:
        _, entries, _, found = _split(text, section)
        if found and entries:
            carried += _header(section) + "".join(entries)
    return carried
