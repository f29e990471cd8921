"""Would torch.compile pay? One SAE forward + backward, eager vs compiled, same batch, same run.

Cases: ReLU 8x and TopK k=32 8x on the plain dense products, TopK on the sparse kernels
(custom autograd Functions, data-dependent sizes). d_in 576, batch 1,024, best of --reps after
the first (compiling) call; the allocator configured as in the training workers.
Run: `.venv/bin/python -m bench.torch_compile [--reps N]`.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date

import torch

from infra.allocator import keep_freed_memory
from sae_core import SaeConfig, build_sae
from sae_core.base import SparseCoder

CASES = [("relu", False), ("topk", False), ("topk", True)]


def make_sae(architecture: str, sparse: bool) -> SparseCoder:
    config = SaeConfig(architecture, d_in=576, expansion_factor=8, k=32, normalize_activations=False, b_dec_init="zeros")
    sae = build_sae(config).train()
    sae.use_sparse_kernels = sparse
    sae.initialized.fill_(True)
    return sae


def best_ms(model: torch.nn.Module, x_BD: torch.Tensor, reps: int) -> tuple[float, float]:
    """(first call seconds, best later call ms) of forward + backward."""
    started = time.perf_counter()
    model(x_BD).loss.backward()
    first = time.perf_counter() - started
    timings = []
    for _ in range(reps):
        started = time.perf_counter()
        model(x_BD).loss.backward()
        timings.append(time.perf_counter() - started)
    return first, 1000 * min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=6)
    args = parser.parse_args()
    keep_freed_memory()
    x_BD = torch.randn(1024, 576, generator=torch.Generator().manual_seed(0)) * 3 + 1
    print(f"# {date.today()} {platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}")
    print("| case | eager | compiled | speed-up | compile time |\n|---|---|---|---|---|")
    for architecture, sparse in CASES:
        _, eager = best_ms(make_sae(architecture, sparse), x_BD, args.reps)
        compile_s, compiled = best_ms(torch.compile(make_sae(architecture, sparse)), x_BD, args.reps)
        label = f"{architecture} 8x, {'sparse kernels' if sparse else 'plain products'}"
        print(f"| {label} | {eager:.1f} ms | {compiled:.1f} ms | {eager / compiled:.2f}x | {compile_s:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
