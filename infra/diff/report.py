"""The latent diff table (pandera-validated), its histogram of relative decoder norms, the latent-scaling
scatter, and (for a trajectory of more than two checkpoints) when each latent first appears."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd  # noqa: E402
import pandera.errors  # noqa: E402
import pandera.pandas as pa  # noqa: E402
import torch  # noqa: E402

from infra.figures import png_bytes  # noqa: E402
from sae_core.diffing import (  # noqa: E402
    CLASSES,
    NORM_CLASSES,
    LatentClasses,
    decoder_cosine,
    first_present_source,
    per_source_activation_frequency,
    relative_decoder_norm,
)


def latents_frame(W_dec_FMD: torch.Tensor, acts_BF: torch.Tensor, classes: LatentClasses, presence_fraction: float) -> pd.DataFrame:
    """One row per latent: relative norm (last source vs first), classes, beta ratios, cosine, frequency, norm shares."""
    last = W_dec_FMD.shape[1] - 1
    rel_F = relative_decoder_norm(W_dec_FMD, 0, last).cpu()
    frequency = per_source_activation_frequency(acts_BF, W_dec_FMD)
    density_F = frequency.density_F.cpu()
    frame = pd.DataFrame(
        {
            "latent": range(W_dec_FMD.shape[0]),
            "relative_norm": rel_F.double().numpy(),
            "class": classes.final_class,
            "norm_class": classes.norm_class,
            "beta_ratio_reconstruction": classes.ratio_reconstruction_F.double().numpy(),
            "beta_ratio_error": classes.ratio_error_F.double().numpy(),
            "first_present_source": first_present_source(W_dec_FMD, presence_fraction).cpu().numpy().astype("int32"),
            "decoder_cosine": decoder_cosine(W_dec_FMD, 0, last).cpu().double().numpy(),
            "frequency": density_F.double().numpy(),
        }
    )
    for source in range(W_dec_FMD.shape[1]):
        frame[f"norm_share_source{source}"] = frequency.norm_share_FM[:, source].cpu().double().numpy()
        frame[f"frequency_source{source}"] = frequency.attributed_density_FM[:, source].cpu().double().numpy()
    frame["latent"] = frame["latent"].astype("int32")
    return validate_latents(frame, W_dec_FMD.shape[0])


def latents_schema(d_sae: int) -> pa.DataFrameSchema:
    """pandera schema of latents.parquet."""
    unit = pa.Check.in_range(0.0, 1.0)
    return pa.DataFrameSchema(
        {
            "latent": pa.Column("int32", pa.Check.in_range(0, d_sae - 1), unique=True),
            "relative_norm": pa.Column(float, unit, nullable=True),
            "class": pa.Column(str, pa.Check.isin([*CLASSES, "dead"])),
            "norm_class": pa.Column(str, pa.Check.isin([*NORM_CLASSES, "dead"])),
            "beta_ratio_reconstruction": pa.Column(float, nullable=True),
            "beta_ratio_error": pa.Column(float, nullable=True),
            "first_present_source": pa.Column("int32", pa.Check.ge(-1)),
            "decoder_cosine": pa.Column(float, pa.Check.in_range(-1.0 - 1e-6, 1.0 + 1e-6)),
            "frequency": pa.Column(float, unit),
            r"norm_share_source\d+": pa.Column(float, unit, regex=True),
            r"frequency_source\d+": pa.Column(float, unit, regex=True),
        },
        strict=True,
        checks=pa.Check(lambda df: len(df) == d_sae, error=f"exactly {d_sae} rows (one per latent)"),
        name="crosscoder latents",
    )


def validate_latents(frame: pd.DataFrame, d_sae: int) -> pd.DataFrame:
    """Validate a latents table; ValueError names the column and the failing check."""
    try:
        return latents_schema(d_sae).validate(frame, lazy=False)
    except pandera.errors.SchemaError as error:
        raise ValueError(f"latents table: column {getattr(error.schema, 'name', '?')!r} breaks {error.check}") from error


def relative_norm_histogram(frame: pd.DataFrame, models: list[str], shared_band: tuple[float, float], exclusive_margin: float) -> bytes:
    """PNG histogram of live latents' relative decoder norms, class boundaries marked."""
    live = frame[frame["class"] != "dead"]["relative_norm"].dropna()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    axes.hist(live, bins=50, range=(0, 1), color="#4477aa")
    for boundary in (exclusive_margin, *shared_band, 1 - exclusive_margin):
        axes.axvline(boundary, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel(f"relative decoder norm  ||d_B|| / (||d_A|| + ||d_B||)\nA = {models[0]}   B = {models[-1]}", fontsize=8)
    axes.set_ylabel("live latents")
    axes.set_title("Crosscoder latents: A-only (left), shared (middle), B-only (right)", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)


def latent_scaling_scatter(frame: pd.DataFrame, models: list[str], exclusive_ratio: float) -> bytes:
    """PNG scatter of the beta ratios of latents the decoder norms call exclusive, coloured by final class."""
    examined = frame[frame["norm_class"].isin(["a_only", "b_only"])].dropna(subset=["beta_ratio_error", "beta_ratio_reconstruction"])
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    colours = {"a_only": "#ee6677", "b_only": "#4477aa", "shared": "#228833", "spurious": "#ccbb44"}
    for name, group in examined.groupby("class"):
        axes.scatter(group["beta_ratio_reconstruction"], group["beta_ratio_error"], s=10, label=f"{name} ({len(group)})",
                     color=colours.get(name, "grey"))
    axes.axvline(exclusive_ratio, color="grey", linestyle="--", linewidth=0.8)
    axes.axhline(exclusive_ratio, color="grey", linestyle="--", linewidth=0.8)
    axes.set_xlabel("nu_r = beta(other source) / beta(own) on the reconstruction")
    axes.set_ylabel("nu_eps = ... on the reconstruction error")
    axes.set_title(f"Latent scaling of norm-exclusive latents (A = {models[0]}, B = {models[-1]})", fontsize=8)
    if len(examined):
        axes.legend(fontsize=8)
    figure.tight_layout()
    return png_bytes(figure)


def first_present_histogram(frame: pd.DataFrame, models: list[str]) -> bytes:
    """PNG bar chart: how many live latents first appear at each checkpoint of a trajectory."""
    live = frame[frame["class"] != "dead"]
    counts = live["first_present_source"].value_counts().reindex(range(len(models)), fill_value=0)
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    axes.bar(range(len(models)), counts.values, color="#4477aa")
    axes.set_xticks(range(len(models)), [m.rstrip("/").split("/")[-1][:18] for m in models], fontsize=7, rotation=20)
    axes.set_ylabel("live latents")
    axes.set_title("First checkpoint where each latent's decoder is present", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)
