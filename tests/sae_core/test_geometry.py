"""Shared initialisation and constraint helpers."""

from __future__ import annotations

import math

import pytest
import torch

from sae_core.geometry import geometric_median, input_scale_for, matched_random_perturbation, normalize_rows_, remove_parallel_gradient_


def test_geometric_median_ignores_outliers():
    x_ND = torch.randn(200, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    x_ND[:5] = 1000.0  # a few BOS-like huge tokens
    assert geometric_median(x_ND).norm() < 0.5
    assert x_ND.mean(dim=0).norm() > 20


def test_input_scale_brings_mean_norm_to_sqrt_d():
    x_ND = 37.0 * torch.randn(500, 9, generator=torch.Generator().manual_seed(1))
    scaled_ND = x_ND * input_scale_for(x_ND)
    assert math.isclose(float(scaled_ND.norm(dim=1).mean()), 3.0, rel_tol=1e-5)


def test_parallel_gradient_removed_and_rows_renormalised():
    W_FD = torch.nn.Parameter(torch.randn(6, 5))
    normalize_rows_(W_FD)
    W_FD.grad = torch.randn(6, 5)
    remove_parallel_gradient_(W_FD)
    assert torch.allclose((W_FD.grad * W_FD).sum(dim=1), torch.zeros(6), atol=1e-6)
    assert torch.allclose(W_FD.norm(dim=1), torch.ones(6), atol=1e-6)


def test_matched_perturbation_edge_rows():
    x_ND = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    e_ND = torch.tensor([[-1.5, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    noise_ND = matched_random_perturbation(x_ND, e_ND, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise_ND[0], e_ND[0])  # an error along x has only one match: itself
    assert noise_ND[1].norm() == pytest.approx(2.0)  # x = 0: any direction of the error's norm
    assert torch.equal(noise_ND[2], torch.zeros(4))  # no error, no noise
