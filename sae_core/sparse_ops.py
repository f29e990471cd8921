"""Sparse training kernels: an SAE step that touches only the latents that fire.

A plain TopK training step multiplies a [B, F] matrix by the dictionary six times: the
encoder forward, the decoder forward, the decoder's two backward products (latents and W_dec)
and the encoder's two backward products (W_enc and the centred input, only to sum it for
b_dec). Only the encoder forward needs the whole dictionary: after it, a TopK SAE has k
active latents per token, and every other product can be computed from those k indices.

- ``PreActivations`` runs the encoder once without an autograd graph, then hands out
  differentiable entries: ``at(rows, cols)`` (gradient into W_enc by a sparse product, into
  b_enc by an index-add, into b_dec by one vector-matrix product) or ``dense()`` (one dense
  product for W_enc; still no [B, D] gradient for the centred input).
- ``decode_active`` decodes from (row, latent, value) triples with ``F.embedding_bag``
  (gather and sum of k decoder rows per token); its backward is a sparse product for W_dec and
  a product sampled on the entries' pattern for the values (no sort of the indices).
- ``Active.to_sparse`` hands the trainer the activations as a CSR matrix: dead-latent tracking
  and L0 read the entries, never a dense [B, F] matrix.

Where too many latents are active the dense product is faster again (a ReLU SAE early in
training fires on half its latents); both functions switch to the dense product above
``SPARSE_MAX_DENSITY``.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

SPARSE_MAX_DENSITY = 0.1
"""Above this fraction of active (token, latent) pairs the dense products are used instead.

Measured by bench/sparse_kernels.py (one encode-select-decode step, d_in 576, 4,608 latents,
batch 1,024, 2-core CPU, two runs): the sparse kernels are 3.3-3.4x faster at 0.7% density
(TopK k=32), 1.25-1.5x at 8.7%, 1.1-1.2x at 13% and slower (0.77-0.9x) at 19.5%.
"""


class Active(NamedTuple):
    """The active latents of a batch as coordinate triples, rows ascending."""

    rows_N: Tensor
    """Token (row of the batch) of each active entry, sorted ascending."""
    cols_N: Tensor
    """Latent index of each active entry."""
    vals_N: Tensor
    """Activation of each entry (carries the gradient)."""
    batch: int
    """Number of tokens B."""
    width: int
    """Number of latents F."""

    @property
    def density(self) -> float:
        """Fraction of the [B, F] activation matrix that is stored."""
        return self.rows_N.numel() / max(1, self.batch * self.width)

    def to_dense(self) -> Tensor:
        """Detached dense [B, F] activations, for bookkeeping (firing, L0) only."""
        acts_BF = self.vals_N.new_zeros((self.batch, self.width))
        return acts_BF.index_put_((self.rows_N, self.cols_N), self.vals_N.detach())

    def to_sparse(self) -> Tensor:
        """Detached [B, F] activations as a CSR matrix: firing and L0 read it without a dense pass."""
        return _csr(_row_starts(self.rows_N, self.batch), self.cols_N, self.vals_N.detach(), self.width)

    def to_dense_differentiable(self) -> Tensor:
        """Dense [B, F] activations that pass the gradient back to vals_N."""
        acts_BF = self.vals_N.new_zeros((self.batch, self.width))
        return acts_BF.index_put((self.rows_N, self.cols_N), self.vals_N)

    @classmethod
    def from_topk(cls, top_idx_BK: Tensor, pre: PreActivations) -> Active:
        """The k chosen latents of every token, with their ReLU'd pre-activations as values."""
        batch, k = top_idx_BK.shape
        rows_N = torch.arange(batch, device=top_idx_BK.device).repeat_interleave(k)
        cols_N = top_idx_BK.reshape(-1)
        return cls(rows_N, cols_N, pre.at(rows_N, cols_N).relu(), batch, pre.pre_BF.shape[1])

    @classmethod
    def from_flat(cls, flat_idx_N: Tensor, pre: PreActivations) -> Active:
        """Entries chosen by index into the flattened [B * F] pre-activations (any order)."""
        width = pre.pre_BF.shape[1]
        flat_idx_N = flat_idx_N.sort().values  # rows ascending: embedding_bag needs contiguous bags
        rows_N, cols_N = flat_idx_N // width, flat_idx_N % width
        return cls(rows_N, cols_N, pre.at(rows_N, cols_N).relu(), pre.pre_BF.shape[0], width)


