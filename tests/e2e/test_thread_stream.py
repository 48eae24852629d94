"""The thread stream, ``GET /threads/{id}/stream`` (contract §6.10, §13.5): through the official
SDK (``threads.join_stream``) and, where the wire itself is under test (query encodings,
``id:`` lines, status codes, disconnects), over a bare socket."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import trio

from tests.concurrency import new_thread, until
from tests.sdk import Server

TOPIC = {"topic": "dogs"}
FRAME = re.compile(rb"event: (.*?)\r\ndata: (.*?)\r\nid: (\d+)-(\d+)\r\n\r\n")


async def watchers(server: Server, tid: str, n: int) -> None:
    """Wait until the thread has ``n`` live subscribers."""
    await until(lambda: server.core.thread_streams.subscriber_count(tid) == n)


async def start_agent(server: Server, tid: str) -> str:
    run = await server.sync(
        lambda c: c.runs.create(tid, "agent", input=TOPIC, stream_mode=["updates"])
    )
    return run["run_id"]  # type: ignore[no-any-return]


def is_done(part: Any) -> bool:
    return part.event == "metadata" and part.data.get("status") == "run_done"


def sdk_reader(
    tid: str, parts: list[Any], *, runs: int, **kwargs: Any
) -> Callable[[Any], Awaitable[None]]:
    """An ``aio`` scenario: join the thread stream and keep its parts until ``runs`` ended."""

    async def read(c: Any) -> None:
        stream = await c.threads.join_stream(tid, **kwargs)
        async for part in stream:
            parts.append(part)
            if sum(map(is_done, parts)) == runs:
                break
        await stream.aclose()

    return read


def expected_run(run_id: str) -> list[tuple[str, Any]]:
    """A finished ``agent`` run with ``stream_mode=["updates"]`` on the thread stream."""
    return [
        ("metadata", {"run_id": run_id, "attempt": 1}),
        ("updates", {"refine_topic": {"topic": "dogs and cats"}}),
        ("updates", {"generate_joke": {"joke": "This is a joke about dogs and cats"}}),
        ("metadata", {"status": "run_done", "run_id": run_id}),
    ]


def key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


async def test_run_modes_sees_every_event_of_every_run_with_ids(server: Server) -> None:
    tid = await new_thread(server)
    parts: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aio, sdk_reader(tid, parts, runs=2))
        await watchers(server, tid, 1)
        first = await start_agent(server, tid)
        second = await start_agent(server, tid)
    assert [(p.event, p.data) for p in parts] == expected_run(first) + expected_run(second)
    keys = [key(p.id) for p in parts]
    assert keys == sorted(set(keys)), "ids must increase strictly"
    await watchers(server, tid, 0)  # the SDK left: its subscription is released


async def test_lifecycle_keeps_only_metadata_events(server: Server) -> None:
    tid = await new_thread(server)
    parts: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aio, sdk_reader(tid, parts, runs=2, stream_mode="lifecycle"))
        await watchers(server, tid, 1)
        first = await start_agent(server, tid)
        second = await start_agent(server, tid)
    assert [p.data for p in parts] == [
        {"run_id": first, "attempt": 1},
        {"status": "run_done", "run_id": first},
        {"run_id": second, "attempt": 1},
        {"status": "run_done", "run_id": second},
    ]
    assert {p.event for p in parts} == {"metadata"}


async def test_a_failed_run_streams_its_error_before_run_done(server: Server) -> None:
    tid = await new_thread(server)
    parts: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aio, sdk_reader(tid, parts, runs=1))
        await watchers(server, tid, 1)
        await server.sync(lambda c: c.runs.create(tid, "erroring", input={}))
    assert [p.event for p in parts][-2:] == ["error", "metadata"]
    assert parts[-2].data == {"error": "ValueError", "message": "boom from node"}


async def test_last_event_id_replays_exactly_the_missed_events(server: Server) -> None:
    tid = await new_thread(server)
    seen: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aio, sdk_reader(tid, seen, runs=1))
        await watchers(server, tid, 1)
        first = await start_agent(server, tid)
    await watchers(server, tid, 0)
    # disconnected: the second run happens unseen
    second = await start_agent(server, tid)
    await server.sync(lambda c: c.runs.join(tid, second))
    cut = 1  # resume after the first run's first ``updates``
    missed: list[Any] = []
    await server.aio(sdk_reader(tid, missed, runs=2, last_event_id=seen[cut].id))
    everything = expected_run(first) + expected_run(second)
    assert [(p.event, p.data) for p in missed] == everything[cut + 1 :]
    assert [p.id for p in missed[: len(seen) - cut - 1]] == [p.id for p in seen[cut + 1 :]]
    # "-" replays everything the thread kept
    replay: list[Any] = []
    await server.aio(sdk_reader(tid, replay, runs=2, last_event_id="-"))
    assert [(p.event, p.data) for p in replay] == everything


async def test_state_update_events(server: Server) -> None:
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "agent", input=TOPIC))
    parts: list[Any] = []

    async def read(c: Any) -> None:
        stream = await c.threads.join_stream(tid, stream_mode="state_update")
        async for part in stream:
            parts.append(part)
            break
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.aio, read)
        await watchers(server, tid, 1)
        await server.sync(lambda c: c.threads.update_state(tid, {"topic": "birds"}))
    (part,) = parts
    assert part.event == "state_update"
    assert part.data["thread_id"] == tid
    assert part.data["state"]["values"]["topic"] == "birds"


# -- the wire ---------------------------------------------------------------------------------


async def read_raw(
    server: Server, path: str, until: bytes, headers: dict[str, str] | None = None
) -> bytes:
    """GET ``path`` over a bare socket and read until ``until`` arrives, then hang up (a
    client that goes away; httpx cannot drop a stream without leaking generators)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    seen = b""
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
        with trio.fail_after(10):
            while until not in seen:
                chunk = await stream.receive_some()
                assert chunk, f"connection closed before {until!r}: {seen!r}"
                seen += chunk
    return seen


