"""Training throughput of sae_core on CPU/GPU, measured side by side in one run.

Figures (tokens/s, higher is better):
  - TopK (k=32, 8x) and ReLU (8x) SAEs on d_in=576 activations (SmolLM2-135M's width);
  - a group of 4 SAEs fed ONE stream by fit_many vs the same 4 trained one after another,
    reported as a ratio (the grid-sweep case: each batch is produced once for the whole group).

The single-SAE figures use in-memory synthetic batches (same FLOPs as real activations). The
group comparison reads a real Parquet harvest (float16, d 576, written by the store) through
infra.activations.stream, so sharing the stream saves real reading, shuffling and conversion.
Run: `.venv/bin/python -m bench.train_throughput [--steps N]`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date

import torch

from bench.stream_throughput import HOOKPOINT, write_harvest
from infra.activations.stream import StreamSpec, iter_batches
from infra.allocator import keep_freed_memory
from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.synthetic import SyntheticFeatures

D_IN = 576


def make_trainers(configs: list[SaeConfig], steps: int, device: torch.device) -> list[SaeTrainer]:
    return [SaeTrainer(build_sae(c).to(device), TrainConfig(total_steps=steps, lr=3e-4)) for c in configs]


def stream(truth: SyntheticFeatures, batch: int, steps: int, seconds: list[float]):
    """Yield batches, adding the time spent producing them to seconds[0] (the data cost)."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        started = time.perf_counter()
        batch_BD = truth.sample(batch, generator)
        seconds[0] += time.perf_counter() - started
        yield batch_BD


def timed_fit(trainers: list[SaeTrainer], truth: SyntheticFeatures, batch: int, steps: int) -> tuple[float, float]:
    """(total seconds, seconds spent producing data)."""
    data_seconds = [0.0]
    started = time.perf_counter()
    for _report in fit_many(trainers, stream(truth, batch, steps, data_seconds)):
        pass
    if trainers[0].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, data_seconds[0]


def timed_stream_fit(trainers: list[SaeTrainer], stream: StreamSpec) -> float:
    """Seconds to train the trainers on a Parquet stream (stream start-up included)."""
    started = time.perf_counter()
    for _ in fit_many(trainers, iter_batches(stream)):
        pass
    if trainers[0].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    keep_freed_memory()  # as the training workers do (infra.training.group.train_group)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    truth = SyntheticFeatures(d=D_IN, num_features=4 * D_IN, firing_probability=0.01)
    tokens = args.steps * args.batch
    topk = SaeConfig("topk", d_in=D_IN, expansion_factor=8, k=32)
    relu = SaeConfig("relu", d_in=D_IN, expansion_factor=8)
    print(f"# {date.today()} {platform.node()} {device} torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"# steps {args.steps} x batch {args.batch} = {tokens} tokens per SAE")
    timed_fit(make_trainers([topk], 2, device), truth, args.batch, 2)  # warm-up
    for name, cfg in (("topk k=32 8x", topk), ("relu 8x", relu)):
        seconds, _ = timed_fit(make_trainers([cfg], args.steps, device), truth, args.batch, args.steps)
        print(f"{name:<16} {tokens / seconds:>10.0f} tokens/s")
    group = [SaeConfig("topk", d_in=D_IN, expansion_factor=8, k=k) for k in (16, 32)] + [relu, SaeConfig("batchtopk", d_in=D_IN, expansion_factor=8, k=32)]
    harvest = write_harvest(tempfile.mkdtemp(prefix="bench-train-"), shards=8, rows=8192)
    stream = StreamSpec(harvest=harvest, hookpoint=HOOKPOINT, batch_size=args.batch, shuffle_buffer=65_536, loop=True)
    grouped = timed_stream_fit(make_trainers(group, args.steps, device), stream)
    separate = sum(timed_stream_fit(make_trainers([cfg], args.steps, device), stream) for cfg in group)
    print(f"group of 4 on one Parquet stream: {4 * tokens / grouped:>10.0f} SAE-tokens/s ({grouped:.1f}s)")
    print(f"4 separate runs, 4 streams:       {4 * tokens / separate:>10.0f} SAE-tokens/s ({separate:.1f}s)")
    print(f"ratio grouped/separate throughput: {separate / grouped:.2f}x")


if __name__ == "__main__":
    main()
