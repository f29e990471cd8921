"""Steer flow: generate with SAE latents added or clamped (or a contrastive vector added), side by side with the baseline,
plus zero / mean / resample ablations of the hookpoint and of single latents.

`saeflow steer --set sae=./artifacts/saes/<sweep_id>/<sae_id> --set latents=[123] --set scales=[4] --set prompts=["I think"]`
"""

from __future__ import annotations

from prefect import flow

from flows.preflight import preflight
from flows.results import SteerResult
from flows.specs import SteerSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.storage import absolute_root, join
from tasks.credentials import apply_storage_secret
from tasks.steer import plan_steer_task, publish_steer_task, run_steer_task, steer_pairs_task


@flow(name="steer", log_prints=True)
def steer(spec: SteerSpec) -> SteerResult:
    """Plan (SAE, latents, harvest checked) -> generate + ablate on a Ray actor -> report."""
    apply_storage_secret(spec.storage_secret)
    preflight(spec)  # UI-triggered runs fail in milliseconds too, before the model loads
    local = {key: absolute_root(getattr(spec, key)) if getattr(spec, key) else None for key in ("sae", "harvest")}
    plan = plan_steer_task({"model": spec.model, "prompts": spec.prompts, "root": absolute_root(spec.root), "hookpoint": spec.hookpoint,
                            **local, "settings": spec.settings()})
    result = run_steer_task(plan, ray_address=spec.ray_address)
    report = publish_steer_task(plan, result)
    for pair in steer_pairs_task(plan):
        print(f"{pair['prompt']!r} [{pair['condition']}: {pair['description']}] KL(next)={pair['kl_next']:.3g}\n"
              f"  baseline: {pair['baseline_text']!r}\n  steered:  {pair['steered_text']!r}")
    print(f"steer {plan.steer_id}: {len(plan.prompts)} prompts at {plan.hookpoint} "
          f"({'cached' if result['cached'] else 'computed'}) -> report {report}")
    return SteerResult(steer_id=plan.steer_id, report=report, generations=join(plan.steer, "generations.parquet"))
