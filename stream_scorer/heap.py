"""Give freed C-heap memory back to the OS while the worker runs (issue 20: RSS <= 400 MB).

Why: a worker's per-batch garbage (message values, parsed records, score records) is freed
every batch, but glibc keeps freed heap pages with the process unless they sit at the top of
the heap, so after a burst (a backlog of envelopes of 100 records drained by one worker) RSS
stayed above what the worker used: 427-442 MB without these measures, 354 MB with them (before
the bulk delivery); 338 and 317 MB with it. Two measures, both no-ops without glibc:

- blocks from :data:`MMAP_THRESHOLD` up (an envelope of 100 records is ~140 KB) get a mapping
  of their own, returned when freed (one ``mmap`` per such message: tens a second; the CPU per
  record of parse + score + serialise did not change, 72-75 us either way, +-3 us noise);
- :class:`HeapTrimmer`, a daemon thread, calls ``malloc_trim(0)`` when RSS has grown by
  :data:`TRIM_GROWTH_BYTES` since the last trim, at most every :data:`TRIM_EVERY_S`: a trim of
  a 400 MB heap took up to 14 ms (holding the allocator's locks), so it is not run per batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

#: glibc ``mallopt`` parameter (malloc.h).
_M_MMAP_THRESHOLD = -3
#: Blocks from this size up get their own mapping (glibc's default starts at 128 KB and rises
#: to 32 MB as large blocks are freed, after which they come from the heap and stay).
MMAP_THRESHOLD = 64 * 1024
#: RSS growth since the last trim that triggers the next one.
TRIM_GROWTH_BYTES = 16 * 1024 * 1024
#: How often the trimmer looks at RSS.
TRIM_EVERY_S = 1.0


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def trim_heap() -> bool:
    """``malloc_trim(0)``: return every free heap page to the OS; False where there is no glibc."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim(0)
    return True


def set_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> bool:
    """Blocks from ``nbytes`` up are mapped on their own (a fixed threshold: glibc's dynamic
    one stops rising). False where there is no glibc."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    return bool(mallopt is not None and mallopt(_M_MMAP_THRESHOLD, nbytes))


def rss_bytes() -> int:
    """This process's resident set size (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class HeapTrimmer:
    """Trims the heap whenever RSS grew by ``growth`` bytes since the last trim."""

    def __init__(self, growth: int = TRIM_GROWTH_BYTES, every_s: float = TRIM_EVERY_S) -> None:
        self.growth = growth
        self.every_s = every_s
        #: Trims done, and the RSS after the last one.
        self.trims = 0
        self.baseline = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One look at RSS; trims (and returns True) when it grew enough."""
        rss = rss_bytes()
        if rss and rss - self.baseline < self.growth:
            self.baseline = min(self.baseline, rss) if self.baseline else rss
            return False
        if not trim_heap():
            return False
        self.trims += 1
        self.baseline = rss_bytes()
        log.debug("heap trimmed: RSS %.0f -> %.0f MB", rss / 2**20, self.baseline / 2**20)
        return True

    def _run(self) -> None:
        self.baseline = rss_bytes()
        while not self._stop.wait(self.every_s):
            self.check()

    def start(self) -> "HeapTrimmer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ja4-heap-trim", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


_TRIMMER: HeapTrimmer | None = None


def keep_rss_low() -> HeapTrimmer:
    """The worker's start-up step (idempotent): the mmap threshold, then the trimmer thread."""
    global _TRIMMER
    set_mmap_threshold()
    if _TRIMMER is None:
        _TRIMMER = HeapTrimmer().start()
    return _TRIMMER
