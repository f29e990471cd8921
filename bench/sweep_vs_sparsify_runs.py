"""One SAE trained by EleutherAI's sparsify the way its CLI trains it: the worker side of
bench/sweep_vs_sparsify.py.

Runs as `python -m bench.sweep_vs_sparsify_runs JSON` under sparsify's interpreter (its own
virtualenv), one fresh process per SAE, as a researcher running `python -m sparsify` once per grid
point would. sparsify's `__main__` loads the model with `device_map="cuda:0"`, so on a CPU this does
what its `load_artifacts` + `run` do, minus the hub: `AutoModel.from_pretrained(local dir)`, a
tokenized `datasets.Dataset` (input_ids only, so sparsify skips tokenizing), then
`Trainer(cfg, dataset, model).fit()`, which runs the model forward on every batch and trains on the
hooked activations. Imports only torch, transformers, datasets, sparsify and bench.sparsify_runs (torch only).

Prints one JSON line: seconds from process start to the end of fit (imports, model load, training,
sparsify's final save), fit seconds alone, then held-out explained variance and L0 (untimed).
"""

from __future__ import annotations

import json
import sys
import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of each run's cost

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.sparsify_runs import explained_variance  # noqa: E402 - torch only: importable under sparsify's interpreter


def train(model_dir: str, tokens_path: str, hookpoint: str, expansion: int, k: int, lr: float, batch_contexts: int,
          steps: int, warmup_steps: int, exclude_tokens: list[int], save_dir: str):
    """sparsify's Trainer on `steps` batches of `batch_contexts` contexts; returns (fit seconds, the SAE)."""
    from datasets import Dataset
    from sparsify import SaeConfig, TrainConfig, Trainer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    ids_NS = np.load(tokens_path)["train_ids_NS"][: steps * batch_contexts]
    dataset = Dataset.from_dict({"input_ids": ids_NS.astype(np.int64)}).with_format("torch")
    cfg = TrainConfig(
        SaeConfig(expansion_factor=expansion, k=k), batch_size=batch_contexts, optimizer="adam", lr=lr,
        lr_warmup_steps=warmup_steps, hookpoints=[hookpoint], exclude_tokens=exclude_tokens, log_to_wandb=False,
        save_every=10**9, save_dir=save_dir, run_name="sae",
    )
    trainer = Trainer(cfg, dataset, model)
    started = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - started, trainer.saes[hookpoint]


def score(sae, held_out_path: str) -> dict:
    """Explained variance and L0 on the held-out activations saved by the saeflow side's harvest."""
    held_ND = torch.load(held_out_path)
    with torch.no_grad():
        top_acts, top_indices, _ = sae.encode(held_ND)
        ev = explained_variance(held_ND, sae.decode(top_acts, top_indices))
        l0 = float((top_acts != 0).sum(dim=-1).float().mean())
    return {"ev": ev, "l0": l0}


def run(held_out_path: str, **train_kwargs) -> dict:
    """Train one SAE, stop the clock, then score it."""
    fit_seconds, sae = train(**train_kwargs)
    seconds = time.perf_counter() - STARTED
    return {"seconds": seconds, "fit_seconds": fit_seconds, **score(sae, held_out_path)}


if __name__ == "__main__":
    print(json.dumps(run(**json.loads(sys.argv[1]))))
