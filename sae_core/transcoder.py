"""Transcoders: sparse dictionaries that read one activation and predict another.

A transcoder stands in for an MLP (Dunefsky, Chlenski & Nanda 2024): its latents are read from
the MLP's input (hook_mlp_in) and written into the MLP's output space (hook_mlp_out), so a
latent is an input -> output computation, not a direction of one activation. A skip transcoder
(Paulo, Shabalin & Belrose 2025) adds a linear path x W_skip^T, W_skip starting at zero, that
carries the MLP's linear part and leaves the latents the rest.

The sparsity rule is an SAE's own: each class below is TranscoderMixin over one SAE class
(TopK, BatchTopK, ReLU + decoder-norm-weighted L1), so latents(), sparsity_losses(), AuxK and the
sparse training kernels are reused unchanged. What differs from an SAE:

- shapes, with SAELens's names: W_enc [d_in, F], W_dec [F, d_out], b_dec [d_out], W_skip [d_out, d_in];
- the encoder reads its input uncentred, pre = x W_enc + b_enc: b_dec lives in the output space
  (SAELens's transcoders do the same; apply_b_dec_to_input is refused there);
- two scales, each the SAE convention (mean norm sqrt(width)): input_scale for x, target_scale
  for y. The loss is the MSE in the target's scaled units, FVU is the target's, and AuxK fits
  the target's residual;
- forward takes (x, y); predict(x) is the prediction in model units (decode(encode(x)) plus the skip path).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sae_core.base import SaeOutput
from sae_core.batchtopk import BatchTopKSae
from sae_core.config import SaeConfig
from sae_core.geometry import geometric_median, input_scale_for, random_directions
from sae_core.relu import ReluSae
from sae_core.topk import TopKSae


class TranscoderMixin:
    """Turns an SAE class into a transcoder of the same sparsity; put it first in the bases."""

    paired: ClassVar[bool] = True
    """Trains on (input, target) pairs (sae_core.trainer)."""

    def __init__(self, cfg: SaeConfig) -> None:
        if cfg.kind not in ("transcoder", "skip_transcoder"):
            raise ValueError(f"{type(self).__name__} needs kind='transcoder' or 'skip_transcoder', got {cfg.kind!r}")
        super().__init__(cfg)
        d_in, d_out, d_sae = cfg.d_in, cfg.d_out, cfg.d_sae
        generator = torch.Generator().manual_seed(cfg.seed)
        row_norm = 1.0 if self.unit_norm_decoder else cfg.decoder_init_norm
        # Input and output are different spaces, so the SAE's "encoder = decoder transpose" start
        # means nothing here: an independent random encoder, columns of norm encoder_init_scale.
        self.W_dec = nn.Parameter(random_directions(d_sae, d_out, generator, norm=row_norm))
        # .T.clone() keeps W_enc column-major, the layout the SAE's (and the sparse kernels') W_enc has.
        self.W_enc = nn.Parameter(random_directions(d_sae, d_in, generator).T.clone() * cfg.encoder_init_scale)
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        if cfg.kind == "skip_transcoder":
            self.W_skip = nn.Parameter(torch.zeros(d_out, d_in))  # zero: training starts as the plain transcoder
        self.register_buffer("target_scale", torch.tensor(1.0))
        # The sparse kernels subtract a centre from the input; a transcoder's is zero (never trained, never saved).
        self.register_buffer("no_centre", torch.zeros(d_in), persistent=False)

    @property
    def has_skip(self) -> bool:
        """Whether the linear skip path exists."""
        return self.cfg.kind == "skip_transcoder"

    # -- initialisation ------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor, y_NO: Tensor | None = None) -> None:
        """Set both scales and b_dec (in the target's space) from a first batch of pairs."""
        if y_NO is None:
            raise ValueError(f"{self.cfg.kind} ({self.architecture}): init_from_data needs the target activations y too")
        normalise = self.cfg.normalize_activations
        self.input_scale.fill_(input_scale_for(x_ND) if normalise else 1.0)
        self.target_scale.fill_(input_scale_for(y_NO) if normalise else 1.0)
        ys_NO = y_NO.float() * self.target_scale
        if self.cfg.b_dec_init == "mean":
            self.b_dec.copy_(ys_NO.mean(dim=0))
        elif self.cfg.b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(ys_NO))
        self.initialized.fill_(True)

    # -- the math ------------------------------------------------------------------------
    def scale_targets(self, y_BO: Tensor) -> Tensor:
        """Targets in the model's dtype, scaled like the inputs are (mean norm sqrt(d_out))."""
        return y_BO.to(self.b_dec.dtype) * self.target_scale

    def pre_activation(self, xs_BD: Tensor) -> Tensor:
        """x W_enc + b_enc: no input centring (b_dec is an output bias)."""
        return xs_BD @ self.W_enc + self.b_enc

    def skip_scaled(self, xs_BD: Tensor) -> Tensor | float:
        """The skip path x W_skip^T in scaled units (0 without one)."""
        return xs_BD @ self.W_skip.T if self.has_skip else 0.0

    def decode(self, acts_BF: Tensor) -> Tensor:
        """The latents' part of the prediction, b_dec included, in target units (no skip path)."""
        return self.decode_scaled(acts_BF) / self.target_scale

    def predict(self, x_BD: Tensor) -> Tensor:
        """The prediction of the target from inputs in model units: decode(encode(x)) + skip path."""
        xs_BD = self.scale_inputs(x_BD)
        acts_BF = self.latents(xs_BD)[0]
        return (self.decode_scaled(acts_BF) + self.skip_scaled(xs_BD)) / self.target_scale

    def forward(self, x_BD: Tensor, y_BO: Tensor | None = None, sparsity_scale: float = 1.0) -> SaeOutput:
        """Predict y from x and compute the loss; SaeOutput.x_hat_BD holds the prediction (target units)."""
        if y_BO is None:
            raise ValueError(f"{self.cfg.kind} ({self.architecture}): forward needs the target activations y (x, y)")
        if y_BO.shape[:-1] != x_BD.shape[:-1] or y_BO.shape[-1] != self.cfg.d_out:
            raise ValueError(f"{self.cfg.kind}: target shape {tuple(y_BO.shape)} does not pair with input "
                             f"{tuple(x_BD.shape)}; expected [..., d_out={self.cfg.d_out}] row for row")  # fmt: skip
        xs_BD, ys_BO = self.scale_inputs(x_BD), self.scale_targets(y_BO)
        sparse = self.on_sparse_path
        # The SAE's passes with the target in the input's place: AuxK's dead latents fit what the live ones miss of y.
        ys_hat_BO, acts_BF, terms, differentiable_pre = self._predict_scaled(xs_BD, ys_BO, sparse, self.no_centre, self.skip_scaled(xs_BD))
        return self._output(ys_hat_BO, ys_BO, acts_BF, terms, differentiable_pre, sparsity_scale, self.target_scale)


class TopKTranscoder(TranscoderMixin, TopKSae):
    """TopK transcoder (as sparsify trains them): k latents per token."""


class BatchTopKTranscoder(TranscoderMixin, BatchTopKSae):
    """BatchTopK transcoder: B*k latents per batch in training, a global threshold at inference."""


class ReluTranscoder(TranscoderMixin, ReluSae):
    """ReLU transcoder with the decoder-norm-weighted L1 (Dunefsky et al. 2024 use plain ReLU + L1)."""


TRANSCODER_CLASSES = {cls.architecture: cls for cls in (TopKTranscoder, BatchTopKTranscoder, ReluTranscoder)}
"""Sparsity architecture -> transcoder class; kind (transcoder / skip_transcoder) is read from the config."""
