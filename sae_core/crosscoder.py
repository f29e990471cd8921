"""Acausal crosscoders (Lindsey et al. 2024, "Sparse Crosscoders for Cross-Layer Features and Model Diffing").

One dictionary of F latents reads M aligned sources at once: each source has its own encoder
W_enc[m] [D, F] whose outputs are SUMMED into one pre-activation, and each latent has its own
decoder vector per source, W_dec[f, m] [D]. A latent whose decoder norm vanishes on one source
is exclusive to the other; that per-source norm ratio is what model diffing reads (diffing.py).

A Crosscoder is a Dictionary (sae_core.dictionary), as an SAE is, so SaeTrainer, fit_many,
trainer_state and infra's group loop train and checkpoint it unchanged; batches are [B, M, D]
instead of [B, D].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from sae_core.auxk import aux_k_loss, aux_k_loss_sparse
from sae_core.batchtopk import update_batch_threshold_
from sae_core.crosscoder_config import CrosscoderConfig
from sae_core.dictionary import Dictionary, SaeOutput
from sae_core.geometry import geometric_median, input_scale_for, random_directions
from sae_core.sparse_ops import Active, PreActivations, decode_active


def source_scale(x_ND: Tensor, cfg: CrosscoderConfig) -> float:
    """The factor one source is multiplied by before encoding (cfg.source_normalization).

    Why centred variance by default: the summed squared error weighs each source by its variance.
    Scaled to one mean norm, a source whose norm is mostly a constant offset (an early checkpoint:
    ~99% of its squared norm in its mean) keeps ~1% of the variance of the other, so the loss
    ignores it (issue 15). Scaling E||x - mean||^2 to d_in makes the loss the sum of per-source
    FVUs times d_in; b_dec absorbs the offset.
    """
    if not cfg.normalize_activations:
        return 1.0
    if cfg.source_normalization == "mean_norm":
        return input_scale_for(x_ND)
    variance = (x_ND - x_ND.mean(dim=0)).pow(2).sum(dim=-1).mean().item()
    if not math.isfinite(variance) or variance <= 0:
        raise ValueError(f"cannot scale a crosscoder source: its centred variance is {variance} (constant or non-finite input)")
    return math.sqrt(x_ND.shape[1] / variance)


class Crosscoder(Dictionary):
    """Shared latent space over M sources; subclasses choose the activation and sparsity loss."""

    kind: ClassVar[str] = "crosscoder"
    architecture: ClassVar[str]
    config_architecture: ClassVar[str]
    """The CrosscoderConfig.architecture this class implements."""
    unit_norm_decoder: ClassVar[bool] = False
    """Per-source decoder norms stay free: their ratio is the diffing signal (Lindsey et al. 2024)."""

    def __init__(self, cfg: CrosscoderConfig) -> None:
        super().__init__()
        if cfg.architecture != self.config_architecture:
            raise ValueError(f"{type(self).__name__} needs architecture={self.config_architecture!r}, got {cfg.architecture!r}")
        self.cfg = cfg
        M, D, F = cfg.n_sources, cfg.d_in, cfg.d_sae
        generator = torch.Generator().manual_seed(cfg.seed)
        W_dec_FMD = random_directions(F * M, D, generator, norm=self.initial_slice_norm()).view(F, M, D)
        self.W_dec = nn.Parameter(W_dec_FMD)
        # Each latent first reads, in every source, the direction it writes there.
        self.W_enc = nn.Parameter(W_dec_FMD.permute(1, 2, 0).contiguous())
        self.b_enc = nn.Parameter(torch.zeros(F))
        self.b_dec = nn.Parameter(torch.zeros(M, D))
        self.register_buffer("input_scale", torch.ones(M))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("tokens_since_fired", torch.zeros(F, dtype=torch.long))

    def initial_slice_norm(self) -> float:
        """Norm each W_dec[f, m] starts at."""
        return self.cfg.decoder_init_norm

    # -- initialisation -------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x_NMD: Tensor) -> None:
        """Per-source input scales and b_dec from a sample of activations (once, before training)."""
        self._check_shape(x_NMD)
        x_NMD = x_NMD.float()
        for m in range(self.cfg.n_sources):
            self.input_scale[m] = source_scale(x_NMD[:, m], self.cfg)
            xs_ND = x_NMD[:, m] * self.input_scale[m]
            if self.cfg.b_dec_init == "mean":
                self.b_dec[m] = xs_ND.mean(dim=0)
            elif self.cfg.b_dec_init == "geometric_median":
                self.b_dec[m] = geometric_median(xs_ND)
        self.initialized.fill_(True)

    def _check_shape(self, x_BMD: Tensor) -> None:
        M, D = self.cfg.n_sources, self.cfg.d_in
        if x_BMD.ndim != 3 or tuple(x_BMD.shape[1:]) != (M, D):
            raise ValueError(f"{self.architecture}: expected inputs [batch, {M}, {D}], got {list(x_BMD.shape)}")

    # -- the math --------------------------------------------------------------------------
    def scale_inputs(self, x_BMD: Tensor) -> Tensor:
        """Inputs in the crosscoder's dtype, each source scaled by its own input_scale."""
        self._check_shape(x_BMD)
        return x_BMD.to(self.b_dec.dtype) * self.input_scale[:, None]

    def pre_activation(self, xs_BMD: Tensor) -> Tensor:
        """sum_m (x_m - b_dec_m) W_enc[m] + b_enc: one pre-activation per latent over all sources."""
        return torch.einsum("bmd,mdf->bf", xs_BMD - self.b_dec, self.W_enc) + self.b_enc

    def decoder_norm_sum(self) -> Tensor:
        """sum_m ||W_dec[f, m]|| per latent [F]: the L1-of-norms weight of Lindsey et al. 2024."""
        return self.W_dec.norm(dim=-1).sum(dim=-1)

    def latents(self, xs_BMD: Tensor) -> tuple[Tensor, Tensor]:
        """(acts_BF, pre_BF) for scaled inputs."""
        raise NotImplementedError

    def sparsity_losses(self, xs_BMD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BMD: Tensor) -> dict[str, Tensor]:
        """Sparsity / auxiliary terms of this variant."""
        raise NotImplementedError

    def decode_scaled(self, acts_BF: Tensor) -> Tensor:
        """Reconstruction of every source, in scaled units [B, M, D]."""
        return torch.einsum("bf,fmd->bmd", acts_BF, self.W_dec) + self.b_dec

    def encode(self, x_BMD: Tensor) -> Tensor:
        """Latent activations of inputs given in model units."""
        return self.latents(self.scale_inputs(x_BMD))[0]

    def decode(self, acts_BF: Tensor) -> Tensor:
        """Reconstruction in model units [B, M, D] from latent activations."""
        return self.decode_scaled(acts_BF) / self.input_scale[:, None]

    def forward(self, x_BMD: Tensor, sparsity_scale: float = 1.0) -> SaeOutput:
        """Reconstruct every source and compute the loss; x_hat_BMD travels in SaeOutput.x_hat_BD."""
        xs_BMD = self.scale_inputs(x_BMD)
        if self.on_sparse_path:
            xs_hat_BMD, acts_BF, terms, differentiable_pre = self._sparse_step(xs_BMD)
        else:
            acts_BF, pre_BF = self.latents(xs_BMD)
            xs_hat_BMD = self.decode_scaled(acts_BF)
            terms, differentiable_pre = self.sparsity_losses(xs_BMD, pre_BF, acts_BF, xs_hat_BMD), lambda: pre_BF
        # Squared error summed over D and over sources, mean over tokens (Lindsey et al. 2024).
        losses = {"mse": (xs_hat_BMD - xs_BMD).pow(2).sum(dim=(-2, -1)).mean()}
        for name, term in terms.items():
            losses[name] = term * sparsity_scale if name == "sparsity" else term
        if self.cfg.pre_act_std_coefficient > 0:
            losses["pre_act_std"] = self.cfg.pre_act_std_coefficient * differentiable_pre().mean(dim=0).std()
        if self.training:
            self._track_firing(acts_BF)
        return SaeOutput(xs_hat_BMD / self.input_scale[:, None], acts_BF, sum(losses.values()), losses)

    def _sparse_step(self, xs_BMD: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor], Callable[[], Tensor]]:
        """(reconstruction, detached activations, sparsity terms, differentiable pre-activations) through
        the SAEs' sparse kernels: a crosscoder is an SAE over the sources concatenated ([B, M*D]), with
        W_enc [M*D, F] and W_dec [F, M*D] as views of its parameters, so one encoder product, then only
        the active latents (dense again above the kernels' density limit)."""
        xs_BX = xs_BMD.flatten(1)
        W_dec_FX = self.W_dec.flatten(1)
        pre = PreActivations(xs_BX, self.b_dec.flatten(), self.W_enc.flatten(0, 1), self.b_enc)
        active = self.active_latents(pre)
        xs_hat_BMD = (decode_active(active, W_dec_FX) + self.b_dec.flatten()).view_as(xs_BMD)
        return xs_hat_BMD, active.to_sparse(), self.active_losses(xs_BX, pre, W_dec_FX, xs_hat_BMD.flatten(1)), pre.dense

    def active_latents(self, pre: PreActivations) -> Active:
        """Sparse-path twin of latents() in training."""
        raise NotImplementedError

    def active_losses(self, xs_BX: Tensor, pre: PreActivations, W_dec_FX: Tensor, xs_hat_BX: Tensor) -> dict[str, Tensor]:
        """Sparse-path twin of sparsity_losses(), on the concatenated sources."""
        raise NotImplementedError

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """No constraint: both variants weight sparsity by decoder norms, so norms stay free."""


