"""The Ray pool: every item done exactly once, even when an actor is killed mid-item."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from infra.ray_pool import driver_node_ip, run_pool

pytestmark = pytest.mark.e2e


class SlowWorker:
    """Commits one JSON file per item, idempotently, after announcing its pid."""

    def __init__(self, out_dir: str, num_threads: int | None = None) -> None:
        self.out = Path(out_dir)

    def work(self, item: int) -> dict:
        done = self.out / f"done-{item}.json"
        if done.exists():
            return json.loads(done.read_text())
        (self.out / f"started-{item}-{os.getpid()}").touch()
        time.sleep(0.4)
        record = {"item": item, "pid": os.getpid(), "commit": uuid.uuid4().hex}
        tmp = self.out / f".tmp-{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(record))
        tmp.rename(done)
        (self.out / f"commit-{item}-{record['commit']}").touch()
        return record

    def fail(self, item: int) -> None:
        raise ValueError(f"item {item} is bad input")


def started_pids(out: Path) -> set[int]:
    return {int(p.name.rsplit("-", 1)[1]) for p in out.glob("started-*")}


@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_killed_actor_loses_no_item_and_duplicates_none(ray_local, tmp_path, how):
    items = list(range(8))
    killed = {}

    def assassin():
        deadline = time.time() + 60
        while time.time() < deadline and not started_pids(tmp_path):
            time.sleep(0.05)
        victim_pid = sorted(started_pids(tmp_path))[0]
        if how == "SIGKILL":
            os.kill(victim_pid, signal.SIGKILL)
        else:
            for name in ray_local.util.list_named_actors():
                if name.startswith("pool-test"):
                    ray_local.kill(ray_local.get_actor(name), no_restart=False)
                    break
        killed["pid"] = victim_pid

    thread = threading.Thread(target=assassin)
    thread.start()
    results = run_pool(SlowWorker, (str(tmp_path),), "work", items, num_workers=2, name_prefix="pool-test")
    thread.join(timeout=60)
    assert killed, "the test never killed an actor"
    assert sorted(results) == items
    for item in items:
        commits = list(tmp_path.glob(f"commit-{item}-*"))
        assert len(commits) == 1, f"item {item} committed {len(commits)} times"
        assert results[item]["commit"] == commits[0].name.split("-", 2)[2]
    assert not list(tmp_path.glob(".tmp-*"))


def test_bad_input_fails_fast_with_its_own_error(ray_local, tmp_path):
    with pytest.raises(ValueError, match="item 0 is bad input"):
        run_pool(SlowWorker, (str(tmp_path),), "fail", [0, 1], num_workers=1, name_prefix="pool-fail")


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:6379", {"_node_ip_address": "127.0.0.1"}),  # a loopback cluster: the driver is on loopback too
    ("localhost:6379", {"_node_ip_address": "127.0.0.1"}),
    ("auto", {}),  # Ray finds the local cluster itself
    ("ray://head:10001", {}),  # Ray Client: no local raylet to name
])
def test_a_driver_names_the_address_the_cluster_reaches(address, expected):
    assert driver_node_ip(address) == expected
