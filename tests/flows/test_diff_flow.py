"""The diff flow on two checkpoints of one tiny GPT-NeoX: outputs, cache hit, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

import infra.ray_pool
from flows.diff import DiffSpec, diff
from infra.diff.crosscoder_store import load_crosscoder
from infra.diff.plan import DiffSpecError
from infra.lm.checkpoint_pair import make_checkpoint_pair
from infra.lm.hookpoints import HookpointError
from tests.infra.tiny_models import build_tiny_model, build_tokenizer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_server", "ray_local")]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[str, str, Path]:
    base = tmp_path_factory.mktemp("diff")
    tokenizer_dir = build_tiny_model("gpt_neox", base / "tokenizer-source")
    early, late = make_checkpoint_pair(base / "pair", str(tokenizer_dir), early_step=10, late_step=80, d_model=32)
    return str(early), str(late), base


def spec(models: list[str], root: Path, **overrides) -> DiffSpec:
    values = {
        "models": models, "hookpoint": "blocks.1.hook_resid_post", "context_length": 32, "num_tokens": 32 * 48,
        "expansion_factor": 4.0, "sparsity_coefficient": 0.3, "lr": 3e-3, "train_tokens": 256 * 120, "batch_size": 256,
        "warmup_steps": 10, "eval_contexts": 8, "checkpoint_every": 40, "shuffle_buffer": 2048, "root": str(root),
        "wandb_mode": "disabled",
    }
    return DiffSpec(**{**values, **overrides})


def test_diff_writes_crosscoder_latents_histogram_and_caches(checkpoints, monkeypatch):
    early, late, base = checkpoints
    diffed = diff(spec([early, late], base / "root"))
    report = Path(diffed.report)
    folder = report.parent
    assert folder.name == diffed.diff_id and diffed.latents == str(folder / "latents.parquet")
    latents = pd.read_parquet(diffed.latents)
    assert len(latents) == 128
    assert set(latents["class"]) <= {"shared", "a_only", "b_only", "spurious", "other", "dead"}
    examined = latents[latents["norm_class"].isin(["a_only", "b_only"])]
    assert examined["beta_ratio_error"].notna().all(), "every live norm-exclusive latent is latent-scaled"
    assert (folder / "latent_scaling.png").read_bytes().startswith(b"\x89PNG")
    assert latents["relative_norm"].dropna().between(0, 1).all()
    assert (folder / "relative_norms.png").read_bytes().startswith(b"\x89PNG")
    crosscoder = load_crosscoder(str(folder / "crosscoder"))
    assert tuple(crosscoder.W_dec.shape) == (128, 2, 32)
    text = report.read_text()
    assert "shared" in text and "Explained variance per source" in text and "Latent scaling" in text

    def no_training(*args, **kwargs):
        raise AssertionError("a finished diff must not train or harvest again")

    monkeypatch.setattr(infra.ray_pool, "run_pool", no_training)
    assert diff(spec([early, late], base / "root")) == diffed


def test_single_model_is_a_clear_error(checkpoints, tmp_path):
    early, _, _ = checkpoints
    # DiffSpec itself needs two models (or one model with two hookpoints), so the UI form refuses one too.
    with pytest.raises(ValidationError, match=r"a diff needs two or more checkpoints, or one model with two or more hookpoints"):
        diff(spec([early], tmp_path))
    with pytest.raises(ValidationError, match=r"compare checkpoints at one hookpoint, or layers of one model"):
        spec([early, early + "x"], tmp_path, hookpoints=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])


def test_mismatched_d_model_is_a_clear_error(checkpoints, tmp_path):
    early, _, base = checkpoints
    wider, _ = make_checkpoint_pair(base / "wide", early, early_step=2, late_step=4, d_model=64)
    with pytest.raises(DiffSpecError, match=r"differ in d_model"):
        diff(spec([early, str(wider)], tmp_path))


def test_mismatched_tokenizer_is_a_clear_error(checkpoints, tmp_path):
    early, _, base = checkpoints
    other = build_tiny_model("gpt_neox", base / "other-tokenizer")
    build_tokenizer(vocab_size=400).save_pretrained(other)
    with pytest.raises(DiffSpecError, match=r"tokenizer of .* differs"):
        diff(spec([early, str(other)], tmp_path))


def test_unknown_hookpoint_is_a_clear_error(checkpoints, tmp_path):
    early, late, _ = checkpoints
    with pytest.raises(HookpointError, match=r"blocks\.5\.hook_resid_post"):
        diff(spec([early, late], tmp_path, hookpoint="blocks.5.hook_resid_post"))


def test_cross_layer_diff_reads_one_harvest_at_every_layer(checkpoints, monkeypatch):
    _, late, base = checkpoints
    layers = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    diffed = diff(spec([late], base / "layers", hookpoints=layers))
    folder = Path(diffed.report).parent
    assert "-layers-" in diffed.diff_id
    crosscoder = load_crosscoder(str(folder / "crosscoder"))
    assert tuple(crosscoder.W_dec.shape) == (128, 3, 32)  # one decoder slice per layer
    assert len(list((base / "layers" / "activations").iterdir())) == 1, "the model is harvested once, at every layer"
    latents = pd.read_parquet(diffed.latents)
    assert set(latents["first_present_source"].dropna().astype(int)) <= {0, 1, 2}
    text = Path(diffed.report).read_text()
    assert "Cross-layer" in text and "first layer where they are present" in text
    assert (folder / "first_present.png").read_bytes().startswith(b"\x89PNG")
