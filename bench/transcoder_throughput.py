"""Training tokens/s of a TopK transcoder and skip transcoder beside a TopK SAE of the same width, in one run.

Same shapes as a SmolLM2 layer (d_model 576, 8x: 4,608 latents, k=32), same batches (random
activations: a step's cost does not depend on the values), steps interleaved round-robin so a
shared machine's load hits every kind alike. Prints one line per kind and the ratios.

    PYTHONPATH=. python bench/transcoder_throughput.py [--steps 40] [--batch 1024]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from sae_core import SaeConfig, SaeTrainer, SparseCoder, TrainConfig, build_sae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--d-model", type=int, default=576)
    args = parser.parse_args()
    d, batch = args.d_model, args.batch
    kinds = {"sae": {}, "transcoder": {"kind": "transcoder"}, "skip_transcoder": {"kind": "skip_transcoder"}}
    trainers = {name: SaeTrainer(build(d, extra), TrainConfig(total_steps=args.steps + 5)) for name, extra in kinds.items()}
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, d, generator=generator), torch.randn(batch, d, generator=generator)) for _ in range(4)]
    seconds = dict.fromkeys(kinds, 0.0)
    for step in range(args.steps + 5):
        for name, trainer in trainers.items():
            x_BD, y_BD = batches[step % len(batches)]
            started = time.perf_counter()
            trainer.train_step((x_BD, y_BD) if name != "sae" else x_BD)
            if step >= 5:  # the first steps initialise from data and warm the allocator
                seconds[name] += time.perf_counter() - started
    rate = {name: args.steps * batch / s for name, s in seconds.items()}
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"d_in=d_out={d}, d_sae={8 * d}, k=32, batch {batch}, {args.steps} timed steps each")
    for name, value in rate.items():
        print(f"{name:16s} {value:10.0f} tokens/s   ratio to SAE {value / rate['sae']:.2f}")


def build(d: int, extra: dict) -> SparseCoder:
    """A TopK SAE (or transcoder, by extra's kind) of width 8 d."""
    return build_sae(SaeConfig(architecture="topk", d_in=d, d_sae=8 * d, k=32, **extra))


if __name__ == "__main__":
    main()
