"""The offline demo: the whole pipeline on embedded defaults, on a laptop-sized budget.

harvest two hookpoints of the packaged SmolLM2-135M on Python's own docs -> sweep TopK and ReLU
SAEs on one of them -> describe their latents (features stage, feature browser) -> steer with one
of them (both generations printed) -> diff two
checkpoints of a small GPT-NeoX trained here -> print where
every report is. Everything is cached: a second run returns in seconds.
Run: `python -m flows.demo` (or `make demo`).
"""

from __future__ import annotations

from prefect import flow

from flows.diff import DiffSpec, diff
from flows.features import FeaturesSpec, features
from flows.harvest import HarvestSpec, harvest
from flows.results import DemoResult
from flows.specs import DemoSpec  # re-exported: the flow's parameter type
from flows.steer import SteerSpec, steer
from flows.sweep import SweepSpec, sweep
from infra.storage import absolute_root
from tasks.demo import demo_summary_task, make_checkpoint_pair_task
from tasks.steer import pick_feature_task


@flow(name="saeflow-demo", log_prints=True)
def demo(spec: DemoSpec = DemoSpec()) -> DemoResult:
    """Harvest -> sweep -> features -> steer -> diff, all offline; returns the summary and each stage's main output."""
    root = absolute_root(spec.root)
    harvest_uri = harvest(HarvestSpec(hookpoints=spec.hookpoints, num_tokens=spec.harvest_tokens, root=root)).harvest
    swept = sweep(
        SweepSpec(
            name="demo", harvest=harvest_uri, hookpoint=spec.hookpoints[0], architectures=["topk", "relu"],
            expansion_factors=[4.0], ks=[32], sparsity_coefficients=[3.0], lrs=[1e-3], train_tokens=spec.sweep_tokens,
            batch_size=1024, warmup_steps=20, eval_contexts=16, splice_contexts=8, checkpoint_every=50, root=root,
        )
    )
    described = features(FeaturesSpec(saes=swept.saes, harvest=harvest_uri, contexts=16, root=root))
    # One feature the features stage found, added (4 x the typical norm) and clamped (2 x its max activation).
    feature = pick_feature_task(described.folder)
    steered = steer(SteerSpec(
        sae=feature["sae"], harvest=harvest_uri, prompts=["The weather today is", "In Python, a list"], latents=[feature["latent"]],
        scales=[4.0], clamp_latents=[feature["latent"]], clamp_values=[2 * feature["max_activation"]], max_new_tokens=16,
        ablation_latents=[feature["latent"]], contexts=4, root=root,
    ))
    checkpoints = make_checkpoint_pair_task(root, "smollm2-135m", early_step=20, late_step=120)
    diffed = diff(
        DiffSpec(
            models=checkpoints, hookpoint="blocks.1.hook_resid_post", num_tokens=spec.diff_tokens, context_length=64,
            # BatchTopK (the default) on centred-variance-scaled sources: the step-20 checkpoint keeps ~99% of its
            # squared norm in its mean, so the old mean-norm L1 run starved it (EV 0.40 vs 0.98; issue 15).
            train_tokens=512 * 300, batch_size=512, expansion_factor=4.0, architecture="batchtopk", k=32, lr=3e-3,
            eval_contexts=16, checkpoint_every=100, root=root,
        )
    )
    stages = {"activations (query with Arrow)": harvest_uri, "sweep report": swept.report, "feature browser": described.browser,
              "steering report": steered.report, "diff report": diffed.report}
    summary = demo_summary_task(root, stages)
    for stage, uri in stages.items():
        print(f"{stage}: {uri}")
    print(f"demo summary: {summary}")
    return DemoResult(summary=summary, stages=stages)


if __name__ == "__main__":
    demo()