class PreActivations:
    """Encoder pre-activations (x - b_dec) W_enc + b_enc of a batch, computed once without a graph."""

    def __init__(self, xs_BD: Tensor, b_dec_D: Tensor, W_enc_DF: Tensor, b_enc_F: Tensor) -> None:
        self.inputs = (xs_BD, b_dec_D, W_enc_DF, b_enc_F)
        with torch.no_grad():
            self.pre_BF = torch.addmm(b_enc_F, xs_BD - b_dec_D, W_enc_DF)
        """The values, detached: read them to choose latents."""

    def at(self, rows_N: Tensor, cols_N: Tensor) -> Tensor:
        """Differentiable pre-activations of the chosen (row, latent) entries."""
        if rows_N.numel() > SPARSE_MAX_DENSITY * self.pre_BF.numel():
            return self.dense()[rows_N, cols_N]
        return _SparseEncode.apply(self.pre_BF, rows_N, cols_N, *self.inputs)

    def dense(self) -> Tensor:
        """All pre-activations [B, F], differentiable."""
        return _DenseEncode.apply(self.pre_BF, *self.inputs)


def decode_active(active: Active, W_dec_FD: Tensor) -> Tensor:
    """sum over active entries of value * decoder row, per token: [B, D] (no b_dec)."""
    if active.density > SPARSE_MAX_DENSITY:
        return active.to_dense_differentiable().to(W_dec_FD.dtype) @ W_dec_FD
    crow_B1 = _row_starts(active.rows_N, active.batch)
    return _SparseDecode.apply(active.rows_N, crow_B1, active.cols_N, active.vals_N.to(W_dec_FD.dtype), W_dec_FD)


def _row_starts(rows_N: Tensor, batch: int) -> Tensor:
    """[B + 1] start of each row's entries in rows_N (sorted): CSR row pointers, embedding_bag offsets."""
    crow_B1 = rows_N.new_zeros(batch + 1)
    torch.cumsum(torch.bincount(rows_N, minlength=batch), 0, out=crow_B1[1:])
    return crow_B1


