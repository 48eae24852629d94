"""Background runs give way to a crowded intake (``core/infra/intake.py``): a run nobody
streams or waits for executes once requests have stopped crowding in for ``CALM`` seconds,
or after ``MAX_WAIT`` seconds; runs someone streams or waits for never wait, and neither do
background runs on a server that keeps up.

A crowd is made of requests held "being taken in": their head and part of their body sent
over raw sockets, the rest only at the end."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from tests.concurrency import FAST, new_thread, run_ends, run_status, slow_input, start_slow
from tests.sdk import Server
from triograph.core.infra import intake

BODY = json.dumps({"limit": 1}).encode()


@asynccontextmanager
async def held_requests(server: Server, count: int) -> AsyncIterator[None]:
    """``count`` ``POST /threads/search`` whose bodies are still arriving for the block;
    each is answered (200) once the rest is sent at the end."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        "POST /threads/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    async with AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(await trio.open_tcp_stream(host, int(port)))
            for _ in range(count)
        ]
        for stream in streams:
            await stream.send_all(head + BODY[:1])
        await trio.testing.wait_all_tasks_blocked()
        assert server.core.intake.busy == count
        yield
        for stream in streams:
            await stream.send_all(BODY[1:])
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += await stream.receive_some()
            assert answer.startswith(b"HTTP/1.1 200"), answer


async def test_a_background_run_waits_until_requests_stop_crowding_in(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "RECENT", 60.0)  # the held requests count as just arrived
    monkeypatch.setattr(intake, "CALM", 2.0)
    monkeypatch.setattr(intake, "MAX_WAIT", 60.0)
    tid = await new_thread(server)
    async with held_requests(server, intake.CROWD):
        background = await start_slow(server, tid, FAST)  # answered: stored, pending
        # a run its client waits for goes ahead of the background one
        waited = await server.sync(lambda c: c.runs.wait(None, "slow", input=slow_input(FAST)))
        assert waited["log"] == ["step1", "step2"]
        assert await run_status(server, tid, background) == "pending"
    assert await run_ends(server, tid, background) == "success"


async def test_a_background_run_waits_no_longer_than_max_wait(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "RECENT", 60.0)
    monkeypatch.setattr(intake, "CALM", 60.0)
    monkeypatch.setattr(intake, "MAX_WAIT", 0.1)
    tid = await new_thread(server)
    async with held_requests(server, intake.CROWD):
        background = await start_slow(server, tid, FAST)
        assert await run_ends(server, tid, background) == "success"


async def test_requests_taking_long_to_answer_are_no_crowd(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests that take long before they answer (here bodies that stop arriving; MCP or
    A2A calls waiting for their runs) count towards a crowd for ``RECENT`` seconds after
    their arrival only, however many short requests arrive meanwhile."""
    monkeypatch.setattr(intake, "RECENT", 0.1)
    monkeypatch.setattr(intake, "CALM", 1.0)  # more than between two polls of the run
    monkeypatch.setattr(intake, "MAX_WAIT", 60.0)
    tid = await new_thread(server)
    async with held_requests(server, intake.CROWD):
        background = await start_slow(server, tid, FAST)
        assert await run_ends(server, tid, background) == "success"


async def test_a_server_that_keeps_up_starts_background_runs_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One request short of a crowd: the background run does not wait (``MAX_WAIT`` would
    outlast the test's polling)."""
    monkeypatch.setattr(intake, "RECENT", 60.0)
    monkeypatch.setattr(intake, "CALM", 60.0)
    monkeypatch.setattr(intake, "MAX_WAIT", 3600.0)
    tid = await new_thread(server)
    async with held_requests(server, intake.CROWD - 1):
        background = await start_slow(server, tid, FAST)
        assert await run_ends(server, tid, background) == "success"


async def test_requests_read_together_crowd_in_even_if_each_is_answered_at_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background run's creation is answered within one step of its request's task, so
    requests of a burst never overlap there; counted from their connections' reads, those
    read in the same turn are a crowd all the same, and the runs they create wait."""
    monkeypatch.setattr(intake, "RECENT", 60.0)
    monkeypatch.setattr(intake, "CALM", 60.0)
    monkeypatch.setattr(intake, "MAX_WAIT", 5.0)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"assistant_id": "slow", "input": slow_input(FAST)}).encode()
    # blocking sockets: every request is in before the server's next turn
    socks = [socket.create_connection((host, int(port))) for _ in range(intake.CROWD + 1)]
    for sock in socks:  # stateless: a run whose creation waits for nothing
        sock.sendall(
            f"POST /runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    runs = []
    for sock in socks:
        async with trio.SocketStream(trio.socket.from_stdlib_socket(sock)) as stream:
            answer = b""
            while not answer.endswith(b"}"):  # a JSON object, the whole answer
                answer += await stream.receive_some()
        assert answer.startswith(b"HTTP/1.1 200"), answer
        run = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        runs.append((run["thread_id"], run["run_id"]))
    assert server.core.intake.crowded_at > -float("inf")
    for tid, rid in runs:
        assert await run_status(server, tid, rid) == "pending"
    for tid, rid in runs:  # after MAX_WAIT (a stateless run is deleted once it ended)
        assert await run_ends(server, tid, rid) is None
