"""Keep freed memory for the next batch instead of handing it back to the OS (glibc only).

A 32-frame 224 px batch of 4 clips is ~77 MB of float frames and ~82 MB of overlapping 10 s
audio windows. glibc serves blocks that large with a fresh ``mmap`` and unmaps them when they are
freed, so every batch pays to page-fault and zero ~160 MB again: on the bench's 2-core machine
that was 40 % of :func:`~eclipse_lite.data.dataset.expand_compact`'s time (66 → 38 ms per clip,
timed on one 4-clip batch of the bench videos in one process, without and with this call; the
loader-level effect is ``python -m eclipse_lite.studies.loader_bench`` with and without
``--no-keep-memory``, in data/README.md). PyTorch's CUDA allocator caches for the same reason; on
the CPU it leaves this to ``malloc``.

:func:`keep_freed_memory` sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` with
``mallopt`` (the run-time form of ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``), so
large blocks come from the heap and freed ones are reused. The cost: the process keeps its peak
heap for its lifetime, as a caching allocator does. DataLoader workers forked afterwards inherit
the setting. Elsewhere (macOS, musl, Windows) it does nothing and returns False.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold_bytes: int = 1 << 30,
                      trim_threshold_bytes: int = 1 << 31) -> bool:
    """Serve allocations below ``mmap_threshold_bytes`` from the heap and return freed heap to
    the OS only above ``trim_threshold_bytes``. Returns True when glibc accepted both settings.
    """
    if int(mmap_threshold_bytes) <= 0 or int(trim_threshold_bytes) <= 0:
        raise ValueError(f"thresholds must be positive, got mmap={mmap_threshold_bytes}, "
                         f"trim={trim_threshold_bytes}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # glibc's own check: gnu_get_libc_version exists only there (not in musl)
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    cap = 2 ** 31 - 1  # mallopt takes an int
    ok_mmap = mallopt(_M_MMAP_THRESHOLD, min(int(mmap_threshold_bytes), cap)) == 1
    ok_trim = mallopt(_M_TRIM_THRESHOLD, min(int(trim_threshold_bytes), cap)) == 1
    return ok_mmap and ok_trim
