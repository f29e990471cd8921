"""Tasks of the synthetic-activation demo: train a grid of SAEs on known features and report."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from infra.ids import spec_id
from infra.storage import join, write_bytes_atomic, write_json_atomic
from infra.sweep.synthetic import recovery_of, synthetic_members, train_synthetic_group


@task(retries=2, retry_delay_seconds=[1, 5], log_prints=True)
def train_synthetic_grid(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Train every grid point of the spec on one shared synthetic stream; returns result records."""
    members = synthetic_members(spec)
    records = train_synthetic_group(spec, members)
    for record in records:
        record["recovery"] = recovery_of(spec, record["sae_uri"])
    return records


@task(retries=2, retry_delay_seconds=[1, 5])
def write_demo_report(spec: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """Write results.json and a markdown report next to the SAEs; returns the report's URI."""
    run_id = spec_id("synthetic", spec)
    folder = join(spec["root"], "demo", run_id)
    write_json_atomic(join(folder, "results.json"), {"spec": spec, "results": records})
    header = "| sae | arch | L0 | explained var | dead frac | recovery | device s |\n|---|---|---|---|---|---|---|\n"
    rows = "".join(
        f"| {r['sae_id']} | {r['architecture']} | {r['l0']:.2f} | {r['explained_variance']:.3f} | "
        f"{r['dead_fraction']:.3f} | {r['recovery']:.3f} | {r['device_seconds']:.1f} |\n"
        for r in records
    )
    markdown = f"# Synthetic SAE demo `{run_id}`\n\nTrue features: {spec['num_features']} in d={spec['d']}.\n\n{header}{rows}"
    report_uri = join(folder, "report.md")
    write_bytes_atomic(report_uri, markdown.encode())
    create_markdown_artifact(markdown=markdown, key="synthetic-demo-report", description="SAEs trained on synthetic features")
    return report_uri
