"""One timed training run of saeflow or EleutherAI's sparsify, and the encoder floor: the worker side
of bench/sparsify_compare.py.

Runs as `python -m bench.sparsify_runs JSON` under either library's interpreter (sparsify lives in its
own virtualenv), so it imports torch and the one library it drives, plus infra.allocator (ctypes only).
Prints one JSON line: steady-state tokens/s (the first `warmup` steps are not timed), peak RSS,
held-out explained variance and L0.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable, Iterator

import torch

D_IN = 576
LR = 3e-4
K = 32
CASES = {"topk-8x": ("topk", 8), "topk-32x": ("topk", 32), "batchtopk-8x": ("batchtopk", 8)}


def batches(x_ND: torch.Tensor, batch: int, steps: int) -> Iterator[torch.Tensor]:
    """The same deterministic batch sequence for every library (epochs reshuffled by seed)."""
    per_epoch = len(x_ND) // batch
    for step in range(steps):
        epoch, index = divmod(step, per_epoch)
        order = torch.randperm(len(x_ND), generator=torch.Generator().manual_seed(epoch))
        yield x_ND[order[index * batch : (index + 1) * batch]]


def timed_steps(step: Callable[[torch.Tensor], None], stream: Iterator[torch.Tensor], warmup: int) -> tuple[float, int]:
    """(seconds, tokens) of the steps after the first `warmup` ones."""
    seconds, tokens = 0.0, 0
    for index, x_BD in enumerate(stream):
        started = time.perf_counter()
        step(x_BD)
        if index >= warmup:
            seconds += time.perf_counter() - started
            tokens += len(x_BD)
    return seconds, tokens


def explained_variance(x_ND: torch.Tensor, x_hat_ND: torch.Tensor) -> float:
    """1 - FVU with the total variance about the per-dimension mean (sae_core.metrics' definition)."""
    residual = (x_ND - x_hat_ND).pow(2).sum()
    return float(1.0 - residual / (x_ND - x_ND.mean(dim=0)).pow(2).sum())


def run_saeflow(case: str, x_ND, held_ND, batch: int, steps: int, warmup: int, bf16: bool) -> dict:
    """saeflow's SaeTrainer.train_step on each batch; no gradient clipping (sparsify has none)."""
    from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae

    architecture, expansion = CASES[case]
    config = SaeConfig(architecture, d_in=D_IN, expansion_factor=expansion, k=K, normalize_activations=False,
                       b_dec_init="mean")
    train = TrainConfig(total_steps=steps, lr=LR, warmup_steps=0, decay_fraction=0.0, max_grad_norm=None,
                        autocast_bf16="always" if bf16 else "never")
    trainer = SaeTrainer(build_sae(config), train)
    seconds, tokens = timed_steps(trainer.train_step, batches(x_ND, batch, steps), warmup)
    sae = trainer.sae.eval()
    with torch.no_grad():
        acts_NF = sae.encode(held_ND)
        ev = explained_variance(held_ND, sae.decode(acts_NF))
        l0 = float((acts_NF != 0).sum(dim=-1).float().mean())
    return {"seconds": seconds, "tokens": tokens, "ev": ev, "l0": l0}


def run_sparsify(case: str, x_ND, held_ND, batch: int, steps: int, warmup: int, bf16: bool) -> dict:
    """sparsify's SparseCoder and the body of its Trainer's step (sparsify/trainer.py), with Adam.

    Per step, as its trainer does: decoder rows renormalised, forward (FusedEncoder: linear + ReLU +
    top-k, eager embedding_bag decoder on CPU), loss FVU (+ AuxK, which needs latents dead for 10M
    tokens, so is 0 here as in saeflow), backward, gradient parallel to the decoder rows removed,
    optimiser step. b_dec starts at the first batch's mean, as in its trainer. Adam at saeflow's lr
    (sparsify's default optimiser is schedule-free SignSGD; Adam is one of its options).
    """
    from sparsify import SparseCoder, SparseCoderConfig

    architecture, expansion = CASES[case]
    if architecture != "topk":
        raise ValueError(f"sparsify has no {architecture} activation (only topk and groupmax)")
    torch.manual_seed(0)
    sae = SparseCoder(D_IN, SparseCoderConfig(expansion_factor=expansion, k=K), device="cpu", dtype=torch.float32)
    optimizer = torch.optim.Adam(sae.parameters(), lr=LR)
    since_fired_F = torch.zeros(sae.num_latents, dtype=torch.long)

    def step(x_BD: torch.Tensor) -> None:
        if not hasattr(step, "started"):
            sae.b_dec.data = x_BD.mean(0)
            step.started = True
        sae.set_decoder_norm_to_unit_norm()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = sae(x_BD, dead_mask=since_fired_F > 10_000_000)
        (out.fvu + out.auxk_loss / 32).backward()  # sparsify's auxk_alpha 1/32 when AuxK is on
        sae.remove_gradient_parallel_to_decoder_directions()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            fired_F = torch.zeros_like(since_fired_F, dtype=torch.bool)
            fired_F[out.latent_indices.flatten()] = True
            since_fired_F.add_(len(x_BD)).masked_fill_(fired_F, 0)

    seconds, tokens = timed_steps(step, batches(x_ND, batch, steps), warmup)
    with torch.no_grad():
        sae.set_decoder_norm_to_unit_norm()
        top_acts, top_indices, _ = sae.encode(held_ND)
        ev = explained_variance(held_ND, sae.decode(top_acts, top_indices))
        l0 = float((top_acts != 0).sum(dim=-1).float().mean())
    return {"seconds": seconds, "tokens": tokens, "ev": ev, "l0": l0}


def run_floor(case: str, x_ND, held_ND, batch: int, steps: int, warmup: int, bf16: bool) -> dict:
    """The irreducible part of a step: (x - b_dec) W_enc + b_enc and its top-k, nothing else.

    Same shapes, same process settings; fp32 weights cast by autocast under bf16 (a mixed-precision
    step must cast its fp32 master weights each step too). BatchTopK's top-k is over the flattened batch.
    """
    architecture, expansion = CASES[case]
    generator = torch.Generator().manual_seed(0)
    W_enc_DF = torch.randn(D_IN, D_IN * expansion, generator=generator) / D_IN**0.5
    b_enc_F, b_dec_D = torch.zeros(D_IN * expansion), x_ND[:batch].mean(0)

    @torch.no_grad()
    def step(x_BD: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pre_BF = torch.addmm(b_enc_F, x_BD - b_dec_D, W_enc_DF)
        if architecture == "topk":
            pre_BF.topk(K, dim=-1, sorted=False)
        else:
            pre_BF.flatten().topk(K * len(x_BD), sorted=False)

    seconds, tokens = timed_steps(step, batches(x_ND, batch, steps), warmup)
    return {"seconds": seconds, "tokens": tokens, "ev": float("nan"), "l0": float("nan")}


RUNNERS = {"saeflow": run_saeflow, "sparsify": run_sparsify, "floor": run_floor}


def run(library: str, case: str, data_path: str, batch: int, steps: int, warmup: int, bf16: bool,
        threads: int = 0, allocator: bool = True) -> dict:
    """One run in this process: the allocator set as saeflow's training workers set it, then train and score."""
    if allocator:
        from infra.allocator import keep_freed_memory

        keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = torch.load(data_path)
    result = RUNNERS[library](case, data["train"], data["held_out"], batch, steps, warmup, bf16)
    result["tok_s"] = result["tokens"] / result["seconds"]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


if __name__ == "__main__":
    print(json.dumps(run(**json.loads(sys.argv[1]))))
