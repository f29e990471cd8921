"""What each flow returns: the id and the URI of every output it wrote, so nothing downstream
(the demo flow, the CLI, a notebook) rebuilds a path from a string.

Prefect-free, like flows.specs. `outputs()` lists (label, uri) pairs, the main output first:
the CLI prints exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HarvestResult:
    """A committed, validated harvest."""

    harvest_id: str
    harvest: str
    """The harvest's folder: activations/hookpoint=*/part-*.parquet, tokens.parquet, manifest.json."""

    def outputs(self) -> list[tuple[str, str]]:
        return [("harvest", self.harvest)]


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: every grid point exported (or recorded as failed), tabulated and reported."""

    sweep_id: str
    report: str
    results: str
    """results.parquet: one row per grid point."""
    saes: str
    """The folder holding one SAELens-format directory per finished point (what the features stage reads)."""

    def outputs(self) -> list[tuple[str, str]]:
        return [("report", self.report), ("results", self.results), ("saes", self.saes)]


@dataclass(frozen=True)
class LayerSweepResult:
    """A finished layer sweep: one sweep per hookpoint (each as a sweep of that hookpoint alone would be), and their summary."""

    layers_id: str
    report: str
    """The summary report across layers, linking each layer's report."""
    results: str
    """results.parquet across layers: every layer's rows, with hookpoint, layer and sweep_id columns."""
    layers: dict[str, SweepResult] = field(default_factory=dict)
    """Each hookpoint's own sweep, in the spec's order."""

    def outputs(self) -> list[tuple[str, str]]:
        return [("layers report", self.report), ("layers results", self.results),
                *((f"report {hookpoint}", layer.report) for hookpoint, layer in self.layers.items())]


@dataclass(frozen=True)
class FeaturesResult:
    """The features stage's tables and browser."""

    features_id: str
    folder: str
    """The stage's folder: per-SAE tables, examples and details, the browser and the manifest."""
    browser: str
    manifest: str
    """_manifest.json: the stage's SAEs, their tables and Neuronpedia exports (written last)."""

    def outputs(self) -> list[tuple[str, str]]:
        return [("browser", self.browser), ("manifest", self.manifest)]


@dataclass(frozen=True)
class SteerResult:
    """Steered generations and ablations, with their report."""

    steer_id: str
    report: str
    generations: str

    def outputs(self) -> list[tuple[str, str]]:
        return [("report", self.report), ("generations", self.generations)]


@dataclass(frozen=True)
class DiffResult:
    """A crosscoder diff: the per-latent table and the report."""

    diff_id: str
    report: str
    latents: str
    """latents.parquet: one row per latent, its class, relative norm and latent-scaling ratios."""

    def outputs(self) -> list[tuple[str, str]]:
        return [("report", self.report), ("latents", self.latents)]


@dataclass(frozen=True)
class SyntheticDemoResult:
    """The synthetic demo's report."""

    report: str

    def outputs(self) -> list[tuple[str, str]]:
        return [("report", self.report)]


@dataclass(frozen=True)
class DemoResult:
    """The offline demo: its summary page and each stage's main output."""

    summary: str
    stages: dict[str, str] = field(default_factory=dict)

    def outputs(self) -> list[tuple[str, str]]:
        return [("demo summary", self.summary)]
