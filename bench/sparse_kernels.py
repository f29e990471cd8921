"""The training fast paths, each against the plain path on the same batch in the same run.

- sparse kernels (sae_core.sparse_ops: encoder once, then only active latents) vs the plain
  dense products, for TopK 8x / 32x, BatchTopK 8x and ReLU, with and without AuxK active;
- the crossover: one encode-select-decode step at growing density, sparse vs dense products
  (what sae_core.sparse_ops.SPARSE_MAX_DENSITY is set from);
- the allocator setting of the training workers (infra.allocator), in a fresh subprocess each;
- fused Adam vs torch's default Adam (what saeflow uses);
- bf16 autocast vs fp32 (on CPUs with bf16 matrix instructions).

Milliseconds per optimiser step (best of --reps after a warm-up step), d_in 576, batch 1024.
Run: `.venv/bin/python -m bench.sparse_kernels [--reps N]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import time
from datetime import date

import torch

D_IN, BATCH = 576, 1024
STEP_CASES = [("topk", 8, False), ("topk", 8, True), ("topk", 32, False), ("batchtopk", 8, False), ("relu", 8, False)]


def step_ms(architecture: str, expansion: int, *, sparse: bool, dead: bool = False, autocast: str = "never",
            allocator: bool = False, active_fraction: float | None = None, fused_adam: bool = False, reps: int = 5) -> float:
    """Best wall time of one SaeTrainer.train_step, in ms."""
    from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae

    if allocator:
        from infra.allocator import keep_freed_memory

        keep_freed_memory()
    x_BD = torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(0)) * 3 + 1
    config = SaeConfig(architecture, d_in=D_IN, expansion_factor=expansion, k=32, normalize_activations=False,
                       b_dec_init="zeros", dead_after_tokens=1 if dead else 10_000_000)
    sae = build_sae(config)
    sae.use_sparse_kernels = sparse
    if active_fraction is not None:  # a negative encoder bias stands in for a trained ReLU SAE's sparsity
        with torch.no_grad():
            pre_BF = (x_BD - sae.b_dec) @ sae.W_enc
            sae.b_enc.fill_(-float(pre_BF.flatten()[::7].quantile(1 - active_fraction)))
    trainer = SaeTrainer(sae, TrainConfig(total_steps=reps + 1, max_grad_norm=1.0, decay_fraction=0.0, autocast_bf16=autocast))
    if fused_adam:  # the optimiser table: would the fused kernel pay?
        trainer.optimizers = [torch.optim.Adam(sae.parameters(), lr=trainer.cfg.lr, betas=trainer.cfg.adam_betas, fused=True)]
    trainer.train_step(x_BD)
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        trainer.train_step(x_BD)
        timings.append(time.perf_counter() - started)
    return 1000 * min(timings)


def in_subprocess(**kwargs) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_call, (kwargs,))


def _call(kwargs: dict) -> float:
    architecture, expansion = kwargs.pop("architecture"), kwargs.pop("expansion")
    return step_ms(architecture, expansion, **kwargs)


def crossover_ms(k: int, sparse: bool, reps: int) -> float:
    """One encode -> top-k -> decode -> backward at k active latents of 4,608."""
    from sae_core import sparse_ops
    from sae_core.sparse_ops import Active, PreActivations, decode_active

    generator = torch.Generator().manual_seed(0)
    x_BD = torch.randn(BATCH, D_IN, generator=generator)
    params = [torch.zeros(D_IN), torch.randn(D_IN, 8 * D_IN, generator=generator), torch.zeros(8 * D_IN)]
    b_dec_D, W_enc_DF, b_enc_F = (p.requires_grad_() for p in params)
    W_dec_FD = torch.randn(8 * D_IN, D_IN, generator=generator).requires_grad_()
    sparse_ops.SPARSE_MAX_DENSITY, saved = (1.0 if sparse else 0.0), sparse_ops.SPARSE_MAX_DENSITY

    def once() -> None:
        pre = PreActivations(x_BD, b_dec_D, W_enc_DF, b_enc_F)
        active = Active.from_topk(pre.pre_BF.topk(k, dim=-1, sorted=False).indices, pre)
        decode_active(active, W_dec_FD).pow(2).sum().backward()

    try:
        once()
        timings = []
        for _ in range(reps):
            started = time.perf_counter()
            once()
            timings.append(time.perf_counter() - started)
    finally:
        sparse_ops.SPARSE_MAX_DENSITY = saved
    return 1000 * min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"# {date.today()} {platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}; "
          f"d_in {D_IN}, batch {BATCH}, ms per step (best of {args.reps})")

    print("\n| case | plain | sparse kernels | speed-up |\n|---|---|---|---|")
    for architecture, expansion, dead in STEP_CASES:
        kwargs = {"architecture": architecture, "expansion": expansion, "dead": dead, "allocator": True, "reps": args.reps}
        if architecture == "relu":  # a trained ReLU SAE: ~2% of latents active
            kwargs["active_fraction"] = 0.02
        plain, fast = in_subprocess(sparse=False, **kwargs), in_subprocess(sparse=True, **kwargs)
        label = f"{architecture} {expansion}x" + (" (AuxK on: every latent dead)" if dead else "")
        if architecture == "relu":
            label += " (~2% active)"
        print(f"| {label} | {plain:.1f} | {fast:.1f} | **{plain / fast:.2f}x** |", flush=True)

    print("\n| active latents of 4,608 | density | dense products | sparse kernels | speed-up |\n|---|---|---|---|---|")
    for k in (32, 128, 288, 400, 600, 900):
        dense, sparse = crossover_ms(k, False, args.reps), crossover_ms(k, True, args.reps)
        print(f"| {k} | {k / (8 * D_IN):.1%} | {dense:.1f} | {sparse:.1f} | {dense / sparse:.2f}x |", flush=True)

    print("\n| case (sparse kernels) | default allocator | infra.allocator | speed-up |\n|---|---|---|---|")
    for architecture, expansion in (("topk", 8), ("topk", 32)):
        kwargs = {"architecture": architecture, "expansion": expansion, "sparse": True, "reps": args.reps}
        default, kept = in_subprocess(allocator=False, **kwargs), in_subprocess(allocator=True, **kwargs)
        print(f"| {architecture} {expansion}x | {default:.1f} | {kept:.1f} | **{default / kept:.2f}x** |", flush=True)

    print("\n| case (sparse kernels, infra.allocator) | Adam | fused Adam | speed-up |\n|---|---|---|---|")
    for architecture, expansion in (("topk", 8), ("topk", 32)):
        kwargs = {"architecture": architecture, "expansion": expansion, "sparse": True, "allocator": True, "reps": args.reps}
        plain, fused = in_subprocess(fused_adam=False, **kwargs), in_subprocess(fused_adam=True, **kwargs)
        print(f"| {architecture} {expansion}x | {plain:.1f} | {fused:.1f} | **{plain / fused:.2f}x** |", flush=True)

    print("\n| case (sparse kernels, infra.allocator) | fp32 | bf16 autocast | speed-up |\n|---|---|---|---|")
    for architecture, expansion in (("topk", 8), ("topk", 32), ("relu", 8)):
        kwargs = {"architecture": architecture, "expansion": expansion, "sparse": True, "allocator": True, "reps": args.reps}
        fp32, bf16 = in_subprocess(autocast="never", **kwargs), in_subprocess(autocast="always", **kwargs)
        print(f"| {architecture} {expansion}x | {fp32:.1f} | {bf16:.1f} | **{fp32 / bf16:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
