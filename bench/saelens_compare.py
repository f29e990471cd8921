"""SAE training throughput and quality: saeflow vs SAELens on the same activations, same device.

Activations: a saeflow harvest of the packaged SmolLM2-135M (d_in 576, blocks.6.hook_resid_post,
Python's pydoc text), saved once so every run sees the SAME batches in the SAME order.
Cases: TopK k=32 at 8x and 32x, ReLU/L1 at 8x; lr 3e-4 constant, Adam (0.9, 0.999), gradient
norm clipped to 1 (SAELens always clips), no input normalisation on either side, same token
budget; each in fp32 and with bf16 autocast (both libraries have the option).

Every run is its own subprocess, the libraries alternating, so neither inherits the other's
warm caches or allocator state; saeflow's run configures the allocator as its training workers
do (infra.allocator). A third column runs SAELens with that same allocator setting, to show
how much of the ratio is the allocator and how much the sparse kernels.

Reported: tokens/s, held-out explained variance and L0, ratio saeflow / SAELens (issue goal:
>= 1.5x at equal or better quality).
Run: `.venv/bin/python -m bench.saelens_compare [--tokens N] [--steps S] [--batch B] [--cases ...]`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from datetime import date
from pathlib import Path

import torch

from bench.library_runs import fit_saeflow, fit_saelens, in_subprocess

HOOKPOINT = "blocks.6.hook_resid_post"
D_IN = 576
LR = 3e-4
CASES = {"topk-8x": ("topk", 8), "topk-32x": ("topk", 32), "relu-8x": ("relu", 8)}
L1_COEFFICIENT = 5.0


def harvested_activations(num_tokens: int) -> torch.Tensor:
    """[tokens, 576] float32 activations (BOS rows dropped) from a fresh saeflow harvest."""
    from infra.activations.store import activations_numpy, open_activations
    from infra.harvest.plan import harvest_in_process, plan_harvest
    from infra.lm.models import PACKAGED_SMOLLM2
    from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec

    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=PACKAGED_SMOLLM2, context_length=128, num_tokens=num_tokens)
    job = plan_harvest(PACKAGED_SMOLLM2, [HOOKPOINT], spec, tempfile.mkdtemp(prefix="bench-cmp-"), dtype="float32")
    harvest_in_process(job)
    table = open_activations(job.harvest, HOOKPOINT).to_table()
    keep = ~table.column("special").to_numpy(zero_copy_only=False)
    return torch.from_numpy(activations_numpy(table)[keep].copy())


def batches(x_ND: torch.Tensor, batch: int, steps: int):
    """The same deterministic batch sequence for both libraries (epochs reshuffled by seed)."""
    per_epoch = len(x_ND) // batch
    for step in range(steps):
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(x_ND), generator=torch.Generator().manual_seed(epoch))
        yield x_ND[order[index * batch : (index + 1) * batch]]


def train_saeflow(architecture: str, expansion: int, x_ND, batch: int, steps: int, bf16: bool):
    from infra.allocator import keep_freed_memory
    from sae_core import SaeConfig, TrainConfig

    keep_freed_memory()
    config = SaeConfig(architecture, d_in=D_IN, expansion_factor=expansion, k=32, sparsity_coefficient=L1_COEFFICIENT,
                       sparsity_warmup_fraction=0.0, normalize_activations=False, b_dec_init="zeros")
    train = TrainConfig(total_steps=steps, lr=LR, decay_fraction=0.0, max_grad_norm=1.0, autocast_bf16="always" if bf16 else "never")
    return fit_saeflow(config, train, batches(x_ND, batch, steps))


def train_saelens(architecture: str, expansion: int, x_ND, batch: int, steps: int, bf16: bool, allocator: bool):
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig

    if allocator:
        from infra.allocator import keep_freed_memory

        keep_freed_memory()
    d_sae = D_IN * expansion
    if architecture == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, k=32))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=D_IN, d_sae=d_sae, l1_coefficient=L1_COEFFICIENT))
    seconds = fit_saelens(sae, batches(x_ND, batch, steps + 1), batch, steps, LR, autocast=bf16)
    return seconds, sae.eval()


def run_one(library: str, case: str, data_path: str, batch: int, steps: int, bf16: bool) -> dict:
    """Train one SAE in this (sub)process; return seconds, held-out EV and L0."""
    from sae_core.metrics import explained_variance, l0_norm

    torch.manual_seed(0)
    data = torch.load(data_path)
    architecture, expansion = CASES[case]
    if library == "saeflow":
        seconds, sae = train_saeflow(architecture, expansion, data["train"], batch, steps, bf16)
    else:
        seconds, sae = train_saelens(architecture, expansion, data["train"], batch, steps, bf16, library == "saelens+alloc")
    with torch.no_grad():
        acts_NF = sae.encode(data["held_out"])
        ev = float(explained_variance(data["held_out"], sae.decode(acts_NF)))
    return {"tok_s": batch * steps / seconds, "ev": ev, "l0": float(l0_norm(acts_NF))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65_536, help="tokens harvested")
    parser.add_argument("--held-out", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--libraries", nargs="+", default=["saeflow", "saelens", "saelens+alloc"])
    args = parser.parse_args()
    x_ND = harvested_activations(args.tokens)
    data_path = str(Path(tempfile.mkdtemp(prefix="bench-cmp-")) / "activations.pt")
    torch.save({"held_out": x_ND[: args.held_out].clone(), "train": x_ND[args.held_out :].clone()}, data_path)
    print(f"# {date.today()} {platform.node()} {platform.processor() or platform.machine()} torch {torch.__version__} "
          f"threads {torch.get_num_threads()}")
    print(f"# {len(x_ND) - args.held_out} train rows, {args.held_out} held out, {args.steps} steps x {args.batch} tokens, "
          f"d_in {D_IN}")
    print("| case | precision | " + " | ".join(args.libraries) + " | ratio saeflow / SAELens |")
    print("|---" * (len(args.libraries) + 3) + "|")
    for case in args.cases:
        for precision in args.precisions:
            results = {lib: in_subprocess(run_one, lib, case, data_path, args.batch, args.steps, precision == "bf16")
                       for lib in args.libraries}
            cells = [f"{r['tok_s']:,.0f} tok/s, EV {r['ev']:.3f}, L0 {r['l0']:.0f}" for r in results.values()]
            ratio = results["saeflow"]["tok_s"] / results["saelens"]["tok_s"] if "saelens" in results else float("nan")
            print(f"| {case} | {precision} | " + " | ".join(cells) + f" | **{ratio:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
