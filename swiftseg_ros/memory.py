"""Giving freed memory back to the system: after the engine is released (cleanup,
shutdown: ros/node.py) and after the engine evicts a plan (a camera size change).

Measured on the node's cleanup/configure cycles (docs/reliability.md): what grew was not
the engine's objects (released: its tensors, plans, ONNX Runtime sessions and compiled
kernels are freed with it) but glibc's malloc arenas. The worker thread and ONNX Runtime's
threads allocate from arenas of their own, and glibc returns an arena's free pages to the
system only from its top, so the freed buffers of one network stayed resident under the
next one's (+150 MB after the first SwiftNet/Fast-SCNN switch at 128x64, growing with the
input size). `malloc_trim(0)` releases the free pages of every arena. The same held for
an evicted plan's buffers: the 60-minute soak's memory moved in steps of 150-200 MB at
its size changes, and a 512x384 Fast-SCNN plan evicted by two small ones left +20-25 MB
resident, +1-4 MB with a trim after the eviction (test/test_engine_plans.py).

Below both the engine and the node (the engine does not import from ros/).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        _LIBC = ctypes.CDLL(name) if name else False
    return _LIBC


def return_freed_memory() -> bool:
    """Collect garbage (reference cycles still holding tensors) and hand the allocator's
    free pages back to the system. True where glibc's malloc_trim exists (Linux with
    glibc); elsewhere only the collection runs."""
    gc.collect()
    return trim_allocator()


def trim_allocator() -> bool:
    """Hand every malloc arena's free pages back to the system (no garbage collection:
    for memory freed by dropping references, as an evicted plan's). False where glibc's
    malloc_trim does not exist."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc else None
    if trim is None:
        return False
    trim(0)
    return True


def resident_mb() -> float | None:
    """This process's resident set (VmRSS) in MB, None where /proc is not there."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None
