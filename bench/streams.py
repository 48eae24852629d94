"""Streams held open: N stateless ``POST /runs/stream`` opened at once on a graph that
sleeps (an agent waiting on a model), each on its own connection.

A stream is *open* once its first SSE event (``metadata``) has arrived; it *succeeds* once
its body ended with the run's final ``values`` event. Reported: how many succeeded and the
errors of the others, the time until 1,000 and until all were open, the server's memory per
open stream (its RSS when all were open, minus its RSS before, over N), its CPU per stream,
its peak of open file descriptors. ``max_runs`` is the server's default unless the plan says
otherwise: runs beyond it wait ``pending`` with their stream open.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import HOST, BenchError, Meter, Watched, open_fds, proc_rss_mib, serving
from load import Reply, one_request

GRAPH = "sleepy"
#: the client starts its connections this many at a time, letting those already connected
#: send their requests in between: started all at once, asyncio ran every connect before any
#: request went out, and the first request left ~1.6 s (the client's own work) after the start
LAUNCH_BATCH = 64


def body(seconds: float) -> dict[str, Any]:
    return {"assistant_id": GRAPH, "input": {"seconds": seconds}, "stream_mode": ["values"]}


def succeeded(reply: Reply) -> bool:
    return reply.ok and b'"done":true' in reply.body


async def _streams(base: str, pid: int, count: int, seconds: float, limit_s: float) -> dict:
    port = int(base.rsplit(":", 1)[1])
    # warm-up: the first runs of a process import and build what later ones reuse
    warm = await asyncio.gather(
        *(one_request(HOST, port, "POST", "/runs/stream", body(0.0)) for _ in range(20))
    )
    if not all(succeeded(r) for r in warm):
        raise BenchError(f"warm-up streams failed: {[r.error or r.status for r in warm][:3]}")
    await asyncio.sleep(1.0)
    rss_before, fds_before = proc_rss_mib(pid), open_fds(pid)
    opened: list[float] = []
    start = time.perf_counter()
    samples: list[tuple[float, int, float, int]] = []  # (t, open, rss, fds)
    all_open = asyncio.Event()

    def on_event(reply: Reply) -> None:
        assert reply.first_event_at is not None
        opened.append(reply.first_event_at - start)
        if len(opened) == count:
            all_open.set()

    async def sample() -> None:
        while True:
            now = time.perf_counter() - start
            samples.append((now, len(opened), proc_rss_mib(pid), open_fds(pid)))
            await asyncio.sleep(0.25)

    before = Meter(Watched(pid))
    sampler = asyncio.create_task(sample())
    tasks = []
    for i in range(count):
        tasks.append(
            asyncio.create_task(
                one_request(HOST, port, "POST", "/runs/stream", body(seconds), on_event=on_event)
            )
        )
        if i % LAUNCH_BATCH == LAUNCH_BATCH - 1:
            await asyncio.sleep(0)
    with_open: dict[str, Any] = {}
    everything = asyncio.gather(*tasks)
    try:
        async with asyncio.timeout(limit_s):
            waiter = asyncio.create_task(all_open.wait())
            await asyncio.wait([waiter, everything], return_when=asyncio.FIRST_COMPLETED)
            if all_open.is_set():
                await asyncio.sleep(0.5)  # the last responses settle
                opening = Meter(Watched(pid)).since(before, count)
                with_open = {
                    "rss_all_open_mib": proc_rss_mib(pid),
                    "fds_all_open": open_fds(pid),
                    "open_server_cpu_ms_per_stream": opening["server_cpu_ms_per_run"],
                }
            waiter.cancel()
            replies = await everything
    except TimeoutError:
        raise BenchError(f"streams: not all {count} ended within {limit_s:.0f} s") from None
    finally:
        sampler.cancel()
    after = Meter(Watched(pid)).since(before, count)
    errors: dict[str, int] = {}
    for reply in replies:
        if not succeeded(reply):
            key = reply.error or (f"HTTP {reply.status}" if reply.status != 200 else "no end")
            errors[key] = errors.get(key, 0) + 1
    opened.sort()
    figures: dict[str, Any] = {
        "streams": count,
        "graph_seconds": seconds,
        "succeeded": sum(succeeded(r) for r in replies),
        "errors": errors,
        "opened": len(opened),
        "first_open_s": opened[0] if opened else None,
        "open_1000_s": opened[999] if len(opened) >= 1000 else None,
        "all_open_s": opened[-1] if len(opened) == count else None,
        "all_done_s": after["wall_s"],
        "rss_before_mib": rss_before,
        "fds_before": fds_before,
        "peak_rss_mib": max((s[2] for s in samples), default=rss_before),
        "peak_fds": max((s[3] for s in samples), default=fds_before),
        "server_cpu_ms_per_stream": after["server_cpu_ms_per_run"],
        "foreign_cpu_util": after["foreign_cpu_util"],
        **with_open,
    }
    if "rss_all_open_mib" in with_open:
        figures["kib_per_open_stream"] = (with_open["rss_all_open_mib"] - rss_before) * 1024 / count
    return figures


def run(plan: dict[str, Any], pin: bool, max_runs: int | None = None) -> dict[str, Any]:
    """One repetition on a fresh server; ``max_runs`` overrides the server's default."""
    count, seconds = plan["streams"], plan["stream_seconds"]
    extra = ["--max-runs", str(max_runs)] if max_runs is not None else []
    with serving("memory", pin, extra=extra) as (base, watched, _):
        limit_s = plan["stream_timeout"]
        figures = asyncio.run(_streams(base, watched.server, count, seconds, limit_s))
    figures["max_runs"] = max_runs
    return figures
