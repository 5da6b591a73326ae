"""Allocator settings for the processes that run the embedding model (worker, `docvec up`).

glibc raises its mmap threshold at run time: once a large block (a batch's activations) has been freed,
later blocks of up to that size come from the heap instead of fresh mappings. A model fed batches of
ever-changing shapes (length-sorted windows across tasks) then fragments the heap, and the process's RSS
climbs with every document it embeds. Measured with the real worker in one process on the
`bench.scale` corpus: 1,011 -> 1,315 MiB over 250 documents with glibc's default, 698 -> 707 MiB with
the threshold pinned at 128 KiB (large blocks are mapped and unmapped, and go back to the OS on free).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD_BYTES = 128 * 1024
_M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number


def pin_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold (and so turn off its dynamic raising); False where the C library is
    not glibc (macOS, musl), which leaves the allocator as it is."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    pinned = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    if not pinned:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused; worker RSS may grow with use", threshold_bytes)
    return pinned


def freeze_heap() -> int:
    """Collect once, then move every object alive into the permanent generation (`gc.freeze`); returns
    how many. Call it in a serving process once its long-lived objects exist (the model is loaded).

    An API process holds ~570k objects after loading the model (torch modules, transformers, the
    tokenizer, the vector store), and every full collection walked them all: 481 ms measured during
    `bench.search` at 8 clients, every request in flight held up that long. Frozen objects are never
    walked again; those created later still are.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
