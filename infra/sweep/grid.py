"""A sweep's grid: axes -> validated grid points -> groups that share one activation stream.

Ids keep extending a grid cheap: a point's id depends only on its own configs and the sweep's
conditions (data, batching, evaluation), and the sweep's id only on those conditions and the
budget, so adding a point leaves every existing point where it was (found finished, not retrained).
Every setting that can change an artifact enters the ids (SweepPlan.conditions); the settings left
out are listed, with the reason, in NOT_IN_IDS.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from infra.cost import pack_groups, training_bytes
from infra.ids import spec_id
from infra.storage import join
from infra.training.group import GroupMember
from sae_core import SaeConfig, TrainConfig
from sae_core.config import K_ARCHITECTURES, TRANSCODER_ARCHITECTURES, scaled_dead_window

PENALTY_ARCHITECTURES = ("relu", "jumprelu", "gated")
ARCHITECTURE_KNOBS = ("matryoshka_prefix_fractions", "deep_encoder_depth", "deep_decoder_depth", "deep_width", "dead_window_tokens")
"""Sweep settings (one value per sweep, not grid axes) that go into the SAE configs, so into every sae_id; all but
dead_window_tokens are read by one architecture only. See architecture_knobs."""


def architecture_knobs(architecture: str, axes: dict[str, Any], d_sae: int) -> dict[str, Any]:
    """SaeConfig fields of the sweep-wide knobs an architecture reads (none of another's, so its ids stay put).

    Matryoshka prefixes are given as fractions of d_sae so one setting serves every expansion factor.
    dead_window_tokens (resolved by plan_sweep: given, or scaled_dead_window of the run) is every
    architecture's dead-latent window: AuxK's for the k kinds, dead_fraction's for all.
    """
    knobs = {"dead_after_tokens": axes["dead_window_tokens"]} if axes.get("dead_window_tokens") is not None else {}
    if architecture == "matryoshka_batchtopk" and "matryoshka_prefix_fractions" in axes:
        knobs["matryoshka_prefixes"] = tuple(max(1, round(f * d_sae)) for f in axes["matryoshka_prefix_fractions"])
    if architecture == "deep_topk":
        knobs.update({key: axes[key] for key in ("deep_encoder_depth", "deep_decoder_depth", "deep_width") if key in axes})
    return knobs


@dataclass
class SweepPlan:
    """Everything the training actors and the report need; tasks and actors receive this object itself.

    The workers read the stage settings from here, the same fields conditions() hashes into the
    ids, so an id can never describe other settings than the ones its artifacts were made with.
    """

    sweep_id: str
    root: str
    harvest: str
    harvest_id: str
    hookpoint: str
    d_in: int
    batch_size: int
    total_steps: int
    points: list[GroupMember]
    """One per grid point: its sae_id, configs and storage locations."""
    eval_contexts: int
    """Held-out contexts (whole documents, infra.activations.split): moves the split, so both training data and metrics."""
    splice_contexts: int
    """Held-out contexts scored by splicing into the model (CE loss recovered, KL); 0 skips it."""
    shuffle_buffer: int
    """Rows of the training stream's shuffle buffer: changes the batches."""
    stream_seed: int
    """Seed of the training stream's shard order and buffer draws: changes the batches."""
    checkpoint_every: int
    """Steps between checkpoints; not in the ids (see NOT_IN_IDS)."""
    train_rows: int
    """Training rows after the eval split (BOS/EOS dropped): one epoch of the looping stream."""
    held_out: str = ""
    """What the split held out, for the report (e.g. "17 contexts, whole documents")."""
    splice_ci_width: float | None = None
    """Target width of ce_loss_recovered's 95% interval: splice scoring stops once reached (None scores all splice_contexts)."""
    target_hookpoint: str | None = None
    """Paired sweeps: the activation transcoders predict from `hookpoint` (e.g. blocks.6.hook_mlp_out from
    blocks.6.hook_mlp_in); the SAEs of such a sweep learn this one, and every point is spliced here."""
    splice_baselines: list[str] = field(default_factory=list)
    """Ablation baselines besides zero (SAELens's) that CE loss recovered is also reported against: mean, resample."""
    groups: list[list[str]] = field(default_factory=list)
    """sae_ids of the points that share one stream, one list per group (see group_points); not in the ids."""

    @property
    def saes_folder(self) -> str:
        """Where the points' SAEs are exported, one directory each (what the features stage reads)."""
        return join(self.root, "saes", self.sweep_id)

    def conditions(self) -> dict[str, Any]:
        """The settings, besides each point's own configs, that change a point's artifacts."""
        conditions = {key: getattr(self, key) for key in CONDITION_FIELDS}
        # Settings added later hash only when used, so the ids of sweeps that do not use them stay put.
        for key, unused in (("target_hookpoint", None), ("splice_baselines", [])):
            if conditions[key] == unused:
                del conditions[key]
        return conditions

    def epochs(self, train_tokens: int) -> float:
        """How many times a point that trained on train_tokens saw each training row."""
        return train_tokens / self.train_rows

    def members(self, sae_ids: list[str] | None = None) -> list[GroupMember]:
        """The given points (all when None), in grid order."""
        wanted = None if sae_ids is None else set(sae_ids)
        return [point for point in self.points if wanted is None or point.sae_id in wanted]


CONDITION_FIELDS = ("harvest_id", "hookpoint", "batch_size", "eval_contexts", "splice_contexts", "shuffle_buffer", "stream_seed", "splice_ci_width",
                    "target_hookpoint", "splice_baselines")
"""SweepPlan fields hashed into every sae_id and the sweep_id."""
SPLICE_BASELINES = ("mean", "resample")
"""Ablation baselines a sweep may add to SAELens's zero ablation (infra.lm.splice_eval.AblationBaselines)."""
NOT_IN_IDS = {
    "sweep_id": "the id itself",
    "root": "where artifacts live, not what they are",
    "harvest": "the harvest's URI; its content is identified by harvest_id",
    "d_in": "follows from the harvest",
    "total_steps": "train_tokens // batch_size; in each point's train_config and the sweep's budget",
    "points": "each point has its own id; the sweep id stays independent of the grid axes",
    "checkpoint_every": "resuming from a checkpoint is exact (tests/infra/test_training.py), so when it is taken changes nothing",
    "train_rows": "follows from the harvest and eval_contexts",
    "held_out": "the held-out split's size and rule (e.g. '17 contexts, whole documents'): follows from the harvest and eval_contexts",
    "groups": "which points share a stream; every group reads the same stream, so grouping changes no result (see below)",
}
"""SweepPlan fields deliberately outside the ids, and why. Spec settings that are not plan fields
stay out too: num_actors, ray_address, storage_secret and wandb_* only say where and how work runs
and is logged; max_group_size (and the device memory budget) only decide which points share a
stream, and every group reads the same stream (a pure function of the conditions) from batch 0
with every point running total_steps, so grouping changes no result. Hardware and thread counts
can still move low-order bits; an id names the computation asked for, not its bits."""


def sweep_id_for(name: str, conditions: dict[str, Any], budget: dict[str, Any]) -> str:
    """Depends on the conditions and the budget only, never on the grid axes."""
    return spec_id(name, {**conditions, **budget})


def expand_grid(
    axes: dict[str, list[Any]], d_in: int, total_steps: int, warmup_steps: int, autocast_bf16: str = "cuda"
) -> list[tuple[SaeConfig, TrainConfig]]:
    """Cartesian product of the axes; k applies to topk/batchtopk, sparsity_coefficient to the rest.

    `kinds` (default ["sae"]) crosses sae / transcoder / skip_transcoder with the architectures; a
    transcoder point exists only for TRANSCODER_ARCHITECTURES (a jumprelu transcoder is skipped, not
    an error, so one grid can hold SAE-only architectures too). Every point is built (and so
    validated) here, before any training starts.
    """
    points, seen = [], set()
    kinds = axes.get("kinds", ["sae"])
    for kind, architecture, expansion, lr, seed in itertools.product(kinds, axes["architectures"], axes["expansion_factors"], axes["lrs"], axes["seeds"]):
        if kind != "sae" and architecture not in TRANSCODER_ARCHITECTURES:
            continue
        variants = (
            [{"k": k} for k in axes["ks"]]
            if architecture in K_ARCHITECTURES
            else [{"sparsity_coefficient": c} for c in axes["sparsity_coefficients"]]
        )
        knobs = architecture_knobs(architecture, axes, max(1, round(expansion * d_in)))
        for variant in variants:
            paired = {"kind": kind, "d_out": d_in} if kind != "sae" else {}  # MLP in/out: one width, d_model
            sae_config = SaeConfig(architecture=architecture, d_in=d_in, expansion_factor=expansion, seed=seed, **variant, **knobs, **paired)
            train_config = TrainConfig(
                total_steps=total_steps, lr=lr, warmup_steps=min(warmup_steps, total_steps), autocast_bf16=autocast_bf16
            )
            key = (repr(sae_config), repr(train_config))
            if key not in seen:
                seen.add(key)
                points.append((sae_config, train_config))
    return points


def point_label(sae_config: SaeConfig, lr: float) -> str:
    """Readable slug of a grid point."""
    knob = f"k{sae_config.k}" if sae_config.architecture in K_ARCHITECTURES else f"l{sae_config.sparsity_coefficient:g}"
    kind = "" if sae_config.kind == "sae" else f"{sae_config.kind.replace('_', '')}-"
    return f"{kind}{sae_config.architecture}-{sae_config.d_sae}-{knob}-lr{lr:g}-s{sae_config.seed}"


def plan_points(sweep_id: str, root: str, conditions: dict[str, Any], grid: list[tuple[SaeConfig, TrainConfig]]) -> list[GroupMember]:
    """Ids and storage locations of every point."""
    points = []
    for sae_config, train_config in grid:
        sae_id = spec_id(
            point_label(sae_config, train_config.lr), {"sae": sae_config.to_dict(), "train": train_config.to_dict(), **conditions}
        )
        points.append(
            GroupMember(
                sae_id=sae_id,
                sae_config=sae_config,
                train_config=train_config,
                sae_uri=join(root, "saes", sweep_id, sae_id),  # inside SweepPlan.saes_folder
                checkpoint_uri=join(root, "checkpoints", sweep_id, sae_id),
                features_uri=join(root, "evals", sweep_id, "features", f"{sae_id}.parquet"),
            )
        )
    return points


def sae_training_bytes(sae_config: SaeConfig, batch_size: int) -> int:
    """infra.cost.training_bytes of one SAE, plus the MLP branches of a deep_topk SAE."""
    params = 0
    if sae_config.architecture == "deep_topk":  # the MLP branches (sae_core.deep)
        width = sae_config.deep_width
        params += (sae_config.d_in + width * sae_config.deep_encoder_depth + sae_config.d_sae) * width
        if sae_config.deep_decoder_depth:
            params += (sae_config.d_sae + width * sae_config.deep_decoder_depth + sae_config.d_in) * width
    # fp32 weights, grads and two Adam moments of the branches, on top of the linear SAE's bytes.
    return training_bytes(sae_config.d_in, sae_config.d_sae, batch_size) + 4 * 4 * params


def group_points(points: list[GroupMember], batch_size: int, budget_bytes: int, max_group: int) -> list[list[str]]:
    """Pack points (largest first) into groups that fit the memory budget; returns lists of sae_ids."""
    return pack_groups([(sae_training_bytes(p.sae_config, batch_size), p.sae_id) for p in points], budget_bytes, max_group)


class SweepSpecError(ValueError):
    """A sweep request that cannot run; raised before any training."""


def check_pairing(hookpoint: str, target_hookpoint: str | None, kinds: list[str], harvested: list[str], harvest: str) -> None:
    """A transcoder kind needs a target hookpoint, harvested beside the input and distinct from it."""
    transcoders = [kind for kind in kinds if kind != "sae"]
    if target_hookpoint is None:
        if transcoders:
            raise SweepSpecError(f"kinds {transcoders} need target_hookpoint (what they predict from {hookpoint!r}, e.g. "
                                 f"{hookpoint.replace('mlp_in', 'mlp_out')!r})")  # fmt: skip
        return
    if target_hookpoint == hookpoint:
        raise SweepSpecError(f"target_hookpoint {target_hookpoint!r} is the input hookpoint: a transcoder predicts another activation")
    if target_hookpoint not in harvested:
        raise SweepSpecError(f"target_hookpoint {target_hookpoint!r} was not harvested in {harvest}; it has {harvested}")


def memory_budget_bytes(cpu_budget_bytes: int = 4 * 2**30) -> int:
    """Memory one training group may use: 60% of the GPU's, or a fixed CPU budget."""
    import torch

    if torch.cuda.is_available():
        return int(0.6 * torch.cuda.get_device_properties(0).total_memory)
    return cpu_budget_bytes


def plan_sweep(
    name: str,
    root: str,
    harvest: str,
    hookpoint: str,
    axes: dict[str, list[Any]],
    train_tokens: int,
    batch_size: int,
    warmup_steps: int,
    autocast_bf16: str = "cuda",
    *,
    eval_contexts: int = 16,
    splice_contexts: int = 8,
    shuffle_buffer: int = 65_536,
    stream_seed: int = 0,
    checkpoint_every: int = 200,
    splice_ci_width: float | None = None,
    target_hookpoint: str | None = None,
    splice_baselines: list[str] | None = None,
) -> SweepPlan:
    """Check the harvest and the grid, then lay out every point's storage; nothing is trained."""
    from infra.activations.store import MANIFEST_FILE, read_manifest
    from infra.activations.stream import StreamSpec, count_rows, split_eval
    from infra.storage import exists

    if not exists(join(harvest, MANIFEST_FILE)):
        raise SweepSpecError(f"harvest {harvest} has no {MANIFEST_FILE}: run the harvest flow first (or give the sweep a harvest spec)")
    manifest = read_manifest(harvest)
    if hookpoint not in manifest["hookpoints"]:
        raise SweepSpecError(f"hookpoint {hookpoint!r} was not harvested in {harvest}; it has {manifest['hookpoints']}")
    check_pairing(hookpoint, target_hookpoint, axes.get("kinds", ["sae"]), manifest["hookpoints"], harvest)
    unknown = sorted(set(splice_baselines or []) - set(SPLICE_BASELINES))
    if unknown:
        raise SweepSpecError(f"splice_baselines {unknown} are unknown: choose from {list(SPLICE_BASELINES)} (zero ablation is always run)")
    if splice_ci_width is not None and not splice_ci_width > 0:
        raise SweepSpecError(f"splice_ci_width={splice_ci_width!r} is invalid: a width > 0 (or null to score every splice context)")
    if batch_size < 1 or train_tokens < batch_size:
        raise SweepSpecError(f"train_tokens={train_tokens} must be >= batch_size={batch_size} >= 1")
    total_steps = train_tokens // batch_size
    if axes.get("dead_window_tokens") is not None and not axes["dead_window_tokens"] >= 1:
        raise SweepSpecError(f"dead_window_tokens={axes['dead_window_tokens']!r} is invalid: an integer >= 1 (or null: scaled with the run)")
    # The dead window scales with the run unless given: a fixed 10M would never let AuxK engage in a short run.
    window = axes.get("dead_window_tokens") or scaled_dead_window(total_steps * batch_size)
    grid = expand_grid({**axes, "dead_window_tokens": window}, manifest["d_model"], total_steps, warmup_steps, autocast_bf16)
    train_seqs, held_out_seqs = split_eval(harvest, eval_contexts)
    # The training stream's own row count (BOS/EOS dropped, as it drops them): one epoch.
    train_rows = count_rows(StreamSpec(harvest=harvest, hookpoint=hookpoint, batch_size=batch_size, seqs=train_seqs, loop=True))
    plan = SweepPlan(
        sweep_id="", root=root, harvest=harvest, harvest_id=manifest["harvest_id"], hookpoint=hookpoint, d_in=manifest["d_model"],
        batch_size=batch_size, total_steps=total_steps, points=[], eval_contexts=eval_contexts, splice_contexts=splice_contexts,
        shuffle_buffer=shuffle_buffer, stream_seed=stream_seed, checkpoint_every=checkpoint_every, train_rows=train_rows,
        held_out=f"{len(held_out_seqs.ids)} contexts, {held_out_seqs.rule}",
        splice_ci_width=splice_ci_width, target_hookpoint=target_hookpoint, splice_baselines=sorted(splice_baselines or []),
    )
    budget = {"train_tokens": train_tokens, "warmup_steps": warmup_steps, "autocast_bf16": autocast_bf16}
    plan.sweep_id = sweep_id_for(name, plan.conditions(), budget)
    plan.points = plan_points(plan.sweep_id, root, plan.conditions(), grid)
    return plan
