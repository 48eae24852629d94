"""A burst of background runs: N stateless ``POST /runs`` (echo graph) from S senders, each
sending on a keep-alive connection of its own as fast as it is answered.

Reported: submissions per second (N over the time from the first request to the last
answer), completions per second (N over the time until no run is left in flight), and the
server's CPU per run. Completion is watched on another connection: the number of ``busy``
threads (a stateless run's temporary thread is ``busy`` until the run has recorded its
outcome, then deleted), read from ``X-Pagination-Total`` of ``POST /threads/search`` every
20 ms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import HOST, BenchError, Meter, Watched, serving
from load import Connection

BODY = {"assistant_id": "echo", "input": {"msg": "hello", "n": 0}}
BUSY = {"status": "busy", "limit": 1}


async def _in_flight(conn: Connection) -> int:
    reply = await conn.request("POST", "/threads/search", BUSY)
    if reply.status != 200:
        raise BenchError(f"POST /threads/search -> {reply.status}")
    return int(reply.headers["x-pagination-total"])


async def until_idle(conn: Connection, interval: float) -> None:
    """Return once no run is in flight, asking every ``interval`` seconds."""
    while True:
        if not await _in_flight(conn):
            return
        await asyncio.sleep(interval)


async def _burst(base: str, pid: int, runs: int, senders: int, limit_s: float) -> dict[str, Any]:
    port = int(base.rsplit(":", 1)[1])
    conns = [await Connection.open(HOST, port) for _ in range(senders)]
    watcher = await Connection.open(HOST, port)
    left = runs

    async def send(conn: Connection) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await send_one(conn)

    try:
        for conn in conns[:8]:  # warm-up, and wait until those runs are done
            await send_one(conn)
        await until_idle(watcher, 0.05)
        before = Meter(Watched(pid))
        start = time.perf_counter()
        async with asyncio.timeout(limit_s):
            await asyncio.gather(*(send(c) for c in conns))
            submitted = time.perf_counter()
            await until_idle(watcher, 0.02)
        completed = time.perf_counter()
        after = Meter(Watched(pid)).since(before, runs)
    except TimeoutError:
        raise BenchError(f"burst: not done within {limit_s:.0f} s") from None
    finally:
        for conn in [*conns, watcher]:
            conn.close()
    return {
        "runs": runs,
        "senders": senders,
        "submissions_per_s": runs / (submitted - start),
        "completions_per_s": runs / (completed - start),
        "submit_s": submitted - start,
        "complete_s": completed - start,
        "server_cpu_ms_per_run": after["server_cpu_ms_per_run"],
        "foreign_cpu_util": after["foreign_cpu_util"],
    }


async def send_one(conn: Connection) -> None:
    reply = await conn.request("POST", "/runs", BODY)
    if reply.status != 200:
        raise BenchError(f"POST /runs -> {reply.status}: {reply.body[:200]!r}")


def run(plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    with serving("memory", pin) as (base, watched, _):
        return asyncio.run(
            _burst(base, watched.server, plan["burst_runs"], plan["burst_senders"], 120.0)
        )
