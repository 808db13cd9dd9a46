"""Large allocations straight from the OS, so a freed 30 MB page body is given back at once.

glibc's malloc serves blocks above its mmap threshold with ``mmap`` (returned to the OS on
``free``), but it raises that threshold to the size of each such block freed, up to 32 MiB: after
the first Socrata page (~30 MB of JSON) every later body, and its copies, came from the thread's
heap arena, where freed memory stays in the process. Fixing the threshold (``mallopt``) turns that
adjustment off. Measured with ``bench/socrata_bench.py`` (1,000,000 rows, the same run): peak RSS
of ``socrata run`` 528 MB with glibc's default, 479 MB with a fixed 4 MiB threshold
(``MALLOC_MMAP_THRESHOLD_=4194304``), no slower. No-op where the C library is not glibc.

Arrow's buffers (the typed batches, the row groups being encoded) then go to the same allocator:
Arrow's default pool (mimalloc in the wheels) keeps freed segments of each thread for reuse, and
the stage allocates in two threads (the next batch is read while one is typed). Measured with the
same bench, 2 x 2 runs alternating: peak RSS 514-524 MB with mimalloc, 486-491 MB with the system
pool (and 8 MiB row groups in both), CPU seconds the same (13.6-17.1 against 13.8-14.3).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
THRESHOLD_BYTES = 4 * 1024 * 1024
_done = False


def mmap_large_allocations() -> None:
    """Fix glibc's mmap threshold at ``THRESHOLD_BYTES`` and give Arrow the system allocator
    (once a process)."""
    global _done
    if _done:
        return
    _done = True
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES)
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())
