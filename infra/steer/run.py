"""Run the steering stage: one worker loads the model (and SAE) once, writes every table, then the stage commits.

Each table is skipped when it is already written (tables are atomic objects), and a stage whose
manifest exists is returned without loading anything, so a killed run resumes with what is missing.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import pandas as pd
import torch

from infra.activations.split import SeqSelection, split_eval
from infra.lm.hookpoints import Hookpoint
from infra.parquet_io import read_parquet
from infra.steer.ablation import harvest_rows, hookpoint_ablation, latent_ablation
from infra.steer.conditions import condition_edits, describe, hookpoint_activations, typical_norm
from infra.steer.contrastive import caa_vector, cosine_table, load_vector, save_vector
from infra.steer.generate import generate, prompt_ids, special_ids
from infra.steer.plan import SteerPlan
from infra.steer.report import write_report
from infra.steer.schemas import cosines_schema, generations_schema, hookpoint_ablation_schema, latent_ablation_schema, write_table
from infra.storage import exists, join, read_json, write_json_atomic
from sae_core.steering import next_token_shift

MANIFEST_FILE = "_manifest.json"
FORMAT_VERSION = 1
TABLES = {"generations": "generations.parquet", "caa_vector": "caa.safetensors", "caa_cosines": "caa_cosines.parquet",
          "hookpoint_ablation": "hookpoint_ablation.parquet", "latent_ablation": "latent_ablation.parquet"}


class Steerer:
    """Holds a plan's model, tokenizer and SAE; `steer(0)` writes every table of the stage that is missing."""

    def __init__(self, plan: SteerPlan, device: str | None = None, num_threads: int | None = None) -> None:
        from infra.lm.models import load_model
        from infra.sae_store import load_sae

        self.plan = plan
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model, self.tokenizer = load_model(self.plan.model, device=device)
        self.device = next(self.model.parameters()).device
        self.sae = load_sae(self.plan.sae, device=self.device).eval() if self.plan.sae else None
        self.hookpoint = Hookpoint.parse(self.plan.hookpoint)
        self.specials = special_ids(self.tokenizer)

    def uri(self, name: str) -> str:
        """Where one of TABLES lives."""
        return join(self.plan.steer, TABLES[name])

    def token(self, token_id: int) -> str:
        """A token as text."""
        return self.tokenizer.decode([token_id])

    @torch.no_grad()
    def steer(self, _item: int = 0) -> dict[str, Any]:
        """Write the missing tables; returns {typical_norm, written, seconds}."""
        started, s = time.perf_counter(), self.plan.settings
        sequences = [prompt_ids(self.tokenizer, p) for p in self.plan.prompts]
        norm = typical_norm(self.model, self.hookpoint, sequences, self.specials)
        written = []
        caa_D = None
        if s.positive_prompts:
            if not exists(self.uri("caa_vector")):
                vector_D = caa_vector(self.model, self.tokenizer, self.hookpoint, s.positive_prompts, s.negative_prompts)
                save_vector(self.uri("caa_vector"), vector_D, self.plan.hookpoint, self.plan.model)
                written.append("caa_vector")
            caa_D = load_vector(self.uri("caa_vector"))
            if self.sae is not None and not exists(self.uri("caa_cosines")):
                write_table(self.uri("caa_cosines"), cosine_table(caa_D, self.sae), cosines_schema(self.plan.d_sae))
                written.append("caa_cosines")
        if self.plan.conditions and not exists(self.uri("generations")):
            write_table(self.uri("generations"), self.generations(sequences, norm, caa_D), generations_schema(len(sequences)))
            written.append("generations")
        if s.ablation_modes:
            written += self.ablations(sequences)
        return {"typical_norm": norm, "written": written, "seconds": time.perf_counter() - started}

    def generations(self, sequences: list[list[int]], norm: float, caa_D: torch.Tensor | None) -> pd.DataFrame:
        """Baseline vs each condition for every prompt: texts, ids, next-token KL and promoted tokens."""
        s, rows = self.plan.settings, []
        edits = condition_edits(self.plan, self.sae, norm, caa_D)
        eos = self.tokenizer.eos_token_id
        for index, ids in enumerate(sequences):
            seed = s.seed * 1_000_003 + index  # per prompt, identical for the baseline and every condition
            base = generate(self.model, self.hookpoint, ids, self.specials, None, s.max_new_tokens, s.temperature, seed, eos)
            for condition, edit in edits.items():
                run = generate(self.model, self.hookpoint, ids, self.specials, edit, s.max_new_tokens, s.temperature, seed, eos)
                shift = next_token_shift(base.first_logits_V, run.first_logits_V, s.top_tokens)
                rows.append({
                    "prompt_index": index, "prompt": self.plan.prompts[index], "condition": condition,
                    "description": describe(self.plan, condition),
                    "baseline_text": self.tokenizer.decode(base.new_ids), "steered_text": self.tokenizer.decode(run.new_ids),
                    "baseline_ids": base.new_ids, "steered_ids": run.new_ids, "changed": base.new_ids != run.new_ids,
                    "kl_next": shift["kl"], "top_base": self.token(shift["top_base"]), "top_steered": self.token(shift["top_steered"]),
                    "promoted_ids": shift["promoted_ids"], "promoted_tokens": [self.token(t) for t in shift["promoted_ids"]],
                    "promoted_deltas": shift["promoted_deltas"],
                })
        return pd.DataFrame(rows).astype({"prompt_index": "int32"})

    def eval_sequences(self, prompts: list[list[int]]) -> list[list[int]]:
        """The harvest's held-out contexts (split_eval with eval_contexts=contexts: what a sweep evaluates on) when there is a harvest, else the prompts."""
        if self.plan.harvest is None:
            return prompts
        from infra.activations.store import read_tokens_table
        from infra.lm.tokens import tokens_from_table

        token_ids_NS = tokens_from_table(read_tokens_table(self.plan.harvest)).token_ids_NS
        # ids keep their random draw order, so the first `contexts` are a sample of the held-out ones (exactly that many).
        return [token_ids_NS[i].tolist() for i in sorted(self.held_out.ids[: self.plan.settings.contexts])]

    @cached_property
    def held_out(self) -> SeqSelection:
        """The harvest's held-out contexts: split_eval with eval_contexts=contexts, what a sweep evaluates on."""
        return split_eval(self.plan.harvest, self.plan.settings.contexts)[1]

    def stats_rows(self, sequences: list[list[int]]) -> torch.Tensor:
        """[M, D] activations the mean / resample ablations draw on: the harvest's, else the sequences' own."""
        if self.plan.harvest is not None:
            # The scored contexts stay out of the baselines.
            return harvest_rows(self.plan.harvest, self.plan.hookpoint, self.plan.settings.stat_rows, self.held_out.ids).to(self.device)
        rows = [hookpoint_activations(self.model, self.hookpoint, ids)[~torch.isin(torch.tensor(ids), self.specials)] for ids in sequences]
        return torch.cat(rows)

    def ablations(self, prompts: list[list[int]]) -> list[str]:
        """The hookpoint ablation table, and the latent ablation table when latents are named."""
        s, written = self.plan.settings, []
        todo = [n for n in ("hookpoint_ablation", "latent_ablation") if not exists(self.uri(n))]
        if not s.ablation_latents and "latent_ablation" in todo:
            todo.remove("latent_ablation")
        if not todo:
            return written
        sequences = self.eval_sequences(prompts)
        stats_ND = self.stats_rows(sequences)
        if "hookpoint_ablation" in todo:
            frame = hookpoint_ablation(self.model, self.hookpoint, sequences, self.specials, s.ablation_modes, stats_ND, self.sae, s.seed)
            write_table(self.uri("hookpoint_ablation"), frame, hookpoint_ablation_schema())
            written.append("hookpoint_ablation")
        if "latent_ablation" in todo:
            frame = latent_ablation(self.model, self.hookpoint, sequences, self.specials, self.sae, s.ablation_latents, s.ablation_modes,
                                    stats_ND, s.seed)
            write_table(self.uri("latent_ablation"), frame, latent_ablation_schema(self.plan.d_sae))
            written.append("latent_ablation")
        return written


