"""The worker gives freed heap pages back to the OS (issue 20): the trimmer trims once RSS
grew by its threshold, and not before."""

from __future__ import annotations

import sys

import pytest

from stream_scorer import heap

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc")


@linux_only
def test_freed_pages_of_a_burst_go_back_to_the_os() -> None:
    # In a long test process: no other trimmer may trim meanwhile, and the heap's free pages of
    # earlier tests go back first (else the burst reuses them and RSS does not grow).
    running, heap._TRIMMER = heap._TRIMMER, None  # noqa: SLF001 - the process-wide worker trimmer
    if running is not None:
        running.stop()
    heap.set_mmap_threshold(64 * 1024 * 1024)  # keep the burst's blocks on the heap, as small ones are
    try:
        heap.trim_heap()
        trimmer = heap.HeapTrimmer(growth=32 * 2**20)
        trimmer.baseline = heap.rss_bytes()
        assert not trimmer.check(), "no growth: no trim"
        # ~96 MB of heap blocks, each followed by a small one that stays: the freed blocks are
        # holes inside the heap, which free() alone never gives back (only its top).
        burst, kept = [], []
        for _ in range(2000):
            burst.append(bytearray(48 * 1024))
            kept.append(bytearray(1024))
        grown = heap.rss_bytes()
        del burst
        assert heap.rss_bytes() > grown - 16 * 2**20, "the holes stay resident until a trim"
        assert trimmer.check() and trimmer.trims == 1
        assert trimmer.baseline < grown - 64 * 2**20, (grown, trimmer.baseline)
    finally:
        heap.set_mmap_threshold()


@linux_only
def test_keep_rss_low_starts_one_trimmer() -> None:
    assert heap.keep_rss_low() is heap.keep_rss_low()
