"""Where a stateless ``POST /runs/wait`` spends its CPU at concurrency 1, thread by thread,
and what it costs to run the graph beside the HTTP work on one core.

```sh
.venv/bin/python bench/threads.py                 # 3,000 waits, then the in-process parts
.venv/bin/python bench/threads.py --requests 1000
```

1. **The server, thread by thread.** ``triograph serve`` pinned to core 0 (as ``run.py``
   runs it), driven from core 1 by a raw socket (a request in one write, no client library)
   one wait after the other; each thread's user and system CPU and its context switches per
   request, from ``/proc/<pid>/task``: Trio's (the main thread), the graph loop's,
   LangGraph's worker for synchronous nodes, the log writer's.
2. **The graph alone, across the bridge.** The echo graph run as the server asks it
   (``astream``, the ``values`` mode), one run at a time with ``GraphBridge.call`` from a
   Trio thread that does nothing else; then all runs in one call, inside the graph loop
   (the floor, as ``run.py``'s).
3. **The graph beside HTTP work.** The same, with Trio's thread handling requests between
   two runs (h11 parsing a request and writing its response, ``--http`` of them per run):
   each side's CPU against what it takes alone shows what the two cost each other on one
   core: each runs its Python slower, finding the caches filled with the other's data.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import sys
import time
from collections.abc import Awaitable, Callable

import h11
import trio
from harness import (
    CLIENT_CORE,
    CLK_TCK,
    HERE,
    HOST,
    SERVER_CORE,
    astream_as_served,
    print_rows,
    serving,
)
from instructions import ECHO_INPUT, EXPECTED, PROBES, check, exchange, request_bytes

from triograph.core.infra.graph_bridge import GraphBridge

WAIT = next(probe for probe in PROBES if probe.key == "wait")
REQUEST = request_bytes(WAIT.method, WAIT.path, WAIT.body)


# -- 1. the server ----------------------------------------------------------------------------


def thread_times(pid: int) -> dict[int, tuple[int, int, int, int]]:
    """Each thread's utime and stime (ticks), voluntary and involuntary context switches."""
    out = {}
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        try:
            # the task's own file: /proc/<tid>/stat counts the whole process
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm)", as proc_stat
        switches = dict(
            line.split(":", 1) for line in status.splitlines() if "ctxt_switches" in line
        )
        out[int(task.name)] = (
            int(fields[11]),
            int(fields[12]),
            int(switches["voluntary_ctxt_switches"]),
            int(switches["nonvoluntary_ctxt_switches"]),
        )
    return out


class RawClient:
    """One keep-alive connection, sending each wait in one write (``instructions.exchange``),
    reopened when the server closes it (Hypercorn does after ``keep_alive_max_requests``)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None

    def wait(self) -> None:
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head, body = exchange(self.sock, REQUEST)
        check(WAIT, head, body)
        if b"connection: close" in head.lower():
            self.sock.close()
            self.sock = None


def server_threads(requests: int) -> list[tuple[str, ...]]:
    with serving("memory", True) as (base, _, proc):
        client = RawClient(int(base.rsplit(":", 1)[1]))
        for _ in range(300):
            client.wait()
        before, start = thread_times(proc.pid), time.perf_counter()
        for _ in range(requests):
            client.wait()
        wall, after = time.perf_counter() - start, thread_times(proc.pid)
    rows: list[tuple[str, ...]] = []
    total = [0.0, 0.0, 0.0, 0.0]
    for tid, now in sorted(after.items()):
        then = before.get(tid, (0, 0, 0, 0))
        user, system, voluntary, involuntary = (a - b for a, b in zip(now, then, strict=True))
        if not (user or system or voluntary or involuntary):
            continue
        figures = [
            user * 1000 / CLK_TCK / requests,
            system * 1000 / CLK_TCK / requests,
            voluntary / requests,
            involuntary / requests,
        ]
        total = [t + f for t, f in zip(total, figures, strict=True)]
        label = "Trio (main)" if tid == proc.pid else f"thread {tid}"
        rows.append((label, *(f"{f:.3f}" for f in figures[:2]), *(f"{f:.2f}" for f in figures[2:])))
    rows.append(("all", *(f"{f:.3f}" for f in total[:2]), *(f"{f:.2f}" for f in total[2:])))
    print(f"wall clock per request: {wall * 1000 / requests:.3f} ms", file=sys.stderr)
    return rows


# -- 2. and 3. the graph across the bridge ------------------------------------------------------


def handle_http(requests: int) -> None:
    """What the HTTP layer of a request does without the network: h11 parsing a request
    and writing a response of known length."""
    for _ in range(requests):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(REQUEST)
        while not isinstance(conn.next_event(), h11.EndOfMessage):
            pass
        headers = [("content-type", "application/json"), ("content-length", str(len(EXPECTED)))]
        conn.send(h11.Response(status_code=200, headers=headers))
        conn.send(h11.Data(data=EXPECTED))
        conn.send(h11.EndOfMessage())


def thread_seconds() -> dict[int, float]:
    return {tid: (t[0] + t[1]) / CLK_TCK for tid, t in thread_times(os.getpid()).items()}


async def in_process(runs: int, http: int) -> list[tuple[str, ...]]:
    sys.path.insert(0, str(HERE))
    try:
        from echo import graph
    finally:
        sys.path.remove(str(HERE))

    async def once() -> None:
        await astream_as_served(graph, "echo", ECHO_INPUT, "values")

    async def runs_in_loop(count: int) -> None:
        for _ in range(count):
            await once()

    main = os.getpid()  # the main thread's id: Trio's
    rows: list[tuple[str, ...]] = []
    bridge = GraphBridge()
    async with bridge.open():

        async def measure(
            label: str, step: Callable[[], Awaitable[None]], count: int, per: int = 1
        ) -> None:
            for _ in range(max(count // 10, 30)):
                await step()
            before = thread_seconds()
            for _ in range(count):
                await step()
            after = thread_seconds()
            trio_ms = (after[main] - before[main]) * 1000 / (count * per)
            others = sum(after[t] - before.get(t, 0.0) for t in after if t != main)
            other_ms = others * 1000 / (count * per)
            rows.append((label, f"{trio_ms:.3f}", f"{other_ms:.3f}", f"{trio_ms + other_ms:.3f}"))

        async def graph_alone() -> None:
            await bridge.call(once)

        async def http_alone() -> None:
            handle_http(http)

        async def graph_and_http() -> None:
            await bridge.call(once)
            handle_http(http)

        await measure("graph across the bridge", graph_alone, runs)
        await measure(f"{http} x HTTP work alone", http_alone, runs)
        await measure(f"graph, then {http} x HTTP work", graph_and_http, runs)

        async def floor() -> None:
            await bridge.call(lambda: runs_in_loop(10))

        await measure("floor: the runs inside the graph loop", floor, runs // 10, per=10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--http", type=int, default=20, help="HTTP requests' work per run (3.)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {CLIENT_CORE})
    rows = server_threads(args.requests)
    print(f"1. the server at c=1, per request ({args.requests} waits, raw socket):")
    print_rows([("thread", "user ms", "system ms", "voluntary", "involuntary"), *rows])
    os.sched_setaffinity(0, {SERVER_CORE})  # both threads on one core, as the server's
    rows = trio.run(in_process, args.requests, args.http)
    print("\n2./3. in process, on one core, per run: CPU of Trio's thread and the others, ms")
    print_rows([("what", "Trio's", "others", "all"), *rows])


if __name__ == "__main__":
    main()
