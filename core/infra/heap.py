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

:func:`release` does both. The supervisor calls it when runs have finished, none is in
flight any more and nothing new has started for a whole sweep interval (:func:`activity`
stood still: no connection accepted, no API request, no run), so that its pause never
delays a request or a run. The pause grows with the heap: 1.2 s for the collection alone
with 10,000 connections open (1.2 million objects), taken, before this check, just as a
burst of 10,000 streams was being accepted (bench ``streams``: its first stream opened
after the pause); tens of milliseconds on an idle server.

- **CPython's small-object allocator** (pymalloc) was the rest, and the largest part. It
  takes memory from the system in 1 MiB arenas and gives an arena back only once every
  object in it is gone. A burst (50 chat runs streaming to readers that never read) fills
  some 135 new arenas with short-lived objects, mostly the graph's own (LangChain's message
  chunks and callbacks); the few thousand objects that outlive it (a log record, a timer,
  a cache entry: 0.3 MB in all by tracemalloc) are spread over nearly all of them and keep
  ~85 MiB from going back, at every round. With ``PYTHONMALLOC=malloc`` Python's objects
  come from glibc, whose free pages ``malloc_trim`` returns wherever they are: RSS went
  back to within 5% of where it started (bench/slow_readers.py), against 1.9x with
  pymalloc (and 1.24x with mimalloc). :func:`use_c_allocator` makes the server run so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from collections.abc import Callable, Sequence


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

_activity = 0


def note_activity() -> None:
    """Something started: a connection accepted, an API request, a run."""
    global _activity
    _activity += 1


def activity() -> int:
    """A count that moves whenever :func:`note_activity` is called: equal at two moments,
    nothing started in between."""
    return _activity


def release() -> None:
    """Collect cyclic garbage, then hand whole free pages of the C heaps back to the system."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)


def use_c_allocator(argv: Sequence[str] | None) -> None:
    """Run this process again with ``PYTHONMALLOC=malloc`` (see the module docstring), before
    it has done anything: only for a command line (``argv`` None: ``sys.argv`` is the
    program's), where glibc's ``malloc_trim`` exists, and unless ``PYTHONMALLOC`` is set
    (``PYTHONMALLOC=pymalloc`` keeps CPython's own allocator)."""
    if argv is not None or _malloc_trim is None or "PYTHONMALLOC" in os.environ:
        return
    os.environ["PYTHONMALLOC"] = "malloc"
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
