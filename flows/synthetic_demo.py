"""Offline demo: train a small grid of SAEs on synthetic activations with known features.

Runs anywhere with no model, no network and no GPU: `python -m flows.synthetic_demo`.
"""

from __future__ import annotations

from prefect import flow

from flows.results import SyntheticDemoResult
from flows.specs import SyntheticDemoSpec  # re-exported: the flow's parameter type
from infra.storage import absolute_root
from tasks.synthetic import train_synthetic_grid, write_demo_report


@flow(name="synthetic-demo", log_prints=True)
def synthetic_demo(spec: SyntheticDemoSpec = SyntheticDemoSpec()) -> SyntheticDemoResult:
    """Train the grid, then write the results table and report."""
    values = spec.model_dump()
    values["root"] = absolute_root(values["root"])
    records = train_synthetic_grid(values)
    report_uri = write_demo_report(values, records)
    for record in records:
        print(
            f"{record['sae_id']:<32} L0 {record['l0']:6.2f}  explained variance {record['explained_variance']:.3f}"
            f"  recovery {record['recovery']:.3f}"
        )
    print(f"report: {report_uri}")
    return SyntheticDemoResult(report=report_uri)


if __name__ == "__main__":
    synthetic_demo()
