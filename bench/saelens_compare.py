"""SAE training throughput and quality: saeflow vs SAELens on the same activations, same device.

Activations: a saeflow harvest of the packaged SmolLM2-135M (d_in 576, blocks.6.hook_resid_post,
Python's pydoc text), loaded once into memory so both trainers see the SAME batches in the SAME
order. Architectures: TopK k=32 at 8x and ReLU/L1 at 8x, lr 3e-4, no input normalisation on
either side (identical inputs), same token budget. Reported: tokens/s, held-out explained
variance and L0, and the ratio saeflow / SAELens (issue goal: >= 1.5x at equal or better quality).
Run: `.venv/bin/python -m bench.saelens_compare [--tokens N] [--batch B]`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date

import torch
from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig

from infra.activation_store import activations_numpy, open_activations
from infra.harvest_plan import harvest_in_process, plan_harvest
from infra.models import PACKAGED_SMOLLM2
from infra.tokens import BUILTIN_PYDOC, TokenSpec
from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.metrics import explained_variance, l0_norm

HOOKPOINT = "blocks.6.hook_resid_post"


def harvested_activations(num_tokens: int) -> torch.Tensor:
    """[tokens, 576] float32 activations (BOS rows dropped) from a fresh saeflow harvest."""
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=PACKAGED_SMOLLM2, context_length=128, num_tokens=num_tokens)
    job = plan_harvest(PACKAGED_SMOLLM2, [HOOKPOINT], spec, tempfile.mkdtemp(prefix="bench-cmp-"), dtype="float32")
    harvest_in_process(job)
    table = open_activations(job.harvest, HOOKPOINT).to_table()
    keep = ~table.column("special").to_numpy(zero_copy_only=False)
    return torch.from_numpy(activations_numpy(table)[keep].copy())


def batches(x_ND: torch.Tensor, batch: int, steps: int):
    """The same deterministic batch sequence for both libraries."""
    order = torch.randperm(len(x_ND), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        start = (step * batch) % (len(order) - batch)
        yield x_ND[order[start : start + batch]]


def run_saeflow(config: SaeConfig, x_ND: torch.Tensor, batch: int, steps: int) -> tuple[float, torch.nn.Module]:
    trainer = SaeTrainer(build_sae(config), TrainConfig(total_steps=steps, lr=3e-4, decay_fraction=0.0, max_grad_norm=None))
    started = time.perf_counter()
    for _ in fit_many([trainer], batches(x_ND, batch, steps)):
        pass
    return time.perf_counter() - started, trainer.sae.eval()


def run_saelens(sae: torch.nn.Module, x_ND: torch.Tensor, batch: int, steps: int) -> tuple[float, torch.nn.Module]:
    cfg = SAETrainerConfig(total_training_samples=batch * steps, train_batch_size_samples=batch, lr=3e-4, lr_end=3e-4,
                           logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=batches(x_ND, batch, steps + 1))
    started = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - started, sae.eval()


@torch.no_grad()
def quality(encode, decode, x_ND: torch.Tensor) -> tuple[float, float]:
    acts_NF = encode(x_ND)
    return float(explained_variance(x_ND, decode(acts_NF))), float(l0_norm(acts_NF))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16_384, help="tokens harvested")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    x_ND = harvested_activations(args.tokens)
    held_out_ND, train_ND = x_ND[:2048], x_ND[2048:]
    print(f"# {date.today()} {platform.node()} torch {torch.__version__} threads {torch.get_num_threads()}")
    print(f"# {len(train_ND)} train rows, {len(held_out_ND)} held out, {args.steps} steps x {args.batch} tokens, d_in 576, 8x")
    cases = {
        "topk k=32 8x": (SaeConfig("topk", d_in=576, expansion_factor=8, k=32, normalize_activations=False, b_dec_init="zeros"),
                         lambda: TopKTrainingSAE(TopKTrainingSAEConfig(d_in=576, d_sae=4608, k=32))),
        "relu 8x": (SaeConfig("relu", d_in=576, expansion_factor=8, sparsity_coefficient=5.0, normalize_activations=False, b_dec_init="zeros"),
                    lambda: StandardTrainingSAE(StandardTrainingSAEConfig(d_in=576, d_sae=4608, l1_coefficient=5.0))),
    }
    for name, (ours_cfg, theirs_factory) in cases.items():
        ours_s, ours = run_saeflow(ours_cfg, train_ND, args.batch, args.steps)
        theirs_s, theirs = run_saelens(theirs_factory(), train_ND, args.batch, args.steps)
        tokens = args.batch * args.steps
        ours_ev, ours_l0 = quality(ours.encode, ours.decode, held_out_ND)
        theirs_ev, theirs_l0 = quality(theirs.encode, theirs.decode, held_out_ND)
        print(f"{name:<14} saeflow {tokens / ours_s:7.0f} tok/s EV {ours_ev:.3f} L0 {ours_l0:6.1f} | "
              f"SAELens {tokens / theirs_s:7.0f} tok/s EV {theirs_ev:.3f} L0 {theirs_l0:6.1f} | speed ratio {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
