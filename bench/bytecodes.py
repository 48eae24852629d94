"""Python bytecodes per request, by function and by package, on Trio's thread and on the
others: where ``instructions.py``'s counts go, in figures the machine's speed does not move.

```sh
.venv/bin/python bench/bytecodes.py                      # POST /runs/wait, 200 requests
.venv/bin/python bench/bytecodes.py --probe ok --top 40  # GET /ok, the 40 costliest functions
.venv/bin/python bench/bytecodes.py --floor              # and the wait's in-process floor
```

The server (``triograph serve --storage memory`` with ``bench/langgraph.json``) runs this
file as its entry point (``--serve``), which counts with ``sys.monitoring`` (Python 3.12+)
every bytecode instruction executed, by code object and by thread (Trio's, the main one, or
another), between two signals: ``SIGUSR1`` starts counting, ``SIGUSR2`` stops and writes
the counts where ``$TRIOGRAPH_BYTECODES`` names. The probe (one of ``instructions.py``'s)
is sent ``WARMUP`` times on a keep-alive connection, then counted ``--requests`` times.

What is counted is what the interpreter executes of Python code: a function written in C
(a ``dict`` method, ``re``, ``orjson``) counts as the one call instruction that calls it.
So it sees how much of Python each layer runs (Trio's scheduler, h11, Quart, the run path),
not what each instruction costs. Counting slows the server several times, and what the
server does per second rather than per request comes into each request's share as much
more: the lazy pipes' sweep (every 50 ms while a run nobody follows runs; a sleep and its
cancel scope each time) is several percent of Trio's thread here, less at full speed. The server
runs pinned to one core as in ``run.py`` (unpinned, its threads take turns differently:
Trio's thread counted ~30% more). Compare two commits in the same conditions, each run
more than once: the figures move by a few percent from run to run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import pickle
import signal
import sys
import tempfile
import threading
import time
from types import CodeType
from typing import Any

from harness import BenchError, free_port, git_state, serve_command, server
from instructions import PROBES, check, connect, exchange, floor_runs, request_bytes

WARMUP = 100
STARTUP_TIMEOUT = 120.0
#: where the server writes its counts (set by the bench for its server)
DUMP = "TRIOGRAPH_BYTECODES"

Counts = dict[tuple[str, str, int, str], int]  # (thread, file, first line, name) -> bytecodes


class Bytecodes:
    """Counts, between :meth:`start` and :meth:`stop`, every bytecode this process executes
    (``sys.monitoring``), by code object and by whether Trio's thread (the main one) ran it."""

    def __init__(self) -> None:
        self._tool = sys.monitoring.PROFILER_ID
        sys.monitoring.use_tool_id(self._tool, "triograph-bytecodes")
        self._counts: collections.Counter[tuple[bool, CodeType]] = collections.Counter()
        main, get_ident, counts = threading.main_thread().ident, threading.get_ident, self._counts

        def executed(code: CodeType, offset: int) -> None:
            counts[get_ident() == main, code] += 1

        sys.monitoring.register_callback(self._tool, sys.monitoring.events.INSTRUCTION, executed)

    def start(self) -> None:
        self._counts.clear()
        sys.monitoring.set_events(self._tool, sys.monitoring.events.INSTRUCTION)

    def stop(self, main: str, others: str) -> Counts:
        """The counts since :meth:`start`, the main thread's labelled ``main``, the other
        threads' ``others`` (the same label counts them as one)."""
        sys.monitoring.set_events(self._tool, 0)
        out: Counts = collections.Counter()
        for (on_main, code), n in self._counts.items():
            key = (main if on_main else others, code.co_filename, code.co_firstlineno)
            out[(*key, code.co_qualname)] += n
        return dict(out)


def serve(argv: list[str]) -> int:
    """``triograph serve argv...``, counting bytecodes between SIGUSR1 and SIGUSR2."""
    bytecodes = Bytecodes()

    def stop(*_: object) -> None:
        path = pathlib.Path(os.environ[DUMP])
        path.with_suffix(".tmp").write_bytes(pickle.dumps(bytecodes.stop("trio", "other")))
        path.with_suffix(".tmp").rename(path)

    signal.signal(signal.SIGUSR1, lambda *_: bytecodes.start())
    signal.signal(signal.SIGUSR2, stop)
    from triograph.core.http import cli

    return cli.main(argv)


