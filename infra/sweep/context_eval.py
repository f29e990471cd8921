"""Reconstruction quality per held-out context, for bootstrap intervals over contexts.

The evaluation stream (infra.activations.stream) yields rows without saying which context they
came from, which is all the point estimates need; an interval needs the unit that varies
together, the context. This reads the held-out contexts' rows with their seq_id (the same rows
the stream reads: non-special positions of the held-out contexts), sums per context what explained
variance is built from, and resamples contexts (sae_core.bootstrap).
"""

from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import torch
from torch import Tensor

from infra.activations.split import SeqSelection
from infra.activations.store import activations_numpy, open_activations
from sae_core.base import SparseCoder
from sae_core.bootstrap import bootstrap_interval, explained_variance_statistic, point_estimate


def context_rows(harvest: str, hookpoint: str, held_out: SeqSelection) -> tuple[np.ndarray, np.ndarray]:
    """(seq_id_N, x_ND float32) of the non-special rows of the held-out contexts, in (seq_id, pos) order."""
    if held_out.complement:
        raise ValueError(f"{harvest}: context_rows reads held-out contexts, not {held_out.describe()}")
    # The seq_id filter is pushed down to row-group statistics, so shards without a held-out context are skipped.
    rows = ds.field("seq_id").isin(list(held_out.ids)) & ~ds.field("special")
    table = open_activations(harvest, hookpoint).to_table(columns=["seq_id", "pos", "activation"], filter=rows)
    if table.num_rows == 0:
        raise ValueError(f"{harvest} hookpoint {hookpoint}: no non-special rows in {held_out.describe()} to evaluate")
    # Sorted, so the rows of two hookpoints (a transcoder's input and target) pair up one to one.
    table = table.sort_by([("seq_id", "ascending"), ("pos", "ascending")])
    return table.column("seq_id").to_numpy(), activations_numpy(table).astype(np.float32)


@torch.no_grad()
def reconstruction_sums(sae: SparseCoder, seq_id_N: np.ndarray, x_ND: np.ndarray, batch_rows: int = 4096,
                        y_NO: np.ndarray | None = None) -> dict[str, Tensor]:
    """Per-context sums of x, ||x||^2, ||x - x_hat||^2 and row counts (float64, [C] / [C, D]).

    With targets y_NO (a transcoder), the sums are of y and ||y - prediction||^2 instead.
    """
    contexts, context_N = np.unique(seq_id_N, return_inverse=True)
    device = sae.W_dec.device
    num, d_in = len(contexts), (x_ND if y_NO is None else y_NO).shape[1]
    sums = {
        "sum_x": torch.zeros(num, d_in, dtype=torch.float64),
        "sum_x2": torch.zeros(num, dtype=torch.float64),
        "residual_ss": torch.zeros(num, dtype=torch.float64),
        "count": torch.zeros(num, dtype=torch.float64),
    }
    was_training = sae.training
    sae.eval()  # BatchTopK picks latents per batch in training, per token in eval
    try:
        for start in range(0, len(x_ND), batch_rows):
            x_BD = torch.from_numpy(x_ND[start : start + batch_rows]).to(device)
            index_B = torch.from_numpy(context_N[start : start + batch_rows]).long()
            if y_NO is None:
                out_BD, want_BD = sae.decode(sae.encode(x_BD)), x_BD
            else:
                out_BD, want_BD = sae.predict(x_BD), torch.from_numpy(y_NO[start : start + batch_rows]).to(device)
            residual_B = (out_BD.float() - want_BD).pow(2).sum(dim=-1).double().cpu()
            x64_BD = want_BD.double().cpu()
            sums["sum_x"].index_add_(0, index_B, x64_BD)
            sums["sum_x2"].index_add_(0, index_B, x64_BD.pow(2).sum(dim=-1))
            sums["residual_ss"].index_add_(0, index_B, residual_B)
            sums["count"].index_add_(0, index_B, torch.ones_like(residual_B))
    finally:
        if was_training:
            sae.train()
    return sums


def explained_variance_interval(sae: SparseCoder, harvest: str, hookpoint: str, held_out: SeqSelection,
                                target_hookpoint: str | None = None) -> dict[str, float]:
    """Explained variance over the held-out contexts (pooled mean) with its bootstrap interval over contexts.

    With a target_hookpoint: a transcoder's of the target from the input (1 - FVU of e.g. the MLP's
    output); an SAE's of the target, the activation it was trained on.
    """
    if target_hookpoint is None:
        sums = reconstruction_sums(sae, *context_rows(harvest, hookpoint, held_out))
    elif not sae.paired:
        sums = reconstruction_sums(sae, *context_rows(harvest, target_hookpoint, held_out))
    else:
        seq_id_N, x_ND = context_rows(harvest, hookpoint, held_out)
        sums = reconstruction_sums(sae, seq_id_N, x_ND, y_NO=context_rows(harvest, target_hookpoint, held_out)[1])
    low, high = bootstrap_interval(sums, explained_variance_statistic)
    return {
        "explained_variance_pooled": point_estimate(sums, explained_variance_statistic),
        "explained_variance_ci_low": low,
        "explained_variance_ci_high": high,
    }