def _csr(crow_B1: Tensor, cols_N: Tensor, vals_N: Tensor, width: int) -> Tensor:
    """The [B, F] CSR matrix of the entries (no copy of the index arrays, no invariant checks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CSR support is in beta": the two products used here are stable
        return torch.sparse_csr_tensor(crow_B1, cols_N, vals_N, (len(crow_B1) - 1, width), check_invariants=False)


class _SparseDecode(torch.autograd.Function):
    """embedding_bag's forward with a cheaper backward: a sampled product for the values and a sparse
    product for W_dec (embedding_bag's own backward sorts the indices and runs two slower kernels:
    11.5 ms against 7.3 ms for this one at 8x, batch 1,024, one thread)."""

    @staticmethod
    def forward(ctx, rows_N, crow_B1, cols_N, vals_N, W_dec_FD):  # noqa: D102
        ctx.save_for_backward(rows_N, crow_B1, cols_N, vals_N, W_dec_FD)
        return F.embedding_bag(cols_N, W_dec_FD, crow_B1[:-1], mode="sum", per_sample_weights=vals_N)

    @staticmethod
    def backward(ctx, grad_BD):  # noqa: D102
        rows_N, crow_B1, cols_N, vals_N, W_dec_FD = ctx.saved_tensors
        grad_BD = grad_BD.contiguous()
        width = W_dec_FD.shape[0]
        grad_vals = grad_W_dec = None
        if ctx.needs_input_grad[3]:
            # d/d val of (b, f) = grad[b] . W_dec[f]: a product sampled on the entries' pattern.
            pattern = _csr(crow_B1, cols_N, vals_N, width)
            grad_vals = torch.sparse.sampled_addmm(pattern, grad_BD, W_dec_FD.t(), beta=0.0).values()
        if ctx.needs_input_grad[4]:
            # dL/dW_dec [F, D] = A^T grad with A the sparse [B, F] activations (COO measured faster than CSR here).
            a_FB = torch.sparse_coo_tensor(torch.stack([cols_N, rows_N]), vals_N, (width, len(crow_B1) - 1),
                                           check_invariants=False)
            grad_W_dec = torch.sparse.mm(a_FB, grad_BD)
        return None, None, None, grad_vals, grad_W_dec


def _grad_bias_path(grad_b_enc_F: Tensor, W_enc_DF: Tensor) -> Tensor:
    """Gradient of b_dec: pre = (x - b_dec) W_enc + b_enc, so d/db_dec = -W_enc summed gradient."""
    return -(W_enc_DF @ grad_b_enc_F.to(W_enc_DF.dtype))


class _SparseEncode(torch.autograd.Function):
    """Selected entries of (x - b_dec) W_enc + b_enc with a backward that touches only them."""

    @staticmethod
    def forward(ctx, pre_BF, rows_N, cols_N, xs_BD, b_dec_D, W_enc_DF, b_enc_F):  # noqa: D102
        ctx.save_for_backward(rows_N, cols_N, xs_BD, b_dec_D, W_enc_DF)
        ctx.width = pre_BF.shape[1]
        return pre_BF[rows_N, cols_N]

    @staticmethod
    def backward(ctx, grad_N):  # noqa: D102
        rows_N, cols_N, xs_BD, b_dec_D, W_enc_DF = ctx.saved_tensors
        batch, width = xs_BD.shape[0], ctx.width
        grad_N = grad_N.to(W_enc_DF.dtype)
        grad_xs = grad_b_dec = grad_W_enc = grad_b_enc = None
        grad_b_enc_F = torch.zeros(width, dtype=grad_N.dtype, device=grad_N.device).index_add_(0, cols_N, grad_N)
        if ctx.needs_input_grad[5]:
            # dL/dW_enc^T [F, D] = G^T (x - b_dec) with G the sparse [B, F] gradient.
            g_FB = torch.sparse_coo_tensor(torch.stack([cols_N, rows_N]), grad_N, (width, batch), check_invariants=False)
            grad_W_enc = torch.sparse.mm(g_FB, (xs_BD - b_dec_D).to(grad_N.dtype)).t()
        if ctx.needs_input_grad[6]:
            grad_b_enc = grad_b_enc_F
        if ctx.needs_input_grad[4]:
            grad_b_dec = _grad_bias_path(grad_b_enc_F, W_enc_DF)
        if ctx.needs_input_grad[3]:
            g_BF = torch.sparse_coo_tensor(torch.stack([rows_N, cols_N]), grad_N, (batch, width), check_invariants=False)
            grad_xs = torch.sparse.mm(g_BF, W_enc_DF.t())
        return None, None, None, grad_xs, grad_b_dec, grad_W_enc, grad_b_enc


class _DenseEncode(torch.autograd.Function):
    """All of (x - b_dec) W_enc + b_enc; b_dec's gradient without the [B, D] input gradient."""

    @staticmethod
    def forward(ctx, pre_BF, xs_BD, b_dec_D, W_enc_DF, b_enc_F):  # noqa: D102
        ctx.save_for_backward(xs_BD, b_dec_D, W_enc_DF)
        return pre_BF.clone()

    @staticmethod
    def backward(ctx, grad_BF):  # noqa: D102
        xs_BD, b_dec_D, W_enc_DF = ctx.saved_tensors
        grad_xs = grad_b_dec = grad_W_enc = grad_b_enc = None
        grad_b_enc_F = grad_BF.sum(dim=0)
        if ctx.needs_input_grad[3]:
            grad_W_enc = (xs_BD - b_dec_D).to(grad_BF.dtype).t() @ grad_BF
        if ctx.needs_input_grad[4]:
            grad_b_enc = grad_b_enc_F
        if ctx.needs_input_grad[2]:
            grad_b_dec = _grad_bias_path(grad_b_enc_F, W_enc_DF)
        if ctx.needs_input_grad[1]:
            grad_xs = grad_BF @ W_enc_DF.t().to(grad_BF.dtype)
        return None, grad_xs, grad_b_dec, grad_W_enc, grad_b_enc
