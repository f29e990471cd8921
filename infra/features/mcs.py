"""Mean max cosine similarity (MCS) of decoder directions between the SAEs of a sweep.

For SAEs A and B, each latent of A gets its best cosine with any decoder row of B; MCS(A -> B) is
the mean over A's latents. Across dictionary sizes this says which features persist as the
dictionary grows (a small SAE's latent with a near-1 match in the large one) and which split
(a large SAE's latents that only half-match anything smaller). Not symmetric: both directions
are written. Per-latent table: mcs_latents.parquet; summary: mcs.parquet and a heatmap.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on workers / CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as arrow  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from infra.sae_store import load_sae  # noqa: E402
from infra.storage import join, write_bytes_atomic  # noqa: E402

PERSIST_COSINE = 0.9
"""A latent whose best match in the other SAE reaches this cosine counts as persisting there."""


def _unit_rows(W_FD: Tensor) -> Tensor:
    W_FD = W_FD.float()
    return W_FD / W_FD.norm(dim=1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def max_cosines(W_dec_A_FD: Tensor, W_dec_B_GD: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(best cosine [F], index of the best latent of B [F]) for each decoder row of A (row maxima only)."""
    a_FD, b_GD = _unit_rows(W_dec_A_FD), _unit_rows(W_dec_B_GD)
    values, indices = [], []
    for start in range(0, len(a_FD), chunk):
        best = (a_FD[start : start + chunk] @ b_GD.T).max(dim=1)
        values.append(best.values), indices.append(best.indices)
    return torch.cat(values), torch.cat(indices)


@torch.no_grad()
def max_cosines_both_ways(W_dec_A_FD: Tensor, W_dec_B_GD: Tensor, chunk: int = 4096) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((best cosine [F], its latent of B [F]) for A's rows, (best cosine [G], its latent of A [G]) for B's rows).

    One [F, G] cosine product serves both directions (its row maxima and its column maxima): a sweep's
    report matches every ordered pair of SAEs, and this product is most of its time at 32x on a CPU."""
    a_FD, b_GD = _unit_rows(W_dec_A_FD), _unit_rows(W_dec_B_GD)
    values_A, indices_A = [], []
    best_B_G = torch.full((len(b_GD),), -torch.inf)
    match_B_G = torch.zeros(len(b_GD), dtype=torch.long)
    for start in range(0, len(a_FD), chunk):
        cos_CG = a_FD[start : start + chunk] @ b_GD.T
        rows = cos_CG.max(dim=1)
        values_A.append(rows.values), indices_A.append(rows.indices)
        columns = cos_CG.max(dim=0)
        better_G = columns.values > best_B_G  # strict: a tie keeps the earlier latent of A, as one max over all rows would
        best_B_G = torch.where(better_G, columns.values, best_B_G)
        match_B_G = torch.where(better_G, columns.indices + start, match_B_G)
    return (torch.cat(values_A), torch.cat(indices_A)), (best_B_G, match_B_G)


def _pair_rows(a: str, b: str, d_sae_a: int, d_sae_b: int, cos_F: Tensor, match_F: Tensor) -> tuple[dict, pd.DataFrame]:
    summary = {"sae_a": a, "sae_b": b, "d_sae_a": d_sae_a, "d_sae_b": d_sae_b, "mcs": float(cos_F.mean()),
               "persisting_fraction": float((cos_F >= PERSIST_COSINE).float().mean())}
    return summary, pd.DataFrame({"sae_a": a, "latent": range(d_sae_a), "sae_b": b, "max_cosine": cos_F.numpy(),
                                  "best_match": match_F.numpy().astype("int32")})


def mcs_tables(saes: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary: one row per ordered pair, per latent: sae_a, latent, sae_b, max_cosine, best_match) for {name: uri}."""
    decoders = {name: load_sae(uri).W_dec.detach() for name, uri in saes.items()}
    names = list(decoders)
    pairs: dict[tuple[str, str], tuple[dict, pd.DataFrame]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:  # each unordered pair once: its product gives A -> B and B -> A
            (cos_F, match_F), (cos_G, match_G) = max_cosines_both_ways(decoders[a], decoders[b])
            pairs[a, b] = _pair_rows(a, b, len(decoders[a]), len(decoders[b]), cos_F, match_F)
            pairs[b, a] = _pair_rows(b, a, len(decoders[b]), len(decoders[a]), cos_G, match_G)
    ordered = [pairs[a, b] for a in names for b in names if a != b]
    summary = pd.DataFrame([row for row, _ in ordered])
    return summary, pd.concat([frame for _, frame in ordered], ignore_index=True) if ordered else pd.DataFrame()


def mcs_heatmap(summary: pd.DataFrame) -> bytes:
    """PNG heatmap of MCS(row -> column)."""
    names = sorted(set(summary["sae_a"]), key=lambda n: (int(summary.loc[summary["sae_a"] == n, "d_sae_a"].iloc[0]), n))
    matrix = summary.pivot(index="sae_a", columns="sae_b", values="mcs").reindex(index=names, columns=names)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 1.0 * len(names) + 2))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("matched against (B)"), ax.set_ylabel("latents of (A)")
    fig.colorbar(image, label="mean max cosine A -> B")
    fig.tight_layout()
    sink = io.BytesIO()
    fig.savefig(sink, format="png", dpi=110)
    plt.close(fig)
    return sink.getvalue()


def mcs_section(folder: str, saes: dict[str, str]) -> str:
    """Write mcs.parquet, mcs_latents.parquet and plots/mcs.png under folder; returns the report's markdown section."""
    if len(saes) < 2:
        return ""
    summary, latents = mcs_tables(saes)
    for name, frame in (("mcs.parquet", summary), ("mcs_latents.parquet", latents)):
        sink = io.BytesIO()
        pq.write_table(arrow.Table.from_pandas(frame, preserve_index=False), sink, compression="zstd")
        write_bytes_atomic(join(folder, name), sink.getvalue())
    write_bytes_atomic(join(folder, "plots", "mcs.png"), mcs_heatmap(summary))
    table = summary.sort_values(["d_sae_a", "sae_a", "d_sae_b", "sae_b"]).round(4)
    return (f"\n## Decoder similarity across SAEs (MCS)\n\nFor each latent of A its best cosine with any decoder row of B, "
            f"averaged over A (MCS); persisting_fraction: latents of A with a match >= {PERSIST_COSINE} in B. Small -> large "
            f"shows which features persist as the dictionary grows; large -> small which ones split.\n\n"
            f"{table.to_markdown(index=False)}\n\n![mcs](plots/mcs.png)\n\nPer latent: `{join(folder, 'mcs_latents.parquet')}`\n")
