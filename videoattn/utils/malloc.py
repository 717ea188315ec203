"""glibc malloc settings for data-loading processes.

A loader worker allocates and frees the same few multi-MB blocks for every clip (decoded frames,
the resized crop, the float clip). With glibc's defaults those blocks go back to the kernel after
each clip (the adaptive mmap threshold and heap trimming), so every clip pays page faults on fresh
memory again, and per-thread arenas fragment over long runs (measured by ``tools/benchmark.py data``;
the figures are in docs/benchmarks.md).

:func:`tune_malloc` keeps freed blocks in the heap for reuse (a steady high-water mark, not growth)
and caps the arenas. It is a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc <malloc.h>


def tune_malloc(mmap_threshold: int = 256 << 20, trim_threshold: int = 1 << 30, arena_max: int = 2) -> bool:
    """Raise glibc's mmap and trim thresholds and cap its arenas in this process; True if applied.

    Blocks under ``mmap_threshold`` bytes come from the heap, and freed heap memory is only
    returned to the kernel beyond ``trim_threshold`` bytes of free top space.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    settings = ((M_ARENA_MAX, arena_max), (M_MMAP_THRESHOLD, mmap_threshold), (M_TRIM_THRESHOLD, trim_threshold))
    return all(libc.mallopt(key, value) == 1 for key, value in settings)
