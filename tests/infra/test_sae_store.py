"""Bad SAE directories and storage keys fail clearly; nothing is ever unpickled."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from infra.sae_store import load_sae, load_training_state, save_sae, save_training_state
from infra.storage import StorageError, filesystem, join, read_json, write_bytes_atomic
from sae_core import SaeFormatError, SaeTrainer, TrainConfig
from tests.sae_core.helpers import D_IN, D_SAE, make_sae


@pytest.fixture
def sae_dir(tmp_path):
    return save_sae(make_sae("topk"), str(tmp_path / "sae"))


def test_missing_tensor_is_named(sae_dir, tmp_path):
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    tensors = load_file(weights)
    del tensors["b_enc"]
    save_file(tensors, weights)
    with pytest.raises(SaeFormatError, match=r"sae_weights.safetensors: topk SAE is missing tensor\(s\) \['b_enc'\]"):
        load_sae(sae_dir)


def test_wrong_shape_is_named(sae_dir, tmp_path):
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    tensors = load_file(weights)
    tensors["W_dec"] = torch.zeros(D_SAE, D_IN + 1)
    save_file(tensors, weights)
    with pytest.raises(SaeFormatError, match=r"tensor W_dec has shape \(64, 17\), expected \(64, 16\)"):
        load_sae(sae_dir)


def test_truncated_weights_are_rejected(sae_dir, tmp_path):
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"sae_weights.safetensors: not a readable safetensors file"):
        load_sae(sae_dir)


def test_unknown_architecture_is_named(sae_dir, tmp_path):
    cfg_path = tmp_path / "sae" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architecture"] = "matching_pursuit"  # a SAELens architecture saeflow does not read
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SaeFormatError, match=r"architecture='matching_pursuit' is not one of"):
        load_sae(sae_dir)
    cfg["architecture"] = "transcoder"  # a transcoder format, but this directory's cfg has no d_out
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SaeFormatError, match=r"cfg field d_out=None must be a positive integer"):
        load_sae(sae_dir)


def test_directory_without_cfg_is_not_an_sae(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not an SAE directory \(cfg.json missing\)"):
        load_sae(str(tmp_path))


class _Detonator:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('pickle ran')",))


def test_pickles_beside_an_sae_are_never_executed(sae_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("sae_weights.pt", "state.pt", "optimizer.pkl"):
        (tmp_path / "sae" / name).write_bytes(pickle.dumps(_Detonator()))
    load_sae(sae_dir)
    assert not (tmp_path / "PWNED").exists()


def test_interrupted_checkpoint_is_ignored(tmp_path):
    trainer = SaeTrainer(make_sae("relu"), TrainConfig(total_steps=2))
    save_training_state(trainer, str(tmp_path / "ckpt"))
    (tmp_path / "ckpt" / "state.json").unlink()  # the commit marker never made it
    assert load_training_state(str(tmp_path / "ckpt")) is None


@pytest.mark.parametrize("key", ["../outside", "a/../../b", "/etc/passwd"])
def test_keys_cannot_escape_the_root(key):
    with pytest.raises(StorageError, match="tries to escape the storage root"):
        join("file:///data/artifacts", key)


def test_unknown_scheme_is_rejected():
    with pytest.raises(StorageError, match=r"scheme 'ftp' is not one of file, s3, memory"):
        filesystem("ftp://host/artifacts")


def test_atomic_write_leaves_no_temporary_objects(tmp_path):
    write_bytes_atomic(str(tmp_path / "deep" / "x.json"), b'{"a": 1}')
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["x.json"]
    assert read_json(str(tmp_path / "deep" / "x.json")) == {"a": 1}
