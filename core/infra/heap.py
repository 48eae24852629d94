"""Giving memory back to the operating system once a burst of work is over.

What a burst frees does not leave the process by itself. Two things keep it:

- **Reference cycles.** A connection that breaks mid-send leaves its exception, whose
  traceback holds the frames of the send path (trio's ``_translate_socket_errors_to_stream_
  errors``, Hypercorn's ``protocol_send``, Quart's ``_send_response``) and through them the
  last chunk of the body. Only the cyclic garbage collector frees that, and the app runs
  it rarely (see the thresholds set at start-up in :mod:`triograph.core.http.app`).
- **The C allocator.** glibc keeps freed memory in its heaps for reuse and returns to the
  system only what is at the top of the main heap; ``malloc_trim(0)`` returns every whole
  free page of every heap.

:func:`release` does both. The supervisor calls it when runs have finished and none is in
flight any more, so its pause (tens of milliseconds on a large heap) never delays a run.
Memory in CPython's own small-object arenas is returned when an arena empties; a few
survivors of a burst can keep some arenas, which this does not change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library or platform."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def release() -> None:
    """Collect cyclic garbage, then hand whole free pages of the C heaps back to the system."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
