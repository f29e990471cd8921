"""The harvest flow under a real Prefect server: results, cache hits, and bad specs."""

from __future__ import annotations

import json
import os

import pytest

import infra.harvest.plan
import tasks.harvest
from flows.harvest import HarvestSpec, harvest
from infra.activations.store import open_activations, read_manifest
from infra.lm.hookpoints import HookpointError
from infra.storage import STORAGE_ENV_KEYS
from tests.infra.tiny_models import build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "ray_local")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model("gpt2", tmp_path_factory.mktemp("m") / "gpt2"))


def spec(model_dir: str, root: str, **overrides) -> HarvestSpec:
    values = {
        "model": model_dir,
        "hookpoints": ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"],
        "source": "builtin:pydoc",
        "context_length": 32,
        "num_tokens": 32 * 10,
        "contexts_per_shard": 4,
        "num_actors": 2,
        "root": root,
    }
    return HarvestSpec(**{**values, **overrides})


def test_flow_harvests_then_reruns_are_cache_hits(model_dir, tmp_path, monkeypatch):
    harvested = harvest(spec(model_dir, str(tmp_path)))
    uri = harvested.harvest
    manifest = read_manifest(uri)
    assert harvested.harvest_id == manifest["harvest_id"]
    assert manifest["num_rows"] == 320 and len(manifest["shards"]) == 3
    assert open_activations(uri, "blocks.2.hook_resid_post").count_rows() == 320

    def no_model_allowed(*args, **kwargs):
        raise AssertionError("a committed harvest must not run the model again")

    # Second run: storage says the harvest is committed, so no actor pool (no model) starts.
    monkeypatch.setattr(infra.harvest.plan, "run_pool", no_model_allowed)
    assert harvest(spec(model_dir, str(tmp_path))) == harvested
    # Third run: Prefect's own cache answers; the harvest task body does not even run.
    monkeypatch.setattr(tasks.harvest, "run_harvest", no_model_allowed)
    assert harvest(spec(model_dir, str(tmp_path))) == harvested


def test_bad_hookpoint_fails_the_flow_without_retries(model_dir, tmp_path):
    with pytest.raises(HookpointError, match=r"blocks\.9\.hook_resid_post"):
        harvest(spec(model_dir, str(tmp_path), hookpoints=["blocks.9.hook_resid_post"]))


def test_s3_credentials_from_a_secret_block_reach_the_actors(model_dir, s3_server, monkeypatch):
    from prefect.blocks.system import Secret

    from tests.conftest import FOREIGN_AWS_ENV

    for name in (*STORAGE_ENV_KEYS, *FOREIGN_AWS_ENV):
        monkeypatch.delenv(name, raising=False)
    Secret(value=s3_server.env()).save("test-s3-credentials", overwrite=True)
    root = s3_server.uri("secret-harvest")
    try:
        uri = harvest(spec(model_dir, root, storage_secret="test-s3-credentials")).harvest
        assert uri.startswith("s3://")
        assert open_activations(uri, "blocks.0.hook_resid_post").count_rows() == 320
        manifest_text = json.dumps(read_manifest(uri))
    finally:
        for name in STORAGE_ENV_KEYS:
            os.environ.pop(name, None)
    assert s3_server.secret_key not in manifest_text
