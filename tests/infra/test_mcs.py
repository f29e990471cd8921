"""MCS of decoder directions: features that persist into a larger dictionary match at cosine 1, split ones do not."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from infra.features.mcs import max_cosines, max_cosines_both_ways, mcs_section
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


def test_one_product_gives_both_directions_as_two_separate_matches():
    generator = torch.Generator().manual_seed(1)
    a_FD, b_GD = torch.randn(37, 12, generator=generator), torch.randn(53, 12, generator=generator)
    b_GD[5] = 3 * a_FD[20]  # an exact match, found from either side
    (cos_F, match_F), (cos_G, match_G) = max_cosines_both_ways(a_FD, b_GD, chunk=8)  # chunks of A: B's maxima run across them
    # The direct computation: every cosine at once, maxima along each axis.
    cos_FG = torch.nn.functional.normalize(a_FD, dim=1) @ torch.nn.functional.normalize(b_GD, dim=1).T
    assert torch.allclose(cos_F, cos_FG.max(dim=1).values, atol=1e-6) and torch.equal(match_F, cos_FG.max(dim=1).indices)
    assert torch.allclose(cos_G, cos_FG.max(dim=0).values, atol=1e-6) and torch.equal(match_G, cos_FG.max(dim=0).indices)
    assert match_G[5] == 20 and cos_G[5] == pytest.approx(1.0, abs=1e-6)
    one_way_G, one_way_match_G = max_cosines(b_GD, a_FD)
    assert torch.allclose(cos_G, one_way_G, atol=1e-6) and torch.equal(match_G, one_way_match_G)
