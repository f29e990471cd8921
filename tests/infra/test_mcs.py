"""MCS of decoder directions: features that persist into a larger dictionary match at cosine 1, split ones do not."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from infra.features.mcs import max_cosines, mcs_section
from infra.sae_store import save_sae
from sae_core import SaeConfig, build_sae


def sae_with(W_dec_FD: torch.Tensor):
    sae = build_sae(SaeConfig(architecture="relu", d_in=W_dec_FD.shape[1], d_sae=W_dec_FD.shape[0]))
    with torch.no_grad():
        sae.W_dec.copy_(W_dec_FD / W_dec_FD.norm(dim=1, keepdim=True))
    return sae


def test_mcs_across_sizes(tmp_path):
    generator = torch.Generator().manual_seed(0)
    small_FD = torch.randn(8, 16, generator=generator)
    # The large SAE keeps the small one's first 6 directions and splits the last 2 into halves mixed with new ones.
    split_FD = torch.cat([small_FD[6:] + torch.randn(2, 16, generator=generator), small_FD[6:] - torch.randn(2, 16, generator=generator)])
    large_FD = torch.cat([small_FD[:6], split_FD, torch.randn(8, 16, generator=generator)])
    cos_F, match_F = max_cosines(small_FD, large_FD)
    assert torch.allclose(cos_F[:6], torch.ones(6), atol=1e-6) and match_F[:6].tolist() == list(range(6))
    assert (cos_F[6:] < 0.95).all()
    uris = {}
    for name, W in (("small", small_FD), ("large", large_FD)):
        uris[name] = save_sae(sae_with(W), str(tmp_path / name))
    markdown = mcs_section(str(tmp_path / "report"), uris)
    summary = pd.read_parquet(tmp_path / "report" / "mcs.parquet").set_index(["sae_a", "sae_b"])
    assert summary.loc[("small", "large"), "persisting_fraction"] == pytest.approx(6 / 8)
    assert summary.loc[("small", "large"), "mcs"] == pytest.approx(float(cos_F.mean()), abs=1e-6)
    assert summary.loc[("large", "small"), "mcs"] < summary.loc[("small", "large"), "mcs"]
    assert len(pd.read_parquet(tmp_path / "report" / "mcs_latents.parquet")) == 8 + 18
    assert (tmp_path / "report" / "plots" / "mcs.png").stat().st_size > 1000
    assert "## Decoder similarity across SAEs (MCS)" in markdown and "![mcs](plots/mcs.png)" in markdown
    assert mcs_section(str(tmp_path / "one"), {"small": uris["small"]}) == ""
