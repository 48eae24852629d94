"""``triograph serve`` that reports on its own memory, for ``stream_memory.py``.

On SIGUSR1 (after a full collection) it writes to the path in ``$STREAM_MEMORY_DUMP`` a
pickle of ``(snapshot, counts)``: where it dumped a tracemalloc snapshot (None unless
started with ``-X tracemalloc=N``), and a Counter of its resident size (``malloc:rss``),
glibc's ``mallinfo2`` fields (``malloc:*``) and the live objects the garbage collector
tracks, by type (count; ``bytes:`` their ``sys.getsizeof``; ``code:`` coroutines and
generators by their code). SIGUSR2 does the same after ``malloc_trim(0)``. The file is
renamed to ``*.done`` once written. With ``$STREAM_MEMORY_OWNERS`` set, a sample of
containers is attributed to the object that refers to them (``owner:``; slow).
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import pickle
import random
import signal
import sys
import tracemalloc
from typing import Any

FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks")


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (*FIELDS, "fordblks", "keepcost")]


libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2

CONTAINERS = frozenset(
    f"builtins.{n}" for n in ("set", "dict", "list", "cell", "function", "method", "tuple")
) | {"collections.deque", "collections.OrderedDict"}


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def type_name(o: object) -> str:
    return type(o).__module__ + "." + type(o).__qualname__


def code_of(o: object) -> Any:
    for attr in ("cr_code", "ag_code", "gi_code", "__code__"):
        code = getattr(o, attr, None)
        if code is not None:
            return code
    return None


def owners(counts: collections.Counter[str]) -> None:
    objs = [o for o in gc.get_objects() if type_name(o) in CONTAINERS]
    sample = random.sample(range(len(objs)), min(len(objs), 3000))
    here = sys._getframe()
    for i in sample:
        o = objs[i]
        owner = "?"
        for r in gc.get_referrers(o):
            if r is objs or r is here:
                continue
            if isinstance(r, dict):
                owner = "in dict"
                for rr in gc.get_referrers(r):
                    if getattr(rr, "__dict__", None) is r:
                        owner = "dict of " + type(rr).__qualname__
                        break
            else:
                owner = type_name(r)
                code = code_of(r)
                if code is not None:
                    owner += ":" + code.co_qualname
                elif type(r).__name__ == "frame":
                    owner += ":" + r.f_code.co_qualname
            break
        counts["owner:" + type(o).__qualname__ + " <- " + owner] += len(objs) / len(sample)
        del o


def dump(signum: int, frame: Any) -> None:
    if signum == signal.SIGUSR2:
        libc.malloc_trim(0)
    gc.collect()
    path = os.environ["STREAM_MEMORY_DUMP"]
    traced = tracemalloc.is_tracing()
    if traced:  # first (what follows allocates), then let go of (its traces are objects)
        tracemalloc.take_snapshot().dump(path + ".snapshot")
        gc.collect()
    info = libc.mallinfo2()
    counts: collections.Counter[str] = collections.Counter()
    counts["malloc:rss"] = rss()
    for name, _ in Mallinfo2._fields_:
        counts["malloc:" + name] = getattr(info, name)
    if traced:
        for o in gc.get_objects():
            name = type_name(o)
            counts[name] += 1
            counts["bytes:" + name] += sys.getsizeof(o)
            code = None if name.endswith(".function") else code_of(o)
            if code is not None:
                counts["code:" + name + ":" + code.co_qualname] += 1
                counts["codebytes:" + name + ":" + code.co_qualname] += sys.getsizeof(o)
        if os.environ.get("STREAM_MEMORY_OWNERS"):
            owners(counts)
    with open(path, "wb") as f:
        pickle.dump((path + ".snapshot" if traced else None, counts), f)
    os.rename(path, path + ".done")


signal.signal(signal.SIGUSR1, dump)
signal.signal(signal.SIGUSR2, dump)

if __name__ == "__main__":
    from triograph.core.http.cli import main

    sys.exit(main())
