"""torch.profiler table of one saeflow training step (top ops by self CPU time).

Run: `.venv/bin/python -m bench.profile_step [--architecture topk] [--expansion 8] [--batch 1024] [--bf16]
[--threads N] [--by-shape]`.
The allocator is set as the training workers set it; 3 warm-up steps, then 5 profiled steps.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

D_IN = 576


def profiled_trainer(architecture: str, expansion: int, batch: int, bf16: bool):
    """A warmed-up SaeTrainer and its batch."""
    from infra.allocator import keep_freed_memory
    from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae

    keep_freed_memory()
    x_BD = torch.randn(batch, D_IN, generator=torch.Generator().manual_seed(0)) * 3 + 1
    config = SaeConfig(architecture, d_in=D_IN, expansion_factor=expansion, k=32, normalize_activations=False,
                       b_dec_init="zeros")
    train = TrainConfig(total_steps=100, decay_fraction=0.0, max_grad_norm=None,
                        autocast_bf16="always" if bf16 else "never")
    trainer = SaeTrainer(build_sae(config), train)
    for _ in range(3):
        trainer.train_step(x_BD)
    return trainer, x_BD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="topk")
    parser.add_argument("--expansion", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--rows", type=int, default=18)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--by-shape", action="store_true", help="group ops by input shape too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer, x_BD = profiled_trainer(args.architecture, args.expansion, args.batch, args.bf16)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.by_shape) as prof:
        for _ in range(5):
            trainer.train_step(x_BD)
    averages = prof.key_averages(group_by_input_shape=args.by_shape)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
