"""A BatchTopK crosscoder's training step on the SAEs' sparse kernels vs its dense products.

The crosscoder is an SAE over the concatenated sources ([B, M*D]), so the sparse path
(sae_core.sparse_ops: one encoder product, then only the B*k active latents) applies unchanged.
Each case runs both paths in the same fresh subprocess, alternating, best of --reps steps after a
warm-up step, allocator on as in the training workers; with and without AuxK active (every latent dead).
Run: `.venv/bin/python -m bench.crosscoder_kernels [--reps N]`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import time
from datetime import date

import torch

D_IN, BATCH, K = 576, 1024, 32
# (sources M, expansion over d_in, AuxK active)
CASES = [(2, 8, False), (2, 8, True), (3, 8, False), (2, 32, False)]


def step_ms(sources: int, expansion: int, dead: bool, reps: int) -> dict[str, float]:
    """{"dense": ms, "sparse": ms}: best SaeTrainer.train_step time of each path, alternating."""
    from infra.allocator import keep_freed_memory
    from sae_core import CrosscoderConfig, SaeTrainer, TrainConfig, build_crosscoder

    keep_freed_memory()
    x_BMD = torch.randn(BATCH, sources, D_IN, generator=torch.Generator().manual_seed(0)) * 3 + 1
    trainers = {}
    for path in ("dense", "sparse"):
        config = CrosscoderConfig(architecture="batchtopk", n_sources=sources, d_in=D_IN, d_sae=expansion * D_IN, k=K,
                                  dead_after_tokens=1 if dead else 10_000_000)
        crosscoder = build_crosscoder(config)
        crosscoder.use_sparse_kernels = path == "sparse"
        trainers[path] = SaeTrainer(crosscoder, TrainConfig(total_steps=reps + 1, max_grad_norm=1.0, decay_fraction=0.0))
        trainers[path].train_step(x_BMD)  # warm-up (and the one-time initialisation from data)
    timings = {path: [] for path in trainers}
    for _ in range(reps):
        for path, trainer in trainers.items():
            started = time.perf_counter()
            trainer.train_step(x_BMD)
            timings[path].append(time.perf_counter() - started)
    return {path: 1000 * min(values) for path, values in timings.items()}


def _call(args: tuple) -> dict[str, float]:
    return step_ms(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"# {date.today()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; d_in {D_IN}, batch {BATCH}, k {K}")
    print("| case (ms per step) | dense products | sparse kernels | speed-up |\n|---|---|---|---|")
    for sources, expansion, dead in CASES:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            ms = pool.apply(_call, ((sources, expansion, dead, args.reps),))
        label = f"batchtopk crosscoder, {sources} sources, {expansion}x" + (" (AuxK on: every latent dead)" if dead else "")
        print(f"| {label} | {ms['dense']:.1f} | {ms['sparse']:.1f} | **{ms['dense'] / ms['sparse']:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
