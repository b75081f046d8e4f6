"""One way to compile the detectors' hot loops with numba."""

from __future__ import annotations

from numba import njit


def jit(fn):
    """Compile lazily (at first call), releasing the GIL; cache the machine code on disk when a
    cache directory is writable (``NUMBA_CACHE_DIR`` or next to the module), else per process."""
    try:
        return njit(nogil=True, cache=True, fastmath=False, boundscheck=False)(fn)
    except RuntimeError:  # numba: no writable cache locator
        return njit(nogil=True, cache=False, fastmath=False, boundscheck=False)(fn)
