"""Keep freed CPU memory in the process for reuse, instead of handing it back to the OS every step.

glibc serves each allocation over its mmap threshold (at most 32 MiB) with a fresh mmap and
unmaps it on free, so every large training tensor (a [batch, latents] activation matrix,
a dictionary-sized gradient) is page-faulted in anew on every step. On the 2-core VM that
was ~45% of a TopK 32x step (bench/sparse_kernels.py: 388 ms -> 213 ms). Serving every
allocation from the heap and never trimming it lets later steps reuse the pages earlier
steps freed. The cost is that
the process keeps its peak footprint until it exits, which is what a training worker wants.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: ~2 GiB of free heap top before glibc trims


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed memory (once per process); False where there is no glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