def run_steer(plan: SteerPlan, in_process: bool = False, device: str | None = None) -> dict[str, Any]:
    """Write the tables (on a Ray actor unless in_process), then the report and the manifest; returns {manifest, report, cached}."""
    manifest_uri = join(plan.steer, MANIFEST_FILE)
    if exists(manifest_uri):
        return {"manifest": manifest_uri, "report": read_json(manifest_uri)["report"], "cached": True}
    started = time.perf_counter()
    if in_process:
        record = Steerer(plan, device=device).steer(0)
    else:
        from infra.ray_pool import run_pool

        record = run_pool(Steerer, (plan,), "steer", [0], 1, f"steer-{plan.steer_id}")[0]
    return commit_steer(plan, record, started)


def commit_steer(plan: SteerPlan, record: dict[str, Any], started: float) -> dict[str, Any]:
    """Report from the written tables, then the manifest (last)."""
    files = {name: TABLES[name] for name in TABLES if exists(join(plan.steer, TABLES[name]))}
    tables = {name: read_parquet(join(plan.steer, f)).to_pandas() for name, f in files.items() if f.endswith(".parquet")}
    report = write_report(plan, tables, record["typical_norm"])
    summary = {}
    if "generations" in tables:
        summary["kl_next"] = tables["generations"].groupby("condition")["kl_next"].mean().to_dict()
        summary["changed"] = tables["generations"].groupby("condition")["changed"].mean().to_dict()
    if "hookpoint_ablation" in tables:
        recovered = tables["hookpoint_ablation"].set_index("mode")["ce_loss_recovered"].to_dict()
        summary["ce_loss_recovered"] = {mode: None if value != value else value for mode, value in recovered.items()}  # NaN is not JSON
    manifest = {"format_version": FORMAT_VERSION, **plan.to_dict(), "conditions": plan.conditions, "typical_norm": record["typical_norm"],
                "files": files, "summary": summary, "report": report, "seconds": time.perf_counter() - started}
    manifest_uri = join(plan.steer, MANIFEST_FILE)
    write_json_atomic(manifest_uri, manifest)  # last: from here readers may trust the stage
    return {"manifest": manifest_uri, "report": report, "cached": False, "seconds": manifest["seconds"]}
