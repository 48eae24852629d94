"""Freed memory goes back to the system only while the server is quiet: the release (a full
garbage collection and ``malloc_trim``, a pause that grows with the heap) waits until no
connection, API request or run has started for a while, so that it never stalls a burst
that is just arriving (core/infra/heap.py, ``RunSupervisor.serve``).

These do not depend on the storage backend, so they always run on memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from tests.concurrency import until
from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.engine import supervisor
from triograph.core.infra import heap

QUIET = 0.3


@pytest.fixture
async def released(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Server, list[float]]]:
    """A server whose releases are recorded (their Trio times) instead of done, with short
    quiet and sweep intervals."""
    times: list[float] = []
    monkeypatch.setattr(supervisor, "QUIET", QUIET)
    monkeypatch.setattr(supervisor, "SWEEP_INTERVAL", 0.2)
    monkeypatch.setattr(heap, "release", lambda: times.append(trio.current_time()))
    async for server in start_server(nursery, example_settings(storage="memory")):
        yield server, times


async def _one_run(http: httpx.AsyncClient) -> None:
    response = await http.post("/runs/wait", json={"assistant_id": "agent", "input": {}})
    assert response.status_code == 200, response.text


async def test_memory_is_released_once_the_server_is_quiet(
    released: tuple[Server, list[float]],
) -> None:
    server, times = released
    async with httpx.AsyncClient(base_url=server.url) as http:
        await _one_run(http)
    await until(lambda: bool(times))  # nothing started since the run: one quiet period


async def test_api_requests_hold_the_release_back(released: tuple[Server, list[float]]) -> None:
    server, times = released
    async with httpx.AsyncClient(base_url=server.url) as http:
        await _one_run(http)
        busy_until = trio.current_time() + 6 * QUIET
        while trio.current_time() < busy_until:  # a request every third of the quiet time
            assert (await http.post("/threads/search", json={})).status_code == 200
            await trio.sleep(QUIET / 3)
        assert times == []
    await until(lambda: bool(times))


async def test_new_connections_hold_the_release_back(
    released: tuple[Server, list[float]],
) -> None:
    """A burst of clients connecting holds it back before any has sent its request (the
    10,000-stream benchmark: the first streams opened only after the release's pause)."""
    server, times = released
    async with httpx.AsyncClient(base_url=server.url) as http:
        await _one_run(http)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sockets: list[trio.SocketStream] = []
    try:
        busy_until = trio.current_time() + 6 * QUIET
        while trio.current_time() < busy_until:  # connections that never send a byte
            sockets.append(await trio.open_tcp_stream(host, int(port)))
            await trio.sleep(QUIET / 3)
        assert times == []
    finally:
        for stream in sockets:
            await stream.aclose()
    await until(lambda: bool(times))
