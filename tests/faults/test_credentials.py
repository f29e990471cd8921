"""Credentials come from the environment and never leak: not into any object written under the
storage root (shards, markers, tokens, manifest, SAE exports, checkpoints) nor into saeflow's logs."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from infra.activations.schemas import validate_harvest
from infra.activations.store import read_manifest
from infra.harvest.plan import harvest_in_process, plan_harvest
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.storage import filesystem, read_bytes
from infra.training.group import GroupMember, train_group
from sae_core import SaeConfig, TrainConfig
from sae_core.synthetic import SyntheticFeatures
from tests.infra.tiny_models import build_tiny_model

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

# botocore is captured at INFO only: its DEBUG output prints signed request headers
# (Authorization: ... Credential=<access key id>/...), which is botocore's, not saeflow's, doing.
LOGGERS = {"infra": logging.DEBUG, "tasks": logging.DEBUG, "flows": logging.DEBUG, "sae_core": logging.DEBUG,
           "s3fs": logging.DEBUG, "fsspec": logging.DEBUG, "prefect": logging.DEBUG, "botocore": logging.INFO}
STEPS, BATCH = 20, 32


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured_logs():
    """Every record of LOGGERS, from a handler on each logger (Prefect may reconfigure the root)."""
    handler = Collect()
    saved = {}
    for name, level in LOGGERS.items():
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(level)
        logger.addHandler(handler)
    yield handler
    for name, level in saved.items():
        logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(level)


def test_no_credentials_in_objects_or_logs(s3_env, tmp_path, captured_logs, capsys):
    root = s3_env.uri(f"creds-{time.time_ns()}")

    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=16, num_tokens=8 * 16)
    job = plan_harvest(str(model), ["blocks.1.hook_resid_post"], spec, root, dtype="float16",
                       contexts_per_shard=4, batch_contexts=4)
    harvest_in_process(job, device="cpu")
    validate_harvest(job.harvest, read_manifest(job.harvest))

    truth = SyntheticFeatures(d=16, num_features=32, firing_probability=0.1, seed=3)

    def stream_from(start: int):
        generator = torch.Generator().manual_seed(7)
        for index in range(STEPS):
            batch_BD = truth.sample(BATCH, generator)
            if index >= start:
                yield batch_BD

    member = GroupMember("m0", SaeConfig(architecture="topk", d_in=16, d_sae=64, k=4),
                         TrainConfig(total_steps=STEPS, lr=3e-3), f"{root}/saes/m0", f"{root}/ckpt/m0",
                         features_uri=f"{root}/features/m0.parquet")
    (record,) = train_group([member], stream_from, lambda: truth.batches(BATCH, 2, seed=99),
                            checkpoint_every=10, device=torch.device("cpu"), log_every=5)

    secrets = {"access key": s3_env.access_key.encode(), "secret key": s3_env.secret_key.encode()}
    fs, base = filesystem(root)
    objects = [path for path in fs.find(base) if not path.rsplit("/", 1)[-1].startswith(".tmp-")]
    names = {path.rsplit("/", 1)[-1] for path in objects}
    assert {"_manifest.json", "cfg.json", "tokens.parquet"} <= names, sorted(names)
    assert any(name.endswith(".parquet") and name.startswith("part-") for name in names)
    scanned = f"scanned {len(objects)} objects, {sum(fs.size(p) for p in objects)} bytes, {len(captured_logs.records)} log records"
    assert captured_logs.records, "no log records were captured: the log check would be vacuous"
    for path in objects:
        payload = fs.cat(path)
        for what, secret in secrets.items():
            assert secret not in payload, f"{what} found in s3://{path}"
    for path in (f"{job.harvest}/_manifest.json", f"{record['sae_uri']}/cfg.json"):
        text = read_bytes(path)
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in {path}"

    logs = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.__dict__!r}" for r in captured_logs.records)
    captured = capsys.readouterr()
    for what, secret in secrets.items():
        for source, text in (("logs", logs), ("stdout", captured.out), ("stderr", captured.err)):
            assert secret.decode() not in text, f"{what} in {source}"
    with capsys.disabled():
        print(scanned)
