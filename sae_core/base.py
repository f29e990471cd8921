"""The SparseCoder base: encode / decode / forward shared by every architecture.

Parameters are named exactly as SAELens stores them (``W_enc`` [d_in, d_sae], ``b_enc``,
``W_dec`` [d_sae, d_in], ``b_dec``) so a state dict maps onto the on-disk format one to one.
Inputs are multiplied by ``input_scale`` before the math and reconstructions divided by it
after, so callers always speak in the model's own activation units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from sae_core.config import SaeConfig
from sae_core.dictionary import Dictionary, SaeOutput
from sae_core.geometry import geometric_median, input_scale_for, normalize_rows_, random_directions
from sae_core.sparse_ops import Active, PreActivations, decode_active


class SparseCoder(Dictionary):
    """A sparse autoencoder; subclasses choose the activation function and sparsity loss."""

    kind: ClassVar[str] = "sae"
    architecture: ClassVar[str]
    unit_norm_decoder: ClassVar[bool] = True
    """Decoder rows are kept at unit norm (False where norms enter the sparsity penalty)."""

    def __init__(self, cfg: SaeConfig) -> None:
        super().__init__()
        if cfg.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} needs architecture={self.architecture!r}, got {cfg.architecture!r}")
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        generator = torch.Generator().manual_seed(cfg.seed)
        row_norm = 1.0 if self.unit_norm_decoder else cfg.decoder_init_norm
        W_dec_FD = random_directions(d_sae, d_in, generator, norm=row_norm)
        self.W_dec = nn.Parameter(W_dec_FD)
        # Encoder starts as the (scaled) decoder transpose: each latent first reads the direction it writes.
        self.W_enc = nn.Parameter(W_dec_FD.T.clone() * cfg.encoder_init_scale)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))
        # Training tokens since each latent last fired: drives AuxK and dead-latent metrics.
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))

    # -- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x_ND: Tensor) -> None:
        """Set the input scale and b_dec from a sample of activations (once, before training)."""
        scale = input_scale_for(x_ND) if self.cfg.normalize_activations else 1.0
        self.input_scale.fill_(scale)
        xs_ND = x_ND.float() * scale
        if self.cfg.b_dec_init == "mean":
            self.b_dec.copy_(xs_ND.mean(dim=0))
        elif self.cfg.b_dec_init == "geometric_median":
            self.b_dec.copy_(geometric_median(xs_ND))
        self.init_firing_from_data(xs_ND)
        self.initialized.fill_(True)

    @torch.no_grad()
    def init_firing_from_data(self, xs_ND: Tensor) -> None:
        """Set where latents start firing from scaled inputs (architectures with a threshold or gate)."""

    @torch.no_grad()
    def firing_quantile(self, xs_ND: Tensor) -> Tensor:
        """[d_sae] pre-activation of each latent exceeded on cfg.init_firing_fraction of the sample."""
        pre_NF = (xs_ND - self.b_dec) @ self.W_enc
        return torch.quantile(pre_NF.float(), 1.0 - self.cfg.init_firing_fraction, dim=0)

    # -- the math --------------------------------------------------------------------------
    def scale_inputs(self, x_BD: Tensor) -> Tensor:
        """Inputs in the SAE's dtype, scaled to mean norm sqrt(d_in) when normalising."""
        return x_BD.to(self.b_dec.dtype) * self.input_scale

    def pre_activation(self, xs_BD: Tensor) -> Tensor:
        """Encoder pre-activation of scaled inputs: (x - b_dec) W_enc + b_enc."""
        return (xs_BD - self.b_dec) @ self.W_enc + self.b_enc

    def latents(self, xs_BD: Tensor) -> tuple[Tensor, Tensor]:
        """(acts_BF, pre_BF) for scaled inputs; pre_BF is what the sparsity losses read."""
        raise NotImplementedError

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """Unweighted-by-schedule sparsity / auxiliary terms of this architecture."""
        raise NotImplementedError

    def decode_scaled(self, acts_BF: Tensor) -> Tensor:
        """Reconstruction in scaled units."""
        return acts_BF @ self.W_dec + self.b_dec

    def encode(self, x_BD: Tensor) -> Tensor:
        """Latent activations of inputs given in model units."""
        return self.latents(self.scale_inputs(x_BD))[0]

    def decode(self, acts_BF: Tensor) -> Tensor:
        """Reconstruction in model units from latent activations."""
        return self.decode_scaled(acts_BF) / self.input_scale

    def activate(self, pre_BF: Tensor) -> Tensor:
        """Activations from pre-activations; needed where active_latents() may return None."""
        raise NotImplementedError

    def active_latents(self, pre: PreActivations) -> Active | None:
        """Sparse-path twin of latents(): the active entries, values differentiable; None
        when too many are active for the sparse kernels to pay (activate() is used then)."""
        raise NotImplementedError

    def active_losses(self, xs_BD: Tensor, pre: PreActivations, active: Active, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """Sparse-path twin of sparsity_losses()."""
        raise NotImplementedError

    def forward(self, x_BD: Tensor, sparsity_scale: float = 1.0) -> SaeOutput:
        """Reconstruct x and compute the loss; sparsity_scale ramps the sparsity weight in training.

        In training, architectures with a sparse path run it: the encoder product once, then
        only the active latents (acts_BF in the output is then detached, for bookkeeping).
        """
        xs_BD = self.scale_inputs(x_BD)
        sparse = self.on_sparse_path
        xs_hat_BD, acts_BF, terms, differentiable_pre = self._predict_scaled(xs_BD, xs_BD, sparse, self.b_dec)
        return self._output(xs_hat_BD, xs_BD, acts_BF, terms, differentiable_pre, sparsity_scale, self.input_scale)

    def _output(self, hat_BD: Tensor, target_BD: Tensor, acts_BF: Tensor, terms: dict[str, Tensor],
                differentiable_pre: Callable[[], Tensor], sparsity_scale: float, unit_scale: Tensor) -> SaeOutput:
        """The loss of a scaled prediction of a scaled target (MSE, the scheduled sparsity terms, the
        pre-activation std penalty), firing bookkeeping in training, the prediction back in model units."""
        losses = {"mse": (hat_BD - target_BD).pow(2).sum(dim=-1).mean()}
        for name, term in terms.items():
            losses[name] = term * sparsity_scale if name == "sparsity" else term
        if self.cfg.pre_act_std_coefficient > 0:
            losses["pre_act_std"] = self.cfg.pre_act_std_coefficient * differentiable_pre().mean(dim=0).std()
        if self.training:
            self._track_firing(acts_BF)
        return SaeOutput(hat_BD / unit_scale, acts_BF, sum(losses.values()), losses)

    def _predict_scaled(self, xs_BD: Tensor, target_BD: Tensor, sparse: bool, centre_D: Tensor,
                        skip_BD: Tensor | float = 0.0) -> tuple[Tensor, Tensor, dict[str, Tensor], Callable[[], Tensor]]:
        """(prediction, activations, sparsity terms, differentiable pre-activations), scaled units.

        Dense products, or with `sparse` through sae_core.sparse_ops: one encoder product, then only
        the active latents (dense again when too many are active). An SAE predicts its own input
        (target = xs, centre = b_dec); a transcoder its target, with an uncentred input and its
        skip path added (sae_core.transcoder), so the sparsity and AuxK terms fit what it predicts.
        """
        if sparse:
            pre = PreActivations(xs_BD, centre_D, self.W_enc, self.b_enc)
            active = self.active_latents(pre)
            if active is not None:
                hat_BD = decode_active(active, self.W_dec) + self.b_dec + skip_BD
                # CSR, not dense: firing and L0 read the entries alone (a dense [B, F] copy and three
                # passes over it were 12-13% of a TopK step).
                return hat_BD, active.to_sparse(), self.active_losses(target_BD, pre, active, hat_BD), pre.dense
            pre_BF = pre.dense()  # too many active latents for the sparse kernels (ReLU early on)
            acts_BF = self.activate(pre_BF)
        else:
            acts_BF, pre_BF = self.latents(xs_BD)
        hat_BD = self.decode_scaled(acts_BF) + skip_BD
        return hat_BD, acts_BF, self.sparsity_losses(target_BD, pre_BF, acts_BF, hat_BD), lambda: pre_BF

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Re-impose parameter constraints after an optimiser step."""
        if self.unit_norm_decoder:
            normalize_rows_(self.W_dec)
