"""Inputs for the features-stage tests: a synthetic harvest with known features, tiny-model harvests, SAEs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from infra.activations.store import TOKENS_FILE, harvest_uri, shard_schema, shard_table, write_manifest, write_shard_file
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSet, TokenSpec, token_table
from infra.sae_store import save_sae
from infra.storage import join, write_bytes_atomic
from sae_core import SaeConfig, SaeTrainer, TrainConfig, build_sae, fit_many
from sae_core.synthetic import SyntheticFeatures
from tests.infra.tiny_models import build_tiny_model

SYNTH_HOOK = "blocks.0.hook_resid_post"
TINY_HOOK = "blocks.1.hook_resid_post"


def synthetic_coefficients(truth: SyntheticFeatures, rows: int, seed: int) -> np.ndarray:
    """[rows, num_features] known feature magnitudes (zero where a feature is off), as truth.sample draws them."""
    generator = torch.Generator().manual_seed(seed)
    active_TN = torch.rand(rows, truth.num_features, generator=generator) < truth.firing_probability
    magnitude_TN = torch.rand(rows, truth.num_features, generator=generator)
    return (active_TN * magnitude_TN).numpy()


def write_synthetic_harvest(root: str, truth: SyntheticFeatures, coef_TN: np.ndarray, context: int = 16, per_shard: int = 32) -> str:
    """A committed harvest (no model) whose activations are coef @ truth.directions, in float32."""
    acts_TD = (torch.from_numpy(coef_TN) @ truth.directions_ND).numpy().astype(np.float32)
    contexts = len(acts_TD) // context
    harvest = harvest_uri(root, "synthetic-0123456789")
    shards = []
    for index, start in enumerate(range(0, contexts, per_shard)):
        stop = min(start + per_shard, contexts)
        seq_N = np.repeat(np.arange(start, stop, dtype=np.int64), context)
        pos_N = np.tile(np.arange(context, dtype=np.int32), stop - start)
        rows = slice(start * context, stop * context)
        schema = shard_schema(truth.d, "float32", {"hookpoint": SYNTH_HOOK, "model": "synthetic"})
        table = shard_table(seq_N, pos_N, np.zeros(len(seq_N), np.int32), np.zeros(len(seq_N), bool), acts_TD[rows], schema)
        files = {SYNTH_HOOK: write_shard_file(harvest, SYNTH_HOOK, index, table)}
        shards.append({"index": index, "rows": len(seq_N), "seq_start": start, "seq_stop": stop, "files": files})
    one_document_each_NS = np.repeat(np.arange(contexts, dtype=np.int64)[:, None], context, axis=1)
    tokens = TokenSet(np.zeros((contexts, context), np.int32), np.zeros((contexts, context), bool), one_document_each_NS, np.arange(contexts, dtype=np.int64))
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(token_table(tokens), sink)
    write_bytes_atomic(join(harvest, TOKENS_FILE), sink.getvalue())
    write_manifest(harvest, {
        "harvest_id": "synthetic-0123456789", "model": "synthetic", "hookpoints": [SYNTH_HOOK], "d_model": truth.d,
        "vocab_size": 1, "dtype": "float32", "context_length": context, "num_contexts": contexts,
        "num_rows": contexts * context, "shards": shards,
    })
    return harvest


def train_sae(batches_BD, d_in: int, d_sae: int, k: int, steps: int, seed: int = 0, lr: float = 3e-3):
    """A TopK SAE trained on a stream of [B, d_in] batches."""
    sae = build_sae(SaeConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, seed=seed))
    trainer = SaeTrainer(sae, TrainConfig(total_steps=steps, lr=lr, warmup_steps=20))
    for _ in fit_many([trainer], batches_BD):
        pass
    return trainer.sae.eval()


def tiny_harvest(base: Path, family: str = "gpt2", contexts: int = 24, context: int = 32) -> tuple[str, Path]:
    """(harvest URI, model dir) of a tiny random-init model on pydoc text, float32."""
    model = build_tiny_model(family, base / family)
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=context, num_tokens=context * contexts)
    job = plan_harvest(str(model), [TINY_HOOK], spec, str(base / "root"), dtype="float32", contexts_per_shard=8)
    harvest_in_process(job, device="cpu")
    return job.harvest, model


def tiny_sae(harvest: str, directory: str, model: str, hook: str = TINY_HOOK, d_sae: int = 64, seed: int = 0) -> str:
    """A TopK SAE trained briefly on the harvest, saved in SAELens format with saeflow's metadata."""
    from infra.activations.stream import StreamSpec, iter_batches

    stream = iter_batches(StreamSpec(harvest=harvest, hookpoint=hook, batch_size=128, shuffle_buffer=512, loop=True))
    first = next(stream)
    sae = build_sae(SaeConfig(architecture="topk", d_in=first.shape[1], d_sae=d_sae, k=4, seed=seed))
    sae.init_from_data(first)
    trainer = SaeTrainer(sae, TrainConfig(total_steps=60, lr=3e-3, warmup_steps=5))
    for _ in fit_many([trainer], stream):
        pass
    stream.close()
    save_sae(trainer.sae.eval(), directory, metadata={"hook_name": hook, "model_name": model})
    return directory
