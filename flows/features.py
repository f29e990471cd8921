"""Features flow: what each latent of an SAE (or of a whole sweep) responds to, and a browser to look.

`saeflow features --set saes=./artifacts/saes/<sweep_id> --set harvest=./artifacts/activations/<id>`
"""

from __future__ import annotations

from prefect import flow

from flows.preflight import preflight
from flows.results import FeaturesResult
from flows.specs import FeaturesSpec  # the spec is Prefect-free (the CLI imports it alone); re-exported here
from infra.storage import absolute_root
from tasks.credentials import apply_storage_secret
from tasks.features import plan_features_task, publish_features_task, run_features_task


@flow(name="features", log_prints=True)
def features(spec: FeaturesSpec) -> FeaturesResult:
    """Plan (every SAE checked against the harvest) -> encode + describe on Ray -> browser."""
    apply_storage_secret(spec.storage_secret)
    preflight(spec)  # UI-triggered runs fail in milliseconds too, before any SAE or model loads
    values = spec.model_dump()
    values.update(root=absolute_root(spec.root), saes=absolute_root(spec.saes), harvest=absolute_root(spec.harvest))
    plan = plan_features_task(values)
    result = run_features_task(plan, num_actors=spec.num_actors, ray_address=spec.ray_address)
    browser = publish_features_task(plan, result)
    print(f"features {plan.features_id}: {len(plan.saes)} SAEs on {plan.contexts} contexts "
          f"({'cached' if result['cached'] else 'computed'}) -> browser {browser}")
    return FeaturesResult(features_id=plan.features_id, folder=plan.features, browser=browser, manifest=result["manifest"])
