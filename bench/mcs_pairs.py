"""The sweep report's decoder-similarity (MCS) section: one cosine product per unordered pair of SAEs
(both directions from its row and column maxima) vs one product per ordered pair (the old code).

Why it matters: profiling a whole 8-SAE sweep (bench/sweep_vs_sparsify.py, py-spy) put ~95 s of its
~137 s in the report's MCS on a 2-core CPU: 56 ordered pairs of [F, 576] decoders, F up to 18,432.
Same decoders, same process, alternating order, median of --repeats; prints the ratio.
Run: `.venv/bin/python -m bench.mcs_pairs [--d-in 576] [--sizes 4608 18432] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from infra.features.mcs import max_cosines, max_cosines_both_ways


def one_way_twice(a_FD: torch.Tensor, b_GD: torch.Tensor) -> None:
    max_cosines(a_FD, b_GD)
    max_cosines(b_GD, a_FD)


def both_ways_once(a_FD: torch.Tensor, b_GD: torch.Tensor) -> None:
    max_cosines_both_ways(a_FD, b_GD)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-in", type=int, default=576)
    parser.add_argument("--sizes", type=int, nargs=2, default=[4608, 18432], help="latents of the two SAEs of the pair")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    a_FD = torch.randn(args.sizes[0], args.d_in, generator=generator)
    b_GD = torch.randn(args.sizes[1], args.d_in, generator=generator)
    seconds: dict[str, list[float]] = {"ordered pairs (old)": [], "unordered pairs (new)": []}
    runs = [("ordered pairs (old)", one_way_twice), ("unordered pairs (new)", both_ways_once)]
    for repeat in range(args.repeats):
        for name, run in runs if repeat % 2 == 0 else runs[::-1]:
            started = time.perf_counter()
            run(a_FD, b_GD)
            seconds[name].append(time.perf_counter() - started)
    old, new = (statistics.median(seconds[name]) for name, _ in runs)
    print(f"pair {args.sizes[0]} x {args.sizes[1]} latents, d_in {args.d_in}, torch threads {torch.get_num_threads()}: "
          f"old {old:.2f} s, new {new:.2f} s, {old / new:.2f}x")


if __name__ == "__main__":
    main()
