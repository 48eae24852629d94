"""The thread-centric protocol across servers sharing one Postgres database: a stream opened on
one server follows a run executing on another, over SSE and WebSocket (the thread's protocol
log is stored, ``core/engine/shared_event_log.py``), a reconnect with ``since`` on the other
server resumes where the client was (the sequence is the thread's, not a server's), and
``input.respond`` sent to the server that did not run the interrupted run resumes it.

Two in-process servers share a fresh database, as in ``test_cluster.py``. Runs only in the
Postgres pass (``TRIOGRAPH_TEST_STORAGE=postgres``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from tests import pg
from tests.conftest import TEST_STORAGE, example_settings
from tests.e2e.test_protocol import (
    command,
    content_text,
    read_events,
    root_terminal,
    text_of,
    watch,
)
from tests.nodes import two_servers
from tests.sdk import Server
from triograph.core.engine.event_log import CHANNELS

pytestmark = pytest.mark.skipif(
    TEST_STORAGE != "postgres" or pg.ADMIN_DSN is None,
    reason="servers sharing a database: the Postgres pass (TRIOGRAPH_TEST_STORAGE=postgres)",
)

#: every channel: a reader gets every number of the thread
EVERY = {"channels": list(CHANNELS)}


@pytest.fixture
async def pair(nursery: trio.Nursery) -> AsyncIterator[tuple[Server, Server]]:
    url = await trio.to_thread.run_sync(pg.fresh_database)
    try:
        settings = example_settings(storage=url, lease=0.6, shutdown_grace=0.5)
        async with two_servers(nursery, settings) as servers:
            yield servers
    finally:
        await trio.to_thread.run_sync(pg.drop_database, url)


def start(assistant_id: str, value: dict[str, Any]) -> dict[str, Any]:
    params = {"assistant_id": assistant_id, "input": value}
    return {"id": 1, "method": "run.start", "params": params}


@pytest.mark.parametrize("transport", ["sse", "websocket"])
async def test_a_stream_on_one_server_follows_a_run_on_another(
    pair: tuple[Server, Server], transport: str
) -> None:
    """The SDK's ``client.threads.stream`` on ``a`` gets the tokens, the values and the end of
    a run that ``b`` executes; a raw stream on ``a`` numbers the events as one opened on ``b``
    afterwards, and ``since`` on ``b`` skips what the client had from ``a``."""
    import asyncio  # noqa: TID251 (the SDK scenario runs on its own asyncio loop)

    a, b = pair
    tid = str(uuid.uuid4())
    await a.sync(lambda c: c.threads.create(thread_id=tid))
    raw: list[list[dict[str, Any]]] = []
    run_ids: list[str] = []

    async def scenario(c: Any) -> dict[str, Any]:
        async with c.threads.stream(tid, assistant_id="chat", transport=transport) as thread:
            message, pump = watch(thread.messages)
            # one projection after the other: the SDK opens a wider stream for the second
            # and closes the first, and a first closed before its response came never gets
            # ready (its projection waits forever); two requests may be answered either way
            await asyncio.sleep(0.5)
            snapshots: list[Any] = []

            async def collect() -> None:
                async for snapshot in thread.values:
                    snapshots.append(snapshot)

            values = asyncio.create_task(collect())
            await asyncio.sleep(0.5)  # the projections' streams are open on a
            async with httpx.AsyncClient(base_url=b.url) as http:  # the run starts on b
                body = start("chat", {"messages": [{"role": "user", "content": "hi"}]})
                answer = (await http.post(f"/threads/{tid}/commands", json=body)).json()
            run_ids.append(answer["result"]["run_id"])
            async with asyncio.timeout(20):
                tokens = [delta async for delta in (await message).text]
                output = await thread.output
            pump.cancel()
            values.cancel()
            return {"tokens": tokens, "snapshots": snapshots, "output": output}

    async def follow_on_a() -> None:
        raw.append(await read_events(a, tid, EVERY, until=root_terminal))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow_on_a)
        got = await a.aio(scenario)
    [rid] = run_ids
    assert b.core.supervisor.get(rid) is not None  # b executed it
    assert a.core.supervisor.get(rid) is None
    assert "".join(got["tokens"]) == "hello there friend"
    assert len(got["tokens"]) > 1
    # the state as it went: the projection starts from the thread's (empty) values
    firsts = [s["messages"][0]["content"] for s in got["snapshots"] if s.get("messages")]
    assert firsts
    assert set(firsts) == {"hi"}
    assert content_text(got["output"]["messages"][-1]) == "hello there friend"

    [seen] = raw
    assert text_of(seen) == "hello there friend"
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none missing, in order
    lifecycle = [e["params"]["data"]["event"] for e in seen if e["method"] == "lifecycle"]
    assert lifecycle[0] == "started"
    assert lifecycle[-1] == "completed"
    # b, where the run executed, replays it with the same numbers and ids
    again = await read_events(b, tid, EVERY, until=root_terminal)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in seen]
    # a client that had half of it from a resumes on b
    half = seqs[len(seqs) // 2]
    rest = await read_events(b, tid, {**EVERY, "since": half}, until=root_terminal)
    assert [e["seq"] for e in rest] == [s for s in seqs if s > half]
    assert [e["params"] for e in rest] == [e["params"] for e in seen if e["seq"] > half]


async def test_input_respond_on_the_server_that_did_not_run_the_interrupt(
    pair: tuple[Server, Server],
) -> None:
    """The client sees ``input.requested`` on ``a`` and answers it there at once, while ``b``
    is still recording the interrupted run (slowed down here): ``a`` waits for it and resumes
    the thread with the answer."""
    a, b = pair
    tid = str(uuid.uuid4())
    after_run = b.core.threads.after_run

    async def slow_after_run(*args: Any, **kwargs: Any) -> Any:
        await trio.sleep(1.5)  # the run's end is recorded well after its events went out
        return await after_run(*args, **kwargs)

    b.core.threads.after_run = slow_after_run  # type: ignore[method-assign]

    def asked(events: list[dict[str, Any]]) -> bool:
        return any(e["method"] == "input.requested" for e in events)

    async with trio.open_nursery() as nursery:
        events: list[list[dict[str, Any]]] = []

        async def follow_on_a() -> None:
            body = {"channels": ["lifecycle", "input"]}
            events.append(await read_events(a, tid, body, until=asked))

        nursery.start_soon(follow_on_a)
        await trio.sleep(0.5)
        status, answer = await command(
            b, tid, start("tooluser", {"messages": [{"role": "user", "content": "add"}]})
        )
        assert status == 200, answer
        rid = answer["result"]["run_id"]
    assert b.core.supervisor.get(rid) is not None
    [requested] = [e for e in events[0] if e["method"] == "input.requested"]
    interrupt_id = requested["params"]["data"]["interrupt_id"]
    assert (await a.sync(lambda c: c.threads.get(tid)))["status"] == "busy"  # still ending
    status, answer = await command(
        a,
        tid,
        {
            "id": 2,
            "method": "input.respond",
            "params": {"interrupt_id": interrupt_id, "response": "yes"},
        },
    )
    assert (status, answer["type"]) == (200, "success"), answer
    b.core.threads.after_run = after_run  # type: ignore[method-assign]
    runs = await a.sync(lambda c: c.runs.list(tid))
    resumed = [r for r in runs if r["run_id"] != rid]
    assert len(resumed) == 1
    final = await a.sync(lambda c: c.runs.join(tid, resumed[0]["run_id"]))
    assert final["verdict"] == "yes"
    assert content_text(final["messages"][-1]) == "the sum is 3, yes"
