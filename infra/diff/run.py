"""Train a crosscoder on row-aligned harvests and write the latent diff (the diff stage's work).

Layout under {root}/diffs/{diff_id}/: crosscoder/ (weights + config), checkpoint/ (resumable
state), latents.parquet (one row per latent), relative_norms.png, latent_scaling.png,
first_present.png (more than two sources), summary.json (written last: the commit marker that
makes the diff trusted and lets a re-run return at once).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from infra.activations.stream import SeqSelection, StreamSpec, iter_batches, split_eval
from infra.diff.crosscoder_store import save_crosscoder
from infra.diff.plan import DiffPlan
from infra.diff.report import first_present_histogram, latent_scaling_scatter, latents_frame, relative_norm_histogram
from infra.parquet_io import read_parquet, write_parquet_atomic
from infra.storage import exists, read_json, write_bytes_atomic, write_json_atomic
from infra.training.group import HISTORY_FILE
from infra.training.loop import TrainingJob, fit_jobs
from sae_core import SaeTrainer
from sae_core.devices import pick_device
from sae_core.diffing import classify_with_scaling, diff_summary

SUMMARY_FILE = "summary.json"


def diff_done(plan: DiffPlan) -> bool:
    """Whether the diff's summary (its commit marker) exists."""
    return exists(plan.uri(SUMMARY_FILE))


class CrosscoderWorker:
    """A Ray actor training one diff's crosscoder with checkpoint/resume, then writing the diff."""

    def __init__(self, plan: DiffPlan, num_threads: int | None = None) -> None:
        if num_threads:
            torch.set_num_threads(num_threads)
        self.plan = plan
        self.device = pick_device()

    def _stream(self, seqs: SeqSelection, training: bool) -> StreamSpec:
        plan = self.plan
        return StreamSpec(
            harvest=plan.harvests[0], hookpoint=plan.hookpoint, batch_size=plan.batch_size, seed=plan.seed,
            seqs=seqs, loop=training, drop_last=training, aligned_harvests=tuple(plan.harvests[1:]),
            aligned_hookpoints=tuple(plan.hookpoints[1:]),
            shuffle_buffer=plan.shuffle_buffer if training else 0,
        )

    def run(self, item: int = 0) -> dict[str, Any]:
        """Train (or resume), evaluate and write the diff; returns its summary."""
        plan = self.plan
        if diff_done(plan):
            return read_json(plan.uri(SUMMARY_FILE))
        train_range, eval_range = split_eval(plan.harvests[0], plan.eval_contexts)
        job = TrainingJob(plan.diff_id, plan.crosscoder_config, plan.train_config, plan.uri("checkpoint"))
        stream_from = lambda start: iter_batches(self._stream(train_range, training=True), start_batch=start)  # noqa: E731
        fitted = fit_jobs([job], stream_from, self.device, plan.checkpoint_every)[0]
        if fitted.trainer.failure is not None:
            # A diverged crosscoder's latents would be read as a diff: fail the stage instead (its checkpoint stays).
            raise FloatingPointError(f"diff {plan.diff_id}: crosscoder training failed: {fitted.trainer.failure}")
        return self._write_diff(fitted.trainer, fitted.history, eval_range)

    @torch.no_grad()
    def _write_diff(self, trainer: SaeTrainer, history: list[dict[str, float]], eval_range: SeqSelection) -> dict[str, Any]:
        plan, crosscoder = self.plan, trainer.sae.eval()
        x_BMD = torch.cat([batch.to(self.device) for batch in iter_batches(self._stream(eval_range, training=False))])
        acts_BF = crosscoder.encode(x_BMD)
        x_hat_BMD = crosscoder.decode(acts_BF)
        last = len(plan.sources) - 1
        classes = classify_with_scaling(crosscoder.scale_inputs(x_BMD), acts_BF, crosscoder.W_dec, crosscoder.b_dec, 0, last,
                                        plan.shared_band, plan.exclusive_margin, plan.exclusive_ratio)
        summary = diff_summary(crosscoder.W_dec, x_BMD, x_hat_BMD, acts_BF, 0, last, plan.shared_band, plan.exclusive_margin, classes)
        frame = latents_frame(crosscoder.W_dec, acts_BF, classes, plan.presence_fraction)
        save_crosscoder(crosscoder, plan.uri("crosscoder"), metadata={"models": plan.models, "hookpoint": plan.hookpoint, "hookpoints": plan.hookpoints})
        write_parquet_atomic(plan.uri("latents.parquet"), frame)
        write_bytes_atomic(plan.uri("relative_norms.png"), relative_norm_histogram(frame, plan.sources, plan.shared_band, plan.exclusive_margin))
        write_bytes_atomic(plan.uri("latent_scaling.png"), latent_scaling_scatter(frame, plan.sources, plan.exclusive_ratio))
        if len(plan.sources) > 2:
            write_bytes_atomic(plan.uri("first_present.png"), first_present_histogram(frame, plan.sources))
        write_json_atomic(plan.uri(HISTORY_FILE), history)
        examined = frame[frame["norm_class"].isin(["a_only", "b_only"])]
        summary.update(
            exclusive_ratio=plan.exclusive_ratio,
            beta_ratio_median={"reconstruction": _median(examined["beta_ratio_reconstruction"]), "error": _median(examined["beta_ratio_error"])},
            first_present_counts={str(m): int((frame.loc[frame["class"] != "dead", "first_present_source"] == m).sum()) for m in range(len(plan.sources))},
            diff_id=plan.diff_id, models=plan.models, hookpoint=plan.hookpoint, sources=plan.sources, eval_tokens=int(x_BMD.shape[0]),
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