def frames(raw: bytes) -> list[tuple[str, Any, tuple[int, int]]]:
    return [
        (name.decode(), orjson.loads(data), (int(ms), int(seq)))
        for name, data, ms, seq in FRAME.findall(raw)
    ]


async def test_every_query_encoding_of_the_modes(server: Server) -> None:
    tid = await new_thread(server)
    json_list = urllib.parse.quote(orjson.dumps(["lifecycle"]).decode())
    # query -> whether it asks for lifecycle events only (else run_modes)
    queries = {
        "stream_mode=lifecycle&stream_mode=state_update": True,  # what the SDKs send
        f"stream_modes={json_list}": True,
        "stream_modes=lifecycle,state_update": True,
        "": False,
        "stream_modes=lifecycle&stream_mode=run_modes": False,  # both spellings count
    }
    raws: dict[str, bytes] = {}

    async def read(query: str) -> None:
        path = f"/threads/{tid}/stream?{query}"
        raws[query] = await read_raw(server, path, until=b'"status":"run_done"')

    async with trio.open_nursery() as nursery:
        for query in queries:
            nursery.start_soon(read, query)
        await watchers(server, tid, len(queries))
        run_id = await start_agent(server, tid)
    everything = expected_run(run_id)
    for query, lifecycle_only in queries.items():
        raw = raws[query]
        assert raw.startswith(b"HTTP/1.1 200"), query
        assert b"content-type: text/event-stream" in raw.lower(), query
        got = frames(raw)
        assert [k for _, _, k in got] == sorted({k for _, _, k in got}), query
        expected = [everything[0], everything[-1]] if lifecycle_only else everything
        assert [(e, d) for e, d, _ in got] == expected, query
    await watchers(server, tid, 0)  # every client hung up: nothing is left subscribed


async def test_heartbeats_keep_an_idle_stream_open(server: Server) -> None:
    tid = await new_thread(server)
    raw = await read_raw(server, f"/threads/{tid}/stream", until=b": heartbeat\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    await watchers(server, tid, 0)


async def test_bad_requests(server: Server) -> None:
    tid = await new_thread(server)
    async with server.http() as http:
        bad_mode = await http.get(f"/threads/{tid}/stream", params={"stream_modes": "values"})
        bad_sdk_mode = await http.get(
            f"/threads/{tid}/stream", params=[("stream_mode", "lifecycle"), ("stream_mode", "x")]
        )
        bad_id = await http.get(f"/threads/{tid}/stream", headers={"Last-Event-ID": "abc-1"})
        unknown = await http.get("/threads/00000000-0000-4000-8000-000000000000/stream")
        not_uuid = await http.get("/threads/nope/stream")
    assert bad_mode.status_code == 422
    assert bad_mode.json()["detail"].startswith("Invalid stream mode: values")
    assert bad_sdk_mode.status_code == 422
    assert bad_sdk_mode.json()["detail"].startswith("Invalid stream mode: x")
    assert bad_id.status_code == 422
    assert bad_id.json()["detail"].startswith("Invalid last-event-id")
    assert unknown.status_code == 404
    assert not_uuid.status_code == 422
    assert server.core.thread_streams.subscriber_count(tid) == 0


async def test_redis_style_ids_without_a_sequence_cover_the_whole_millisecond(
    server: Server,
) -> None:
    tid = await new_thread(server)
    raw = b""

    async def watch() -> None:
        nonlocal raw
        raw = await read_raw(server, f"/threads/{tid}/stream", until=b'"status":"run_done"')

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await watchers(server, tid, 1)
        await start_agent(server, tid)
    got = frames(raw)
    first_ms, last_ms = got[0][2][0], got[-1][2][0]
    path = f"/threads/{tid}/stream"
    everything = await read_raw(
        server, path, until=b'"status":"run_done"', headers={"Last-Event-ID": str(first_ms - 1)}
    )
    assert frames(everything) == got
    nothing = await read_raw(
        server, path, until=b": heartbeat", headers={"Last-Event-ID": f"{last_ms}-*"}
    )
    assert frames(nothing) == []


async def test_server_shutdown_ends_the_stream_cleanly(server: Server) -> None:
    tid = await new_thread(server)
    raw = b""

    async def watch() -> None:
        nonlocal raw
        raw = await read_raw(server, f"/threads/{tid}/stream", until=b"\r\n0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        await watchers(server, tid, 1)
        await server.shutdown()
    assert raw.startswith(b"HTTP/1.1 200")  # and it ended with the last chunk, not a cut
