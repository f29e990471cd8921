"""infra.storage against a real S3 server (SeaweedFS on loopback), configured only through env vars."""

from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path

import pytest
import torch

from infra.sae_store import load_sae, save_sae
from infra.storage import (
    S3_ENDPOINT_ENV,
    exists,
    filesystem,
    read_bytes,
    read_json,
    write_bytes_atomic,
    write_json_atomic,
)
from tests.conftest import FOREIGN_AWS_ENV
from tests.s3_server import S3Server
from tests.sae_core.helpers import activation_batch, make_sae

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

@pytest.fixture
def prefix(s3_env: S3Server) -> str:
    """A fresh s3://bucket/<unique>/ prefix per test, so tests never see each other's keys."""
    return s3_env.uri(f"test-{uuid.uuid4().hex[:12]}")


def _keys_under(server: S3Server, uri: str) -> list[str]:
    """Every key under uri, listed by a fresh client (no listing cache)."""
    fs, path = filesystem(uri, **server.storage_options())
    return sorted(key.removeprefix(path + "/") for key in fs.find(path))


def test_server_listens_on_loopback_only(s3_server: S3Server) -> None:  # noqa: F811
    addresses = s3_server.listening_addresses()
    assert ("127.0.0.1", s3_server.ports["s3.port"]) in addresses
    assert {ip for ip, _ in addresses} == {"127.0.0.1"}, f"weed listens beyond loopback: {addresses}"
    assert {port for _, port in addresses} <= set(s3_server.ports.values()), "weed opened a port we did not pick"


def test_env_configures_s3_filesystem(s3_env: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fs, path = filesystem(f"{prefix}/a.bin")
    assert path == f"{prefix.removeprefix('s3://')}/a.bin"
    assert fs.endpoint_url == s3_env.endpoint_url
    assert fs.config_kwargs["s3"] == {"addressing_style": "path"}
    # The client cache keys on the environment: a changed endpoint is honoured by the next call.
    monkeypatch.setenv(S3_ENDPOINT_ENV, "http://127.0.0.1:9")
    other, _ = filesystem(f"{prefix}/a.bin")
    assert other is not fs and other.endpoint_url == "http://127.0.0.1:9"
    # Explicit storage_options win over the environment.
    explicit, _ = filesystem(f"{prefix}/a.bin", endpoint_url=s3_env.endpoint_url)
    assert explicit.endpoint_url == s3_env.endpoint_url


def test_bytes_round_trip(prefix: str) -> None:
    payload = bytes(range(256)) * 1000
    uri = f"{prefix}/nested/dir/blob.bin"
    write_bytes_atomic(uri, payload)
    assert read_bytes(uri) == payload
    write_bytes_atomic(uri, b"replaced")
    assert read_bytes(uri) == b"replaced"


def test_json_round_trip(prefix: str) -> None:
    value = {"model": "tiny-llama", "d_model": 576, "hookpoints": ["blocks.3"], "nested": {"ok": True}}
    uri = f"{prefix}/_manifest.json"
    write_json_atomic(uri, value)
    assert read_json(uri) == value


def test_atomic_writes_leave_no_temporary_keys(s3_env: S3Server, prefix: str) -> None:
    for i in range(3):
        write_bytes_atomic(f"{prefix}/shards/part-{i:05d}.bin", bytes([i]) * 10)
    write_bytes_atomic(f"{prefix}/shards/part-00000.bin", b"overwritten")
    write_json_atomic(f"{prefix}/_manifest.json", {"parts": 3})
    assert _keys_under(s3_env, prefix) == [
        "_manifest.json", "shards/part-00000.bin", "shards/part-00001.bin", "shards/part-00002.bin",
    ]


def test_exists(prefix: str) -> None:
    uri = f"{prefix}/present.json"
    assert not exists(uri)
    write_json_atomic(uri, [1, 2, 3])
    assert exists(uri)
    assert not exists(f"{prefix}/absent.json")


def test_missing_key_names_the_uri(prefix: str) -> None:
    uri = f"{prefix}/never/written.json"
    with pytest.raises(FileNotFoundError, match=re.escape(uri)):
        read_bytes(uri)
    with pytest.raises(FileNotFoundError, match=re.escape(uri)):
        read_json(uri)


def test_explicit_storage_options_without_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    for name in (S3_ENDPOINT_ENV, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", *FOREIGN_AWS_ENV):
        monkeypatch.delenv(name, raising=False)
    uri = s3_server.uri(f"explicit-{uuid.uuid4().hex[:12]}", "value.json")
    write_json_atomic(uri, {"explicit": True}, **s3_server.storage_options())
    assert read_json(uri, **s3_server.storage_options()) == {"explicit": True}


def test_wrong_credentials_are_not_cached(s3_env: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"{prefix}/secret.bin"
    write_bytes_atomic(uri, b"payload")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(PermissionError):
        read_bytes(uri)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert read_bytes(uri) == b"payload"


def test_one_client_per_environment_and_listings_never_stale(s3_env: S3Server, prefix: str, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    fs, path = filesystem(prefix)
    assert filesystem(f"{prefix}/other.json")[0] is fs  # reused: a new botocore client costs ~200 ms per call
    write_json_atomic(f"{prefix}/a.json", {"a": 1})
    assert [key.rsplit("/", 1)[-1] for key in fs.find(path)] == ["a.json"]
    # Another process writes (a client of its own): the reused client's next listing shows it.
    other, _ = filesystem(prefix, **s3_env.storage_options())
    assert other is not fs
    other.pipe_file(f"{path}/b.json", b"{}")
    assert [key.rsplit("/", 1)[-1] for key in fs.find(path)] == ["a.json", "b.json"] and fs.exists(f"{path}/b.json")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "rotated")  # any botocore variable changing means a new client
    assert filesystem(prefix)[0] is not fs
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    credentials = tmp_path / "credentials"  # and so does an edit of the credentials file
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    credentials.write_text("[default]\n")
    before = filesystem(prefix)[0]
    os.utime(credentials, ns=(1, 1))
    assert filesystem(prefix)[0] is not before


def test_credentials_are_never_logged_or_stored(s3_env: S3Server, prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    assert s3_env.secret_key not in repr(s3_env)
    with caplog.at_level(logging.DEBUG):
        write_json_atomic(f"{prefix}/cfg.json", {"k": 1})
        read_json(f"{prefix}/cfg.json")
    assert caplog.records, "no log records captured: the check below would prove nothing"
    assert s3_env.secret_key not in caplog.text
    assert s3_env.secret_key.encode() not in read_bytes(f"{prefix}/cfg.json")


def test_sae_round_trip(s3_env: S3Server, prefix: str) -> None:
    sae = make_sae("topk")
    x_BD = activation_batch()
    sae.init_from_data(x_BD)  # a non-trivial input scale, folded into the weights on export
    directory = save_sae(sae, f"{prefix}/saes/sweep/topk-k4", metadata={"hook_name": "blocks.3.hook_resid_post"})
    assert _keys_under(s3_env, directory) == ["cfg.json", "sae_weights.safetensors"]
    loaded = load_sae(directory)
    assert loaded.W_dec.shape == sae.W_dec.shape
    with torch.no_grad():
        ours_BF, theirs_BF = sae.encode(x_BD), loaded.encode(x_BD)
        assert torch.allclose(theirs_BF, ours_BF, atol=1e-4)
        assert torch.allclose(loaded.decode(theirs_BF), sae.decode(ours_BF), atol=1e-4)