def count_floor(floor: str, runs: int) -> Counts:
    """The bytecodes of ``runs`` runs of an in-process floor (``instructions.py``'s), all
    threads as one: ``floor_runs(runs)`` less ``floor_runs(0)`` (its warm-up, the loop's
    start and end)."""
    bytecodes = Bytecodes()
    floor_runs(0, floor)  # the graph's module imported, uncounted
    totals = []
    for n in (runs, 0):
        bytecodes.start()
        floor_runs(n, floor)
        totals.append(bytecodes.stop("floor", "floor"))
    sys.monitoring.free_tool_id(sys.monitoring.PROFILER_ID)
    with_runs, without = totals
    return {key: n - without.get(key, 0) for key, n in with_runs.items() if n > without.get(key, 0)}


def package(filename: str) -> str:
    """The package a file belongs to: ``trio``, ``triograph/core/engine``, ``stdlib asyncio``."""
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/triograph/" in filename or filename.startswith(("core/", "plugins/", "storage/")):
        parts = filename.split("triograph/")[-1].split("/")
        return "triograph/" + "/".join(parts[:2] if parts[0] == "core" else parts[:1])
    if filename.startswith("<"):  # generated code: attrs' methods, dataclasses' __init__
        return "generated"
    return "stdlib " + filename.rsplit("/", 1)[-1].removesuffix(".py")


def short(filename: str) -> str:
    for marker in ("site-packages/", "/triograph/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def measure(probe_key: str, requests: int, split: bool = False) -> Counts:
    probe = next(p for p in PROBES if p.key == probe_key)
    port = free_port()
    dump = pathlib.Path(tempfile.mkdtemp(prefix="triograph-bytecodes-")) / "counts"
    cmd = serve_command(port, "memory")
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", *cmd[3:]]
    with server(cmd, pin=True, env={"PYTHONMALLOC": "malloc", DUMP: str(dump)}) as proc:
        sock = connect(proc, port, STARTUP_TIMEOUT)
        with sock:
            request = request_bytes(probe.method, probe.path, probe.body)
            for _ in range(WARMUP):
                check(probe, *exchange(sock, request, split=split))
            os.kill(proc.pid, signal.SIGUSR1)
            time.sleep(0.2)  # the signal is handled between two bytecodes of the main thread
            for _ in range(requests):
                check(probe, *exchange(sock, request, split=split))
            os.kill(proc.pid, signal.SIGUSR2)
            deadline = time.monotonic() + 60
            while not dump.exists():
                if time.monotonic() > deadline:
                    raise BenchError("the server wrote no counts")
                time.sleep(0.1)
    counts: Counts = pickle.loads(dump.read_bytes())
    dump.unlink()
    dump.parent.rmdir()
    return counts


def report(counts: Counts, requests: int, top: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    titles = {"trio": "Trio's thread", "other": "the other threads", "floor": "the floor"}
    for thread, title in titles.items():
        mine = {k[1:]: n for k, n in counts.items() if k[0] == thread}
        if not mine:
            continue
        total = sum(mine.values())
        by_package: collections.Counter[str] = collections.Counter()
        for (filename, _, _), n in mine.items():
            by_package[package(filename)] += n
        print(f"\n{title}: {total / requests:,.0f} bytecodes per request")
        for name, n in by_package.most_common(top // 2):
            print(f"  {n / requests:8,.0f}  {100 * n / max(total, 1):5.1f}%  {name}")
        print("  functions:")
        functions = sorted(mine.items(), key=lambda kv: -kv[1])[:top]
        for (filename, line, name), n in functions:
            print(f"  {n / requests:8,.0f}  {short(filename)}:{line} {name}")
        out[thread] = {
            "per_request": total / requests,
            "packages": {k: v / requests for k, v in by_package.most_common()},
            "functions": {
                f"{short(f)}:{line} {name}": n / requests for (f, line, name), n in functions
            },
        }
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        return serve(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe", default="wait", choices=[p.key for p in PROBES])
    parser.add_argument("--requests", type=int, default=200, help="counted requests")
    parser.add_argument("--top", type=int, default=30, help="functions listed per thread")
    parser.add_argument("--json", metavar="PATH", help="write the figures there as JSON")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also count the probe's in-process floor (instructions.py's), all its threads",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="send each request's head and body as two writes, as httpx does",
    )
    args = parser.parse_args()
    if sys.version_info < (3, 12):
        print("sys.monitoring needs Python 3.12 or later", file=sys.stderr)
        return 2
    try:
        counts = measure(args.probe, args.requests, args.split)
        probe = next(p for p in PROBES if p.key == args.probe)
        if args.floor and probe.floor is not None:
            counts.update(count_floor(probe.floor, args.requests))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    figures = {
        "git": git_state(),
        "probe": args.probe,
        "requests": args.requests,
        "split": args.split,
    }
    figures.update(report(counts, args.requests, args.top))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
