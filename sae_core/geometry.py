"""Pieces every architecture shares: decoder constraints, initialisation from data, input scaling."""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def normalize_rows_(W_dec_FD: Tensor) -> None:
    """Rescale each decoder row (one latent's direction) to unit norm, in place."""
    W_dec_FD.div_(W_dec_FD.norm(dim=1, keepdim=True).clamp_min(1e-8))


@torch.no_grad()
def remove_parallel_gradient_(W_dec_FD: Tensor) -> None:
    """Drop the gradient component along each unit decoder row.

    With rows renormalised after every step, the parallel component only changes a row's
    norm, which the renormalisation undoes; removing it keeps Adam's moments about the
    direction alone (Bricken et al. 2023, "Towards Monosemanticity").
    """
    grad_FD = W_dec_FD.grad
    if grad_FD is None:
        return
    # Two passes and one [F] temporary, not four passes and two [F, D] temporaries.
    parallel_F1 = torch.linalg.vecdot(grad_FD, W_dec_FD).unsqueeze(1)
    grad_FD.addcmul_(parallel_F1, W_dec_FD, value=-1.0)


def random_directions(num: int, dim: int, generator: torch.Generator, norm: float = 1.0) -> Tensor:
    """Rows drawn uniformly on the sphere of the given radius, shape [num, dim]."""
    rows_ND = torch.randn(num, dim, generator=generator)
    return rows_ND * (norm / rows_ND.norm(dim=1, keepdim=True).clamp_min(1e-8))


@torch.no_grad()
def geometric_median(x_ND: Tensor, max_iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Point minimising the summed Euclidean distance to the rows (Weiszfeld's algorithm).

    A robust centre for b_dec: unlike the mean it ignores a few huge-norm outlier tokens
    (e.g. BOS), as used by Bricken et al. 2023.
    """
    x_ND = x_ND.float()
    median_D = x_ND.mean(dim=0)
    for _ in range(max_iters):
        weights_N = 1.0 / (x_ND - median_D).norm(dim=1).clamp_min(1e-8)
        updated_D = (weights_N[:, None] * x_ND).sum(dim=0) / weights_N.sum()
        shift = (updated_D - median_D).norm()
        median_D = updated_D
        if shift <= tol * max(1.0, median_D.norm().item()):
            break
    return median_D


@torch.no_grad()
def input_scale_for(x_ND: Tensor) -> float:
    """Factor that brings the mean token norm to sqrt(d_in).

    Makes sparsity coefficients and learning rates transfer across models and layers whose
    residual norms differ by orders of magnitude (Anthropic, Apr 2024 update).
    """
    mean_norm = x_ND.float().norm(dim=1).mean().item()
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise ValueError(f"cannot scale inputs: mean activation norm is {mean_norm}")
    return math.sqrt(x_ND.shape[1]) / mean_norm


def matched_random_perturbation(x_ND: Tensor, e_ND: Tensor, generator: torch.Generator) -> Tensor:
    """Random e' with ||e'|| = ||e|| and cos(e', x) = cos(e, x) per row, random otherwise.

    The baseline an SAE's error e is compared with (Gurnee 2024): noise of the same size and
    angle to the activation x, so what remains is whether e's direction hurts the model more.
    """
    x_ND, e_ND = x_ND.float(), e_ND.float()
    # u = 0 where x = 0: cos(e, x) is undefined there and e' is then any direction of norm ||e||.
    u_ND = x_ND / x_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    along_N1 = (e_ND * u_ND).sum(dim=-1, keepdim=True)
    ortho_norm_N1 = (e_ND.pow(2).sum(dim=-1, keepdim=True) - along_N1.pow(2)).clamp_min(0).sqrt()
    # Noise drawn on the CPU generator, so a seed gives the same baseline on CPU and CUDA.
    r_ND = torch.randn(x_ND.shape, generator=generator, dtype=torch.float32).to(x_ND.device)
    r_ND = r_ND - (r_ND * u_ND).sum(dim=-1, keepdim=True) * u_ND
    r_ND = r_ND / r_ND.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return along_N1 * u_ND + ortho_norm_N1 * r_ND
