"""Clients that never read (issue 15 item 3): their runs still end, what the server queued
for them is bounded and let go of when they leave, and the server serves on.

Raw sockets with a small receive buffer send ``POST /runs/stream`` for a graph that writes
megabytes of custom events, read the status line and nothing more, so the events pile up in
the server until the subscriber's byte bound drops it. The server's own figures
(``server_stats``: open SSE responses, live subscribers, runs in flight) say what it holds.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import orjson
import pytest
import trio

from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.engine.stats import server_stats
from triograph.core.infra.settings import GraphSpec

FLOOD = """
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict


class State(TypedDict, total=False):
    count: int
    size: int


def flood(state: State) -> State:
    write = get_stream_writer()
    for i in range(state["count"]):
        write({"i": i, "pad": "x" * state["size"]})
    return {}


graph = StateGraph(State).add_node(flood).add_edge(START, "flood").add_edge("flood", END).compile()
"""
READERS = 12
#: each run writes 12 MB of events: more than the kernel's socket buffers absorb (4 MiB)
COUNT, SIZE = 3000, 4000
BUFFER_BYTES = 256 * 1024


@pytest.fixture
async def flood_server(nursery: trio.Nursery, tmp_path: Any) -> AsyncIterator[Server]:
    path = tmp_path / "flood.py"
    path.write_text(FLOOD)
    settings = example_settings(subscriber_buffer_bytes=BUFFER_BYTES, shutdown_grace=0.5)
    spec = GraphSpec(graph_id="flood", path=f"{path}:graph")
    async for s in start_server(nursery, attrs.evolve(settings, graphs=(*settings.graphs, spec))):
        yield s


async def silent_stream(port: int) -> trio.SocketStream:
    """A stream request whose client reads the status line and then nothing more."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    body = orjson.dumps(
        {"assistant_id": "flood", "input": {"count": COUNT, "size": SIZE}, "stream_mode": "custom"}
    )
    head = "POST /runs/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    await stream.send_all(head.encode() + body)
    assert (await stream.receive_some(12)).startswith(b"HTTP/1.1 200")
    return stream


async def until(check: Callable[[], bool], seconds: float) -> None:
    """Wait until ``check()`` holds, at most ``seconds`` (two busy cores run 12 floods)."""
    with trio.fail_after(seconds):
        while True:
            if check():
                return
            await trio.sleep(0.05)


async def test_readers_that_never_read_are_let_go(flood_server: Server) -> None:
    core = flood_server.core
    port = int(flood_server.url.rsplit(":", 1)[1])
    streams = [await silent_stream(port) for _ in range(READERS)]
    # the runs end although nobody reads them: a subscriber over its bound is dropped
    stats = server_stats
    await until(lambda: not (stats(core).runs_pending + stats(core).runs_running), 120)
    # every stalled reader was dropped from its stream; its response is still trying to write
    # what it had queued (at most the bound, plus one write in flight)
    assert server_stats(core).subscribers == 0
    assert 0 < server_stats(core).open_streams <= READERS
    # a reader that reads after all gets what the server had queued and what the sockets
    # held, then the end of the body: not the 12 MB the run wrote
    received = bytearray()
    with trio.fail_after(60):
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = await streams[0].receive_some(1 << 16)
            assert chunk, "the server closed the connection"
            received += chunk
    assert len(received) < (COUNT * SIZE) // 2
    assert b'"i":0,' in received
    assert f'"i":{COUNT - 1},'.encode() not in received
    for stream in streams:
        await stream.aclose()
    # the clients left: their responses end and let go of what they held
    await until(lambda: not server_stats(core).open_streams, 60)
    assert server_stats(core).subscribers == 0
    assert not [h for h in core.supervisor.handles.values() if h.stream.subscriber_count]
    # and the server serves on
    async with httpx.AsyncClient(base_url=flood_server.url, timeout=30) as h:
        body = {"assistant_id": "flood", "input": {"count": 3, "size": 10}, "stream_mode": "custom"}
        r = await h.post("/runs/stream", json=body)
        assert r.status_code == 200
        assert r.text.count("event: custom") == 3
