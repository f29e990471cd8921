"""Embedded Ray listens on loopback only: it is unauthenticated, so nothing else may reach it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

LOOPBACK = ("127.", "[::1]", "::1", "[::ffff:127.")  # the last: IPv4-mapped loopback on a dual-stack socket


def listening_sockets_of(pattern: str) -> list[tuple[str, str]]:
    """(local address, command line) of every listening TCP socket whose process matches pattern."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        local = fields[3]
        for pid in re.findall(r"pid=(\d+)", line):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except FileNotFoundError:
                continue
            if re.search(pattern, cmdline):
                found.append((local, cmdline[:120]))
    return found


def test_ray_binds_loopback_only(ray_local):
    sockets = listening_sockets_of(r"ray|gcs_server|raylet")
    assert sockets, "found no Ray listening sockets to check"
    exposed = [(addr, cmd) for addr, cmd in sockets if not addr.startswith(LOOPBACK)]
    assert not exposed, f"Ray listens beyond loopback: {exposed}"
