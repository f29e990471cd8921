"""infra.allocator: a training process serves large tensors from its heap, where freed memory is reused.

The speed-up itself is measured in bench/sparse_kernels.py (allocator table); this checks the
mechanism: where a 64 MiB tensor's memory comes from, with and without keep_freed_memory().
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
if sys.argv[1] == "keep":
    from infra.allocator import keep_freed_memory
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
tensor = torch.empty(16, 2**20)  # 64 MiB of float32: over glibc's largest mmap threshold
address = tensor.data_ptr()
for line in open("/proc/self/maps"):
    start, end = (int(part, 16) for part in line.split()[0].split("-"))
    if start <= address < end:
        print("heap" if line.rstrip().endswith("[heap]") else "mmap")
"""


def region_of_large_tensor(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.split()[-1]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_large_tensors_come_from_the_reusable_heap():
    assert region_of_large_tensor("default") == "mmap"  # unmapped on free, faulted in again next step
    assert region_of_large_tensor("keep") == "heap"