class ReluCrosscoder(Crosscoder):
    """acts = ReLU(pre); sparsity = lambda * sum_f acts_f * sum_m ||W_dec[f, m]||.

    The SUM of per-source norms (an L1 over sources) charges a latent for every source it writes
    to, so a feature present in one source only is cheapest as a latent exclusive to that source;
    this is what makes exclusive latents visible to diffing (Lindsey et al. 2024). Norms are free,
    so the L1 cannot be dodged by shrinking activations against growing decoders.
    """

    architecture = "crosscoder_relu"
    config_architecture = "relu"

    def latents(self, xs_BMD: Tensor) -> tuple[Tensor, Tensor]:
        """ReLU of the pre-activation."""
        pre_BF = self.pre_activation(xs_BMD)
        return pre_BF.relu(), pre_BF

    def sparsity_losses(self, xs_BMD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BMD: Tensor) -> dict[str, Tensor]:
        """Decoder-norm-sum-weighted L1."""
        weighted_l1 = (acts_BF * self.decoder_norm_sum()).sum(dim=-1).mean()
        return {"sparsity": self.cfg.sparsity_coefficient * weighted_l1}


class BatchTopKCrosscoder(Crosscoder):
    """Keep the top k*B values of relu(pre) * sum_m ||W_dec[f, m]|| over the batch (training).

    Why no unit-norm constraint: ranking by activation times decoder-norm sum is invariant to
    rescaling a latent (acts * c, W_dec / c), so norms need no pinning, and leaving each source's
    norm free keeps the norm ratio that diffing reads (as in dictionary_learning's BatchTopK
    crosscoder). Inference keeps a latent where that score exceeds an EMA global threshold
    (Bussmann et al. 2024), as sae_core/batchtopk.py does for SAEs.
    """

    architecture = "crosscoder_batchtopk"
    config_architecture = "batchtopk"
    has_sparse_path = True

    def __init__(self, cfg: CrosscoderConfig) -> None:
        super().__init__(cfg)
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("threshold_seen", torch.tensor(False))

    def initial_slice_norm(self) -> float:
        """Each latent's concatenated decoder [M*D] starts at unit norm."""
        return 1.0 / math.sqrt(self.cfg.n_sources)

    def latents(self, xs_BMD: Tensor) -> tuple[Tensor, Tensor]:
        """Batch top-k of the norm-weighted score (training) or the global threshold on it (eval)."""
        pre_BF = self.pre_activation(xs_BMD)
        relu_BF = pre_BF.relu()
        score_BF = relu_BF * self.decoder_norm_sum().detach()
        if not self.training:
            return relu_BF * (score_BF > self.threshold), pre_BF
        num_kept = min(self.cfg.k * pre_BF.shape[0], score_BF.numel())
        top_scores_N, top_idx_N = score_BF.flatten().topk(num_kept, sorted=False)
        keep_BF = torch.zeros_like(score_BF, dtype=torch.bool).flatten().index_fill_(0, top_idx_N, True).view_as(score_BF)
        self._update_threshold(top_scores_N)
        return relu_BF * keep_BF, pre_BF

    def _update_threshold(self, top_scores_N: Tensor) -> None:
        update_batch_threshold_(self.threshold, self.threshold_seen, top_scores_N, self.cfg.batchtopk_threshold_momentum)

    def active_latents(self, pre: PreActivations) -> Active:
        """The batch's B*k largest norm-weighted scores, by flat index (their ReLU'd pre-activations as values)."""
        score_N = (pre.pre_BF.relu() * self.decoder_norm_sum().detach()).flatten()
        top_scores_N, top_idx_N = score_N.topk(min(self.cfg.k * pre.pre_BF.shape[0], score_N.numel()), sorted=False)
        self._update_threshold(top_scores_N)
        return Active.from_flat(top_idx_N, pre)

    def active_losses(self, xs_BX: Tensor, pre: PreActivations, W_dec_FX: Tensor, xs_hat_BX: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents, decoded from their indices too."""
        aux = aux_k_loss_sparse(xs_BX - xs_hat_BX, pre, self.dead_latents(), W_dec_FX, self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}

    def sparsity_losses(self, xs_BMD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BMD: Tensor) -> dict[str, Tensor]:
        """AuxK on dead latents, against the residual of all sources concatenated."""
        residual_BX = (xs_BMD - xs_hat_BMD).flatten(1)
        aux = aux_k_loss(residual_BX, pre_BF, self.dead_latents(), self.W_dec.flatten(1), self.cfg.aux_k)
        return {"aux": self.cfg.aux_k_coefficient * aux}


CROSSCODER_CLASSES: dict[str, type[Crosscoder]] = {
    cls.config_architecture: cls for cls in (ReluCrosscoder, BatchTopKCrosscoder)
}


def build_crosscoder(cfg: CrosscoderConfig) -> Crosscoder:
    """A freshly initialised crosscoder of the configured variant."""
    return CROSSCODER_CLASSES[cfg.architecture](cfg)


__all__ = ["BatchTopKCrosscoder", "CROSSCODER_CLASSES", "Crosscoder", "ReluCrosscoder", "build_crosscoder", "source_scale"]
