"""Chat tokens: C clients, each streaming stateless chat runs one after the other with
``stream_mode: messages-tuple`` on a keep-alive connection of its own.

A token is one ``messages`` event the client received. Reported: tokens per second
delivered (all clients together, over the measured runs), the time from sending the request
to the first SSE event (p50/p90/p99), and the server's CPU per token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness import HOST, BenchError, Meter, Watched, percentiles, serving
from load import Connection

GRAPH = "chat"


def expected(tokens: int) -> int:
    """How many tokens the chat graph streams when asked for ``tokens`` (an odd count)."""
    return 2 * max(1, (tokens + 1) // 2) - 1


def body(tokens: int) -> dict[str, Any]:
    return {
        "assistant_id": GRAPH,
        "input": {"messages": [{"role": "user", "content": "hi"}], "tokens": tokens},
        "stream_mode": ["messages-tuple"],
    }


async def _tokens(base: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    port = int(base.rsplit(":", 1)[1])
    clients, runs, tokens = plan["token_clients"], plan["token_runs"], plan["tokens_per_run"]
    conns = [await Connection.open(HOST, port) for _ in range(clients)]
    first_event: list[float] = []
    received = 0

    async def client(conn: Connection, count: int, measured: bool) -> None:
        nonlocal received
        for _ in range(count):
            sent = time.perf_counter()
            reply = await conn.request(
                "POST", "/runs/stream", body(tokens), keep_body=False, count_name=b"messages"
            )
            if reply.status != 200 or reply.counted != expected(tokens):
                raise BenchError(f"chat stream: HTTP {reply.status}, {reply.counted} tokens")
            if measured:
                assert reply.first_event_at is not None
                first_event.append(reply.first_event_at - sent)
                received += reply.counted

    try:
        await asyncio.gather(*(client(c, 2, False) for c in conns))  # warm-up
        before = Meter(Watched(pid))
        per_client = max(1, runs // clients)
        await asyncio.gather(*(client(c, per_client, True) for c in conns))
        after = Meter(Watched(pid)).since(before, received)
    finally:
        for conn in conns:
            conn.close()
    return {
        "clients": clients,
        "tokens_per_run": tokens,
        "tokens": received,
        "tokens_per_s": received / after["wall_s"],
        "server_cpu_us_per_token": after["server_cpu_ms_per_run"] * 1000,
        "server_cpu_util": after["server_cpu_util"],
        "foreign_cpu_util": after["foreign_cpu_util"],
        **percentiles(first_event, "first_event_"),
    }


def run(plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    with serving("memory", pin) as (base, watched, _):
        return asyncio.run(_tokens(base, watched.server, plan))
