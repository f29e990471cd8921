"""Storage outage mid-harvest: a clear error within bounded time, nothing trusted half-written,
and after the server comes back (same data dir, same ports) the harvest resumes without
rewriting any finished shard and commits a valid manifest."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from infra.activations.schemas import validate_harvest
from infra.activations.store import marker_uri, read_manifest
from infra.harvest.plan import commit_harvest, missing_shards, plan_harvest
from infra.harvest.worker import ShardHarvester
from infra.lm.tokens import BUILTIN_PYDOC, TokenSpec
from infra.storage import filesystem
from tests.conftest import FOREIGN_AWS_ENV
from tests.infra.tiny_models import build_tiny_model
from tests.s3_server import S3Server, _process_group_pids, _terminate, _wait_ready, seaweed_s3

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CONTEXT, CONTEXTS, PER_SHARD = 16, 12, 4
HOOKPOINT = "blocks.1.hook_resid_post"
# An outage must surface as an error in this many seconds, not as a hang.
DETECT_LIMIT_S = 60.0


def _relaunch(server: S3Server, cmdline: list[str], cwd: str) -> subprocess.Popen[bytes]:
    """Start weed again with the exact command line (same -dir, same ports, same credentials)."""
    with open(server.log_path, "ab") as log:
        process = subprocess.Popen(cmdline, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=cwd, start_new_session=True)
    return process


def _alive(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an exited, unreaped weed still answers kill(0))."""
    alive = []
    for pid in _process_group_pids(pgid):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _stop(pgid: int) -> float:
    """Terminate the server's process group (SIGTERM, then SIGKILL after 15 s); seconds it took."""
    started = time.monotonic()
    os.killpg(pgid, signal.SIGTERM)
    while _alive(pgid) and time.monotonic() - started < 15:
        time.sleep(0.05)
    if _alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    return time.monotonic() - started


def test_outage_fails_fast_then_resumes_without_rewriting(tmp_path, monkeypatch):
    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    with seaweed_s3(tmp_path / "s3") as server:
        for name in FOREIGN_AWS_ENV:
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        # Bound botocore's own retries (connection refused is retried with backoff otherwise).
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("AWS_RETRY_MODE", "standard")
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        cwd = os.readlink(f"/proc/{server.pid}/cwd")

        spec = TokenSpec(source=BUILTIN_PYDOC, tokenizer=str(model), context_length=CONTEXT, num_tokens=CONTEXTS * CONTEXT)
        job = plan_harvest(str(model), [HOOKPOINT], spec, server.uri("outage"), dtype="float32",
                           contexts_per_shard=PER_SHARD, batch_contexts=4)
        harvester = ShardHarvester(job, device="cpu")
        record0 = harvester.harvest(0)
        fs, _ = filesystem(job.harvest)
        shard0 = f"{job.harvest}/{record0['files'][HOOKPOINT]['path']}".removeprefix("s3://")
        before = fs.info(shard0)
        assert fs.exists(marker_uri(job.harvest, 0))
        marker0 = fs.cat(marker_uri(job.harvest, 0))

        stop_s = _stop(server.pid)
        print(f"server stopped in {stop_s:.2f}s")
        started = time.monotonic()
        with pytest.raises(Exception) as failure:  # noqa: PT011 - whatever botocore raises, it must raise
            harvester.harvest(1)
        detect_s = time.monotonic() - started
        print(f"outage detected in {detect_s:.2f}s: {type(failure.value).__name__}: {failure.value}")
        assert detect_s < DETECT_LIMIT_S
        assert server.endpoint_url.split("//")[1] in str(failure.value) or "connect" in str(failure.value).lower()

        process = _relaunch(server, [c.decode() for c in cmdline], cwd)
        try:
            restart_s = _wait_ready(process, server)
            # Back to botocore's default retries, and wait (bounded) until stored objects are readable
            # again: the S3 gateway answers before the volume server has re-registered (500 InternalError).
            monkeypatch.delenv("AWS_MAX_ATTEMPTS")
            monkeypatch.delenv("AWS_RETRY_MODE")
            readable_from = time.monotonic()
            deadline = readable_from + 60
            while True:
                try:
                    filesystem(job.harvest)[0].cat(marker_uri(job.harvest, 0))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            print(f"server back in {restart_s:.2f}s, objects readable {time.monotonic() - readable_from:.2f}s later")
            # The half-run left no manifest: readers refuse the harvest.
            with pytest.raises(FileNotFoundError, match="unfinished"):
                read_manifest(job.harvest)
            assert missing_shards(job) == [1, 2]
            resumed = ShardHarvester(job, device="cpu")
            records = [resumed.harvest(index) for index in range(job.num_shards)]
            commit_harvest(job)
            fs, _ = filesystem(job.harvest)
            after = fs.info(shard0)
            rewritten = int(after["ETag"] != before["ETag"] or after["LastModified"] != before["LastModified"])
            assert rewritten == 0, (before, after)
            assert records[0] == record0 and fs.cat(marker_uri(job.harvest, 0)) == marker0
            checked = validate_harvest(job.harvest, read_manifest(job.harvest))
            assert checked["shards"] == job.num_shards and checked["rows"] == CONTEXTS * CONTEXT
        finally:
            _terminate(process)
