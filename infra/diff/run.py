"""Train a crosscoder on row-aligned harvests and write the latent diff (the diff stage's work).

Layout under {root}/diffs/{diff_id}/: crosscoder/ (weights + config), checkpoint/ (resumable
state), latents.parquet (one row per latent), relative_norms.png, latent_scaling.png,
first_present.png (more than two sources), summary.json (written last: the commit marker that
makes the diff trusted and lets a re-run return at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from infra.activations.stream import SeqSelection, StreamSpec, iter_batches, split_eval
from infra.allocator import keep_freed_memory
from infra.diff.crosscoder_store import save_crosscoder
from infra.diff.report import first_present_histogram, latent_scaling_scatter, latents_frame, relative_norm_histogram
from infra.parquet_io import read_parquet, write_parquet_atomic
from infra.sae_store import load_training_state, save_training_state
from infra.storage import exists, join, read_json, write_bytes_atomic, write_json_atomic
from infra.training.group import HISTORY_FILE
from sae_core import SaeTrainer, TrainConfig, fit_many
from sae_core.crosscoder import build_crosscoder
from sae_core.crosscoder_config import CrosscoderConfig
from sae_core.devices import pick_device
from sae_core.diffing import classify_with_scaling, diff_summary

SUMMARY_FILE = "summary.json"


@dataclass
class DiffPlan:
    """Everything the crosscoder actor needs, JSON-able."""

    diff_id: str
    root: str
    models: list[str]
    harvests: list[str]
    hookpoint: str
    crosscoder_config: dict[str, Any]
    train_config: dict[str, Any]
    batch_size: int
    eval_contexts: int
    checkpoint_every: int
    shuffle_buffer: int
    shared_band: tuple[float, float]
    exclusive_margin: float
    seed: int = 0
    exclusive_ratio: float = 0.3
    """Latent scaling: a norm-exclusive latent stays exclusive only if both beta ratios are below this."""
    presence_fraction: float = 0.3
    """A latent is present in a source when its decoder norm there is >= this fraction of its largest."""

    def uri(self, *parts: str) -> str:
        """A key under this diff's folder."""
        return join(self.root, "diffs", self.diff_id, *parts)


def diff_done(plan: DiffPlan) -> bool:
    """Whether the diff's summary (its commit marker) exists."""
    return exists(plan.uri(SUMMARY_FILE))


class CrosscoderWorker:
    """A Ray actor training one diff's crosscoder with checkpoint/resume, then writing the diff."""

    def __init__(self, plan: dict[str, Any], num_threads: int | None = None) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        self.plan = DiffPlan(**plan)
        self.device = pick_device()

    def _stream(self, seqs: SeqSelection, training: bool) -> StreamSpec:
        plan = self.plan
        return StreamSpec(
            harvest=plan.harvests[0], hookpoint=plan.hookpoint, batch_size=plan.batch_size, seed=plan.seed,
            seqs=seqs, loop=training, drop_last=training, aligned_harvests=tuple(plan.harvests[1:]),
            shuffle_buffer=plan.shuffle_buffer if training else 0,
        )

    def run(self, item: int = 0) -> dict[str, Any]:
        """Train (or resume), evaluate and write the diff; returns its summary."""
        plan = self.plan
        if diff_done(plan):
            return read_json(plan.uri(SUMMARY_FILE))
        keep_freed_memory()  # training reallocates the same large tensors every step
        train_range, eval_range = split_eval(plan.harvests[0], plan.eval_contexts)
        restored = load_training_state(plan.uri("checkpoint"), device=self.device)
        if restored is None:
            model = build_crosscoder(CrosscoderConfig.from_dict(plan.crosscoder_config)).to(self.device)
            trainer, history, start = SaeTrainer(model, TrainConfig.from_dict(plan.train_config)), [], 0
        else:
            trainer, extra = restored
            history, start = list(extra.get("history", [])), int(extra["batches_consumed"])
        for report in fit_many([trainer], iter_batches(self._stream(train_range, training=True), start_batch=start)):
            consumed = start + report.step + 1
            if consumed % 50 == 0:
                history.append({"step": consumed, **{k: float(v) for k, v in report.metrics[0].items()}})
            if consumed % plan.checkpoint_every == 0:
                save_training_state(trainer, plan.uri("checkpoint"), extra={"batches_consumed": consumed, "history": history})
        return self._write_diff(trainer, history, eval_range)

    @torch.no_grad()
    def _write_diff(self, trainer: SaeTrainer, history: list[dict[str, float]], eval_range: SeqSelection) -> dict[str, Any]:
        plan, crosscoder = self.plan, trainer.sae.eval()
        x_BMD = torch.cat([batch.to(self.device) for batch in iter_batches(self._stream(eval_range, training=False))])
        acts_BF = crosscoder.encode(x_BMD)
        x_hat_BMD = crosscoder.decode(acts_BF)
        last = len(plan.harvests) - 1
        classes = classify_with_scaling(crosscoder.scale_inputs(x_BMD), acts_BF, crosscoder.W_dec, crosscoder.b_dec, 0, last,
                                        plan.shared_band, plan.exclusive_margin, plan.exclusive_ratio)
        summary = diff_summary(crosscoder.W_dec, x_BMD, x_hat_BMD, acts_BF, 0, last, plan.shared_band, plan.exclusive_margin, classes)
        frame = latents_frame(crosscoder.W_dec, acts_BF, classes, plan.presence_fraction)
        save_crosscoder(crosscoder, plan.uri("crosscoder"), metadata={"models": plan.models, "hookpoint": plan.hookpoint})
        write_parquet_atomic(plan.uri("latents.parquet"), frame)
        write_bytes_atomic(plan.uri("relative_norms.png"), relative_norm_histogram(frame, plan.models, plan.shared_band, plan.exclusive_margin))
        write_bytes_atomic(plan.uri("latent_scaling.png"), latent_scaling_scatter(frame, plan.models, plan.exclusive_ratio))
        if len(plan.models) > 2:
            write_bytes_atomic(plan.uri("first_present.png"), first_present_histogram(frame, plan.models))
        write_json_atomic(plan.uri(HISTORY_FILE), history)
        examined = frame[frame["norm_class"].isin(["a_only", "b_only"])]
        summary.update(
            exclusive_ratio=plan.exclusive_ratio,
            beta_ratio_median={"reconstruction": _median(examined["beta_ratio_reconstruction"]), "error": _median(examined["beta_ratio_error"])},
            first_present_counts={str(m): int((frame.loc[frame["class"] != "dead", "first_present_source"] == m).sum()) for m in range(len(plan.models))},
            diff_id=plan.diff_id, models=plan.models, hookpoint=plan.hookpoint, eval_tokens=int(x_BMD.shape[0]),
            steps=trainer.step, device_seconds=trainer.device_seconds, latents_uri=plan.uri("latents.parquet"),
        )
        write_json_atomic(plan.uri(SUMMARY_FILE), _jsonable(summary))
        return read_json(plan.uri(SUMMARY_FILE))


def _median(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.median()) if len(values) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def read_latents(plan: DiffPlan) -> pd.DataFrame:
    """latents.parquet as pandas."""
    return read_parquet(plan.uri("latents.parquet")).to_pandas()
