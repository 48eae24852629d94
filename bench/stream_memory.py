"""Where the server's memory per open stream goes, deterministically (tracemalloc).

Starts ``triograph serve`` (memory storage, ``bench/langgraph.json``; ``traced_server.py``)
under tracemalloc, warms it up, snapshots its Python heap, opens N stateless
``POST /runs/stream`` on the ``sleepy`` graph at once, waits until every one has its first
event, snapshots again, and prints the difference per open stream: by package, by line,
the live objects by type, the coroutines and generators by code, and (``--frames N``) by
traceback. It also prints glibc's view (memory in use, free in its heaps, RSS; before and
after ``malloc_trim``). Unlike a timing, the figures do not depend on how busy the machine
is. With ``--max-runs`` below N, most runs wait for a slot (what most of 10,000 streams
do at the default ``max_runs``): the cost of a stream without its graph running.

    .venv/bin/python bench/stream_memory.py --streams 500 [--max-runs 10] [--frames 12]
    .venv/bin/python bench/stream_memory.py --streams 2000 --frames 0   # RSS, no tracing
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from harness import CONFIG, HERE, HOST, free_port, wait_ready
from load import one_request
from streams import body, succeeded

Dump = tuple[Any, collections.Counter[str]]


def snapshot(proc: subprocess.Popen[bytes], path: pathlib.Path, sig: int) -> Dump:
    done = path.with_name(path.name + ".done")
    done.unlink(missing_ok=True)
    proc.send_signal(sig)
    while not done.exists():
        if proc.poll() is not None:
            raise SystemExit("the server exited")
        time.sleep(0.1)
    with done.open("rb") as f:
        where, counts = pickle.load(f)
    if where is None:
        return None, counts
    snap = tracemalloc.Snapshot.load(where)
    os.unlink(where)
    return snap, counts


async def scenario(
    proc: subprocess.Popen[bytes], port: int, count: int, dump: pathlib.Path
) -> tuple[Dump, Dump, Dump]:
    warm = await asyncio.gather(
        *(one_request(HOST, port, "POST", "/runs/stream", body(0.0)) for _ in range(20))
    )
    assert all(succeeded(r) for r in warm), warm[:1]
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(snapshot, proc, dump, signal.SIGUSR1)
    opened = 0
    all_open = asyncio.Event()

    def on_event(_: Any) -> None:
        nonlocal opened
        opened += 1
        if opened == count:
            all_open.set()

    tasks = [
        asyncio.create_task(
            one_request(HOST, port, "POST", "/runs/stream", body(3600.0), on_event=on_event)
        )
        for _ in range(count)
    ]
    await all_open.wait()
    await asyncio.sleep(1.0)
    after = await asyncio.to_thread(snapshot, proc, dump, signal.SIGUSR1)
    trimmed = await asyncio.to_thread(snapshot, proc, dump, signal.SIGUSR2)
    for task in tasks:
        task.cancel()
    return before, after, trimmed


def short(name: str) -> str:
    for marker in ("site-packages/", "/triograph/", "/lib/python3.13/", "/lib/python3.11/"):
        if marker in name:
            return name.split(marker, 1)[1]
    return name


def report_malloc(before: Dump, after: Dump, trimmed: Dump, n: int) -> None:
    for label, (_, c) in (("before", before), ("all open", after), ("trimmed", trimmed)):
        print(
            f"{label:9} RSS {c['malloc:rss'] / 2**20:7.1f} MiB, malloc in use "
            f"{(c['malloc:uordblks'] + c['malloc:hblkhd']) / 2**20:7.1f} MiB, free in its "
            f"heaps {c['malloc:fordblks'] / 2**20:7.1f} MiB"
        )
    b, a, t = before[1], after[1], trimmed[1]
    in_use = a["malloc:uordblks"] + a["malloc:hblkhd"] - b["malloc:uordblks"] - b["malloc:hblkhd"]
    print(
        f"per stream: RSS {(a['malloc:rss'] - b['malloc:rss']) / n / 1024:.1f} KiB, "
        f"malloc in use {in_use / n / 1024:.1f} KiB, "
        f"RSS after trim {(t['malloc:rss'] - b['malloc:rss']) / n / 1024:.1f} KiB"
    )


def report(before: Dump, after: Dump, count: int, frames: int, top: int) -> None:
    (snap0, objs0), (snap1, objs1) = before, after
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen*"),
    ]
    snap0, snap1 = snap0.filter_traces(ignore), snap1.filter_traces(ignore)
    by_file = snap1.compare_to(snap0, "filename")
    total = sum(s.size_diff for s in by_file)
    print(f"\n== {count} streams: {total / count / 1024:.1f} KiB of Python allocations per stream")
    by_pkg: collections.Counter[str] = collections.Counter()
    for stat in by_file:
        name = short(stat.traceback[0].filename)
        by_pkg[name.split("/", 1)[0] if "/" in name else name] += stat.size_diff
    print("\n-- by package (bytes per stream)")
    for pkg, size in by_pkg.most_common(25):
        print(f"{size / count:9.0f}  {pkg}")
    print("\n-- by line (bytes, allocations per stream)")
    for stat in snap1.compare_to(snap0, "lineno")[:top]:
        fr = stat.traceback[0]
        where = f"{short(fr.filename)}:{fr.lineno}"
        print(f"{stat.size_diff / count:9.0f} {stat.count_diff / count:6.2f}  {where}")
    diff = collections.Counter({k: objs1[k] - objs0.get(k, 0) for k in objs1})

    def listed(prefix: str) -> list[tuple[float, str]]:
        items = [(n, k[len(prefix) :]) for k, n in diff.items() if k.startswith(prefix)]
        return sorted(items, reverse=True)

    print("\n-- live objects by type (per stream: count, bytes by sys.getsizeof)")
    for size, name in listed("bytes:")[:top]:
        if diff[name] / count >= 0.5:
            print(f"{diff[name] / count:7.2f} {size / count:7.0f}  {name}")
    print("\n-- coroutines and generators by code (per stream: count, bytes)")
    for n, name in listed("code:")[:top]:
        if n / count >= 0.5:
            print(f"{n / count:7.2f} {diff['codebytes:' + name] / count:6.0f}  {name}")
    owners = listed("owner:")
    if owners:
        print("\n-- containers by what refers to them (sampled; per stream)")
        for n, name in owners[: top * 2]:
            if n / count >= 0.3:
                print(f"{n / count:7.2f}  {name}")
    if frames > 1:
        print("\n-- by traceback (bytes, allocations per stream)")
        for stat in snap1.compare_to(snap0, "traceback")[:top]:
            print(f"{stat.size_diff / count:9.0f} {stat.count_diff / count:6.2f}")
            for fr in list(stat.traceback)[-frames:]:
                print(f"             {short(fr.filename)}:{fr.lineno}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--max-runs", type=int)
    parser.add_argument("--frames", type=int, default=1, help="0: no tracemalloc")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--save", help="pickle the three dumps here")
    args = parser.parse_args()
    port = free_port()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="stream-memory-"))
    dump = tmp / "dump"
    traced = ["-X", f"tracemalloc={args.frames}"] if args.frames else []
    cmd = [sys.executable, *traced, str(HERE / "traced_server.py"), "serve"]
    cmd += ["--config", str(CONFIG), "--host", HOST, "--port", str(port), "--storage", "memory"]
    cmd += ["--log-level", "WARNING"]
    if args.max_runs:
        cmd += ["--max-runs", str(args.max_runs)]
    env = {**os.environ, "STREAM_MEMORY_DUMP": str(dump)}
    with (tmp / "log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(proc, f"http://{HOST}:{port}", timeout=120)
            before, after, trimmed = asyncio.run(scenario(proc, port, args.streams, dump))
        finally:
            proc.kill()
            proc.wait()
    if args.save:
        with open(args.save, "wb") as f:
            pickle.dump((before, after, trimmed), f)
    report_malloc(before, after, trimmed, args.streams)
    if before[0] is not None:
        report(before, after, args.streams, args.frames, args.top)


if __name__ == "__main__":
    main()
