"""Matryoshka BatchTopK SAE: nested dictionary prefixes, each trained to reconstruct on its own.

Bussmann, Nabeshima, Karvonen & Nanda 2025, "Learning Multi-Level Features with Matryoshka
Sparse Autoencoders" (and Nabeshima 2024, "Matryoshka Sparse Autoencoders"). Latents are
chosen by one BatchTopK over the whole dictionary; then, for every prefix size m in
cfg.matryoshka_prefixes and for the whole dictionary, the reconstruction from latents 0..m-1
alone is scored:

    loss = sum over levels m of ||x - (b_dec + acts[:, :m] W_dec[:m])||^2  (+ AuxK)

so the first latents must explain as much as they can without the later ones. That keeps a
general (parent) feature whole in an early latent instead of letting the wide dictionary split
it into its specialisations (feature absorption), and the later latents learn the finer ones.
The levels are summed with weight 1, as SAELens's MatryoshkaBatchTopKTrainingSAE does.

Inference is BatchTopK's: a JumpReLU with the learned global threshold, exported to SAELens as
architecture "jumprelu" (SAELens saves its own Matryoshka SAEs the same way).
"""

from __future__ import annotations

from torch import Tensor

from sae_core.batchtopk import BatchTopKSae
from sae_core.sparse_ops import Active, PreActivations, decode_active


class MatryoshkaBatchTopKSae(BatchTopKSae):
    """BatchTopK whose dictionary prefixes are each trained as a complete SAE."""

    architecture = "matryoshka_batchtopk"

    def level_bounds(self) -> list[tuple[int, int]]:
        """(start, stop) latent ranges of the groups each level adds; the last group ends at d_sae."""
        edges = [0, *self.cfg.matryoshka_prefixes, self.cfg.d_sae]
        return list(zip(edges[:-1], edges[1:], strict=True))

    def _inner_mse(self, xs_BD: Tensor, group_decodes: list[Tensor]) -> Tensor:
        """Summed MSE of the inner levels, from each group's decoded contribution (no b_dec).

        The whole dictionary's reconstruction is the base class's "mse" term: the last level.
        """
        partial_BD = self.b_dec.expand_as(xs_BD)
        total = xs_BD.new_zeros(())
        for group_BD in group_decodes:
            partial_BD = partial_BD + group_BD
            total = total + (partial_BD - xs_BD).pow(2).sum(dim=-1).mean()
        return total

    def sparsity_losses(self, xs_BD: Tensor, pre_BF: Tensor, acts_BF: Tensor, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """AuxK plus the reconstruction losses of the inner prefixes."""
        losses = super().sparsity_losses(xs_BD, pre_BF, acts_BF, xs_hat_BD)
        groups = [acts_BF[:, start:stop] @ self.W_dec[start:stop] for start, stop in self.level_bounds()[:-1]]
        losses["matryoshka_mse"] = self._inner_mse(xs_BD, groups)
        return losses

    def active_losses(self, xs_BD: Tensor, pre: PreActivations, active: Active, xs_hat_BD: Tensor) -> dict[str, Tensor]:
        """active_losses with each inner group decoded from its own active entries only.

        The groups are disjoint, so the inner levels together cost one more decode of the
        entries in the inner prefixes (at most as many as the whole batch holds).
        """
        losses = super().active_losses(xs_BD, pre, active, xs_hat_BD)
        groups = []
        for start, stop in self.level_bounds()[:-1]:
            in_group_N = (active.cols_N >= start) & (active.cols_N < stop)  # keeps rows ascending
            group = Active(active.rows_N[in_group_N], active.cols_N[in_group_N] - start, active.vals_N[in_group_N],
                           active.batch, stop - start)
            groups.append(decode_active(group, self.W_dec[start:stop]))
        losses["matryoshka_mse"] = self._inner_mse(xs_BD, groups)
        return losses
