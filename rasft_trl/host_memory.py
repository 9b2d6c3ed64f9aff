"""Give freed host memory back to the system during long CPU runs (glibc's allocator).

PyTorch on the CPU allocates and frees tensors of every size through `malloc`. glibc serves blocks above its mmap
threshold with `mmap` and returns them to the system when freed, but the threshold is dynamic: each time a mapped
block is freed it rises to that block's size (up to 32 MB), so later tensors of that size come from the heap, whose
freed space is kept by the process. A training loop of tensors that change size every step (rollouts of different
lengths) then only ever grows: the CPU demo's resident memory climbed from 1.7 GB to 2.7 GB over its first three
steps, and stayed at 1.7 GB with the threshold fixed at 64 KiB (`benchmarks/bench_demo_memory.py`). Fixing the
threshold (which also turns its adjustment off) is what `MALLOC_MMAP_THRESHOLD_=65536` in the environment does, for
this process only and without a restart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

#: mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def release_freed_memory(mmap_threshold: int = 64 * 1024, trim_threshold: int = 128 * 1024) -> bool:
    """Fix glibc's mmap threshold at `mmap_threshold` bytes and its trim threshold at `trim_threshold`, so that
    freed tensors go back to the system. Returns whether it took effect (`False` on other C libraries: musl, macOS;
    nothing is changed there).

    Args:
        mmap_threshold: blocks at least this large are mapped on their own and unmapped when freed.
        trim_threshold: free space at the top of the heap beyond this is returned to the system.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    if not done:
        logger.debug("mallopt refused the thresholds; host memory is managed as the C library decides")
    return done
