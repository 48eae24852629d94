"""Chat tokens: C clients, each streaming stateless chat runs one after the other with
``stream_mode: messages-tuple`` on a keep-alive connection of its own.

A token is one ``messages`` event the client received. Reported: tokens per second
delivered (all clients together, over the measured runs), the time from sending the request
to the first SSE event (``metadata``) and to the first token (p50/p90/p99), and the server's
CPU per token. Twice: with the chat model streaming each run's tokens in one go (the
heaviest load per token), then ``interleaved`` (the model yields after each token, as a
client of a real provider does, so runs take turns): there a run's first token no longer
waits for whole runs of the others, and each token costs a turn of the graph loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from harness import HOST, BenchError, Meter, Watched, percentiles, serving
from load import Connection

GRAPH = "chat"


def expected(tokens: int) -> int:
    """How many tokens the chat graph streams when asked for ``tokens`` (an odd count)."""
    return 2 * max(1, (tokens + 1) // 2) - 1


def body(tokens: int, interleave: bool = False) -> dict[str, Any]:
    return {
        "assistant_id": GRAPH,
        "input": {
            "messages": [{"role": "user", "content": "hi"}],
            "tokens": tokens,
            "interleave": interleave,
        },
        "stream_mode": ["messages-tuple"],
    }


async def measure(
    base: str, pid: int, plan: dict[str, Any], one_run: Callable[[Connection, bool], Awaitable[int]]
) -> dict[str, Any]:
    """``plan["token_clients"]`` clients on keep-alive connections of their own, each doing
    two warm-up runs, then its share of ``plan["token_runs"]`` measured ones, one after the
    other: ``one_run(connection, measured)`` does one and returns the tokens it received.
    Returns the tokens received over the measured runs, per second, and the server's CPU."""
    port = int(base.rsplit(":", 1)[1])
    conns = [await Connection.open(HOST, port) for _ in range(plan["token_clients"])]
    received = 0

    async def client(conn: Connection, count: int, measured: bool) -> None:
        nonlocal received
        for _ in range(count):
            got = await one_run(conn, measured)
            if measured:
                received += got

    try:
        await asyncio.gather(*(client(c, 2, False) for c in conns))  # warm-up
        before = Meter(Watched(pid))
        per_client = max(1, plan["token_runs"] // len(conns))
        await asyncio.gather(*(client(c, per_client, True) for c in conns))
        after = Meter(Watched(pid)).since(before, received)
    finally:
        for conn in conns:
            conn.close()
    return {
        "clients": len(conns),
        "tokens_per_run": plan["tokens_per_run"],
        "tokens": received,
        "tokens_per_s": received / after["wall_s"],
        "server_cpu_us_per_token": after["server_cpu_ms_per_run"] * 1000,
        "server_cpu_util": after["server_cpu_util"],
        "foreign_cpu_util": after["foreign_cpu_util"],
    }


async def classic(
    base: str, pid: int, plan: dict[str, Any], interleave: bool = False
) -> dict[str, Any]:
    """Stateless ``POST /runs/stream`` runs of the chat graph, with the first event's and
    the first token's latency."""
    tokens = plan["tokens_per_run"]
    first_event: list[float] = []
    first_token: list[float] = []

    async def one_run(conn: Connection, measured: bool) -> int:
        sent = time.perf_counter()
        reply = await conn.request(
            "POST",
            "/runs/stream",
            body(tokens, interleave),
            keep_body=False,
            count_name=b"messages",
        )
        if reply.status != 200 or reply.counted != expected(tokens):
            raise BenchError(f"chat stream: HTTP {reply.status}, {reply.counted} tokens")
        if measured:
            assert reply.first_event_at is not None
            assert reply.first_counted_at is not None
            first_event.append(reply.first_event_at - sent)
            first_token.append(reply.first_counted_at - sent)
        return reply.counted

    figures = await measure(base, pid, plan, one_run)
    return {
        **figures,
        **percentiles(first_event, "first_event_"),
        **percentiles(first_token, "first_token_"),
    }


async def _tokens(base: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    burst = await classic(base, pid, plan)
    interleaved = await classic(base, pid, plan, interleave=True)
    return {**burst, **{f"interleaved_{k}": v for k, v in interleaved.items()}}


def run(plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    with serving("memory", pin) as (base, watched, _):
        return asyncio.run(_tokens(base, watched.server, plan))
