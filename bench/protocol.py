"""Chat tokens through the thread protocol beside the classic ``/runs/stream``.

    /tmp/v13/bin/python bench/protocol.py [--clients 8] [--runs 64] [--tokens 201] [--no-pin]

One server (``bench/langgraph.json``, memory storage, pinned as in ``harness``), two phases
of C clients each doing runs of the chat graph one after the other:

- classic: ``POST /runs/stream`` (stateless, ``messages-tuple``) on a keep-alive connection,
  a token being one ``messages`` event (``tokens.py``);
- protocol: per run a new thread id, its event stream opened
  (``POST /threads/{id}/stream/events``, channels ``messages`` and ``lifecycle``), then
  ``run.start`` on a keep-alive command connection; the run is read until the root
  ``lifecycle`` terminal event, then the stream is closed. A token is one
  ``content-block-delta`` event.

Reported for each: tokens per second and the server's CPU per token, and their ratio (the
goal: the protocol costs at most 1.5x the classic path per token). The JSON line at the end
holds every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

import orjson
from harness import CLIENT_CORE, HOST, BenchError, pinning, serving
from load import Connection
from tokens import body, classic, expected, measure

DELTA = b'"event":"content-block-delta"'


async def _protocol_run(port: int, commands: Connection, tokens: int) -> int:
    """One protocol run; the tokens it streamed."""
    tid = str(uuid.uuid4())
    reader, writer = await asyncio.open_connection(HOST, port)
    body = orjson.dumps({"channels": ["messages", "lifecycle"]})
    writer.write(
        (
            f"POST /threads/{tid}/stream/events HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
    )
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise BenchError(f"protocol stream: {head[:40]!r}")
        start = {
            "id": 1,
            "method": "run.start",
            "params": {
                "assistant_id": "chat",
                "input": {"messages": [{"role": "user", "content": "hi"}], "tokens": tokens},
            },
        }
        reply = await commands.request("POST", f"/threads/{tid}/commands", start)
        if reply.status != 200:
            raise BenchError(f"run.start: HTTP {reply.status}")
        counted, buffer = 0, b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise BenchError("the protocol stream ended before the run")
            buffer += chunk
            counted += chunk.count(DELTA)
            # a root terminal lifecycle event ends the run (chunked framing aside, the JSON
            # of one event is never split by a chunk header: each write is whole events)
            if b'"namespace":[],"timestamp"' in buffer and (
                b'"event":"completed"' in buffer or b'"event":"failed"' in buffer
            ):
                return counted
            buffer = buffer[-4096:]
    finally:
        writer.close()


async def _classic_thread(base: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    """``POST /threads/{id}/runs/stream`` on a new thread per run (``if_not_exists``): the
    classic path with what a protocol run also pays (a thread, its checkpoints)."""
    tokens = plan["tokens_per_run"]

    async def one_run(conn: Connection, measured: bool) -> int:
        path = f"/threads/{uuid.uuid4()}/runs/stream"
        run = {**body(tokens), "if_not_exists": "create"}
        reply = await conn.request("POST", path, run, keep_body=False, count_name=b"messages")
        if reply.status != 200 or reply.counted != expected(tokens):
            raise BenchError(f"thread stream: HTTP {reply.status}, {reply.counted} tokens")
        return reply.counted

    return await measure(base, pid, plan, one_run)


async def _protocol(base: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    port = int(base.rsplit(":", 1)[1])
    tokens = plan["tokens_per_run"]

    async def one_run(conn: Connection, measured: bool) -> int:
        got = await _protocol_run(port, conn, tokens)
        if got != expected(tokens):
            raise BenchError(f"protocol run: {got} tokens, expected {expected(tokens)}")
        return got

    return await measure(base, pid, plan, one_run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--runs", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=201)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    plan = {"token_clients": args.clients, "token_runs": args.runs, "tokens_per_run": args.tokens}
    pin = not args.no_pin and pinning()
    if pin:
        os.sched_setaffinity(0, {CLIENT_CORE})
    with serving("memory", pin) as (base, watched, _):
        stateless = asyncio.run(classic(base, watched.server, plan))
        thread = asyncio.run(_classic_thread(base, watched.server, plan))
        protocol = asyncio.run(_protocol(base, watched.server, plan))
    cost = protocol["server_cpu_us_per_token"]
    ratio = cost / stateless["server_cpu_us_per_token"]
    thread_ratio = cost / thread["server_cpu_us_per_token"]
    print(f"{'path':<16} {'tokens/s':>10} {'server CPU µs/token':>20} {'foreign CPU':>12}")
    rows = (("classic", stateless), ("classic thread", thread), ("protocol", protocol))
    for name, figures in rows:
        print(
            f"{name:<16} {figures['tokens_per_s']:>10.0f} "
            f"{figures['server_cpu_us_per_token']:>20.1f} {figures['foreign_cpu_util']:>11.0%}"
        )
    verdict = "PASS" if ratio <= 1.5 else "FAIL"
    print(f"protocol / classic /runs/stream CPU per token: {ratio:.2f} (goal <= 1.5: {verdict})")
    print(f"protocol / classic thread run CPU per token: {thread_ratio:.2f}")
    figures = {"classic": stateless, "classic_thread": thread, "protocol": protocol}
    print(json.dumps({**figures, "cpu_ratio": ratio, "cpu_ratio_thread": thread_ratio}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
