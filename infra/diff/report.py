"""The latent diff table (pandera-validated) and its histogram of relative decoder norms."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd  # noqa: E402
import pandera.errors  # noqa: E402
import pandera.pandas as pa  # noqa: E402
import torch  # noqa: E402

from infra.figures import png_bytes  # noqa: E402
from sae_core.diffing import CLASSES, classify_latents, decoder_cosine, per_source_activation_frequency, relative_decoder_norm  # noqa: E402


def latents_frame(W_dec_FMD: torch.Tensor, acts_BF: torch.Tensor, shared_band: tuple[float, float], exclusive_margin: float) -> pd.DataFrame:
    """One row per latent: relative norm (last source vs first), class, decoder cosine, frequency, norm shares."""
    last = W_dec_FMD.shape[1] - 1
    rel_F = relative_decoder_norm(W_dec_FMD, 0, last).cpu()
    frequency = per_source_activation_frequency(acts_BF, W_dec_FMD)
    density_F = frequency.density_F.cpu()
    labels = classify_latents(rel_F, shared_band, exclusive_margin)
    frame = pd.DataFrame(
        {
            "latent": range(W_dec_FMD.shape[0]),
            "relative_norm": rel_F.double().numpy(),
            "class": [label if alive else "dead" for label, alive in zip(labels, (density_F > 0).tolist(), strict=True)],
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
