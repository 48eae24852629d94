"""Every runs endpoint through the official SDK, sync and async clients (contract §5, §6.8,
§6.9). Raw httpx only where the SDK hides what is asserted (status codes, early
disconnects). Multitask strategies, cancellation and concurrency have their own files
(``test_multitask.py``, ``test_cancel.py``, ``test_hook_sequence.py``, ``test_stress.py``)."""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeVar

import httpx
import pytest
import trio
from langgraph_sdk.errors import NotFoundError

from tests.concurrency import FAST, run_status, slow_input, start_slow, thread_settles
from tests.sdk import Server, collect, get, poll
from triograph.core.infra.storage import backend_name

T = TypeVar("T")

TEST_INPUT = {"foo": None, "bar": "checked", "baz": None}
DONE = {"foo": "checked", "bar": "checked", "baz": "checked"}
SLOW = 1.0  # seconds per node of the ``slow`` graph when a run must stay in flight


def joke(topic: str) -> dict[str, str]:
    return {"topic": f"{topic} and cats", "joke": f"This is a joke about {topic} and cats"}


# -- helpers ----------------------------------------------------------------------------------


async def run_reaches(server: Server, tid: str, rid: str, *statuses: str) -> dict[str, Any]:
    path = f"/threads/{tid}/runs/{rid}"
    _, run = await poll(
        lambda: get(server, path), lambda v: v[0] == 200 and v[1]["status"] in statuses
    )
    return run  # type: ignore[no-any-return]


async def new_thread(server: Server, **kwargs: Any) -> str:
    thread = await server.sync(lambda c: c.threads.create(**kwargs))
    return thread["thread_id"]  # type: ignore[no-any-return]


async def stream_until_step1(server: Server, tid: str) -> str:
    """Start a ``slow`` run, read its stream until step1's values, then drop the stream
    (``on_disconnect`` defaults to ``continue``). Returns the run id."""

    async def scenario(c: Any) -> str:
        stream = c.runs.stream(tid, "slow", input={"delay": SLOW})
        run_id = ""
        async for part in stream:
            if part.event == "metadata":
                run_id = part.data["run_id"]
            if part.event == "values" and part.data.get("log") == ["step1"]:
                break
        await stream.aclose()
        return run_id

    return await server.aio(scenario)


async def wait_with_id(server: Server, tid: str | None, assistant: str, **kwargs: Any) -> Any:
    """``runs.wait`` with the sync client; returns ``(result, run_id)``."""
    created: list[Any] = []
    result = await server.sync(
        lambda c: c.runs.wait(tid, assistant, on_run_created=created.append, **kwargs)
    )
    return result, created[0]["run_id"]


async def post_and_drop(server: Server, path: str, body: dict[str, Any], marker: bytes) -> bytes:
    """POST ``body`` over a bare socket, read until ``marker`` arrives, then close the
    connection: a client that goes away mid-stream. Returns what was read (headers too).

    (httpx cannot stop reading a streamed body without leaving its async generators to
    the garbage collector, which the warning filters turn into errors.)"""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    seen = b""
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(head.encode() + payload)
        with trio.fail_after(10):
            while marker not in seen:
                chunk = await stream.receive_some()
                assert chunk, f"connection closed before {marker!r}: {seen!r}"
                seen += chunk
    return seen


def header(raw: bytes, name: str) -> str:
    """A header's value in a raw HTTP/1.1 response head."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header in {head!r}")


def event_key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


# -- create / stream / wait -------------------------------------------------------------------


async def test_create_background_then_join_get(server: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, ...]:
        thread = await c.threads.create()
        tid = thread["thread_id"]
        run = await c.runs.create(tid, "agent", input={"topic": "dogs"})
        joined = await c.runs.join(tid, run["run_id"])
        got = await c.runs.get(tid, run["run_id"])
        after = await c.threads.get(tid)
        return tid, run, joined, got, after

    tid, run, joined, got, thread = await server.aio(scenario)
    assert run["status"] == "pending"
    assert run["thread_id"] == tid
    assert run["multitask_strategy"] == "enqueue"
    assert run["kwargs"]["input"] == {"topic": "dogs"}
    assert run["kwargs"]["temporary"] is False
    assert joined == joke("dogs")
    assert got["run_id"] == run["run_id"]
    assert got["status"] == "success"
    assert thread["status"] == "idle"
    assert thread["values"] == joke("dogs")


async def test_stream_thread_bound_sync_client(server: Server) -> None:
    tid = await new_thread(server)
    parts = await server.sync(
        lambda c: list(
            c.runs.stream(tid, "test_agent", input=TEST_INPUT, stream_mode=["values", "updates"])
        )
    )
    assert parts[0].event == "metadata"
    assert parts[0].data["attempt"] == 1
    # ``bar`` changes nothing, so its step has no ``values`` event
    assert [p.event for p in parts[1:]] == [
        "values",
        "updates",
        "values",
        "updates",
        "updates",
        "values",
    ]
    assert [p.data for p in parts if p.event == "updates"] == [
        {"foo": {"foo": "checked"}},
        {"bar": None},
        {"baz": {"baz": "checked"}},
    ]
    assert [p.data for p in parts if p.event == "values"][-1] == DONE
    assert all(p.id is not None for p in parts)  # ids even when not resumable
    runs = await server.sync(lambda c: c.runs.list(tid))
    assert [r["run_id"] for r in runs] == [parts[0].data["run_id"]]
    assert runs[0]["status"] == "success"


async def test_stream_stateless_async_client(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(c.runs.stream(None, "agent", input={"topic": "owls"}))
    )
    assert [p.event for p in parts] == ["metadata", "values", "values", "values"]
    assert parts[-1].data == joke("owls")


async def first_read(server: Server, path: str, body: dict[str, Any]) -> bytes:
    """POST ``body`` over a bare socket and return the first bytes that arrive (at least
    the response's head), then close the connection (``on_disconnect`` is ``continue``)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    payload = json.dumps({**body, "on_disconnect": "continue"}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(head.encode() + payload)
        seen = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in seen:
                chunk = await stream.receive_some()
                assert chunk, f"connection closed before the head: {seen!r}"
                seen += chunk
    return seen


async def test_a_run_streams_its_metadata_with_the_response_head(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that may start at once streams its ``metadata`` event before its response
    starts: both go out in one write (they came two turns of the scheduler apart). On a
    backend shared by processes a run on a thread that outlives it asks the others first
    (the thread may be theirs): its head goes out alone, before that answer, which is held
    here until the head is read (else the event may follow the head into the same read)."""
    tid = await new_thread(server)
    shared = backend_name(server.core.settings.storage) not in ("memory", "file")
    link = server.core.cluster
    wait_turn = link.wait_turn
    answered: list[trio.Event] = []

    async def held_wait_turn(run: Any) -> None:
        answered.append(trio.Event())
        await answered[-1].wait()
        await wait_turn(run)

    monkeypatch.setattr(link, "wait_turn", held_wait_turn)
    body = {"assistant_id": "slow", "input": slow_input(FAST), "stream_mode": ["values"]}
    for path, at_once in (("/runs/stream", True), (f"/threads/{tid}/runs/stream", not shared)):
        first = await first_read(server, path, body)
        for answer in answered:
            answer.set()
        assert first.startswith(b"HTTP/1.1 200"), first
        assert (b"event: metadata" in first) is at_once, first
        await thread_settles(server, tid)


async def test_a_queued_run_streams_its_metadata_once_it_takes_the_thread(
    server: Server,
) -> None:
    """A run enqueued behind another of its thread gets its response head at once and its
    ``metadata`` event only once the thread is its own."""
    tid = await new_thread(server)
    ahead = await start_slow(server, tid, SLOW, "ahead")
    await run_reaches(server, tid, ahead, "running")
    body = {
        "assistant_id": "slow",
        "input": slow_input(FAST, "queued"),
        "stream_mode": ["values"],
        "multitask_strategy": "enqueue",
    }
    first = await first_read(server, f"/threads/{tid}/runs/stream", body)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert b"event: metadata" not in first, first
    assert await run_status(server, tid, ahead) == "running"
    await thread_settles(server, tid)
    runs = await server.sync(lambda c: c.runs.list(tid))
    assert [r["status"] for r in runs] == ["success", "success"]


async def test_wait_thread_bound_and_stateless(server: Server) -> None:
    tid = await new_thread(server)
    created: list[Any] = []
    stateful = await server.sync(
        lambda c: c.runs.wait(tid, "test_agent", input=TEST_INPUT, on_run_created=created.append)
    )
    assert stateful == DONE
    assert created[0]["thread_id"] == tid
    run = await server.sync(lambda c: c.runs.get(tid, created[0]["run_id"]))
    assert run["status"] == "success"

    created.clear()
    stateless = await server.aio(
        lambda c: c.runs.wait(None, "agent", input={"topic": "x"}, on_run_created=created.append)
    )
    assert stateless == joke("x")
    tmp = created[0]["thread_id"]
    assert tmp is not None
    assert tmp != tid
    # on_completion defaults to "delete": the temporary thread is gone
    assert (await get(server, f"/threads/{tmp}"))[0] == 404


async def test_stateless_create_deletes_thread_after_completion(server: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, Any]:
        run = await c.runs.create(None, "agent", input={"topic": "ants"})
        return run, await c.runs.join(run["thread_id"], run["run_id"])

    run, joined = await server.aio(scenario)
    assert run["kwargs"]["temporary"] is True
    assert joined == joke("ants")
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.threads.get(run["thread_id"]))
    assert (await get(server, f"/threads/{run['thread_id']}/runs/{run['run_id']}"))[0] == 404


async def test_on_completion_keep(server: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, ...]:
        run = await c.runs.create(None, "agent", input={"topic": "bees"}, on_completion="keep")
        joined = await c.runs.join(run["thread_id"], run["run_id"])
        thread = await c.threads.get(run["thread_id"])
        runs = await c.runs.list(run["thread_id"])
        return run, joined, thread, runs

    run, joined, thread, runs = await server.aio(scenario)
    assert run["kwargs"]["temporary"] is False
    assert joined == joke("bees")
    assert thread["status"] == "idle"
    assert thread["values"] == joke("bees")
    assert [r["run_id"] for r in runs] == [run["run_id"]]
    assert runs[0]["status"] == "success"


async def test_create_batch(server: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, ...]:
        runs = await c.runs.create_batch(
            [
                {"assistant_id": "test_agent", "input": TEST_INPUT},
                {"assistant_id": "agent", "input": {"topic": "cows"}, "on_completion": "keep"},
            ]
        )
        results = [await c.runs.join(r["thread_id"], r["run_id"]) for r in runs]
        return runs, results

    runs, results = await server.aio(scenario)
    assert len(runs) == 2
    assert runs[0]["thread_id"] != runs[1]["thread_id"]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert [r["kwargs"]["temporary"] for r in runs] == [True, False]
    assert results == [DONE, joke("cows")]
    kept = await server.sync(lambda c: c.threads.get(runs[1]["thread_id"]))
    assert kept["values"] == joke("cows")


# -- list / get / delete ----------------------------------------------------------------------


async def test_list_limit_offset_status_select(server: Server) -> None:
    tid = await new_thread(server)
    ids = []
    for topic in ("a", "b", "c"):
        _, run_id = await wait_with_id(server, tid, "agent", input={"topic": topic})
        ids.append(run_id)
    await server.sync(lambda c: c.runs.wait(tid, "erroring", input={}, raise_error=False))

    async def scenario(c: Any) -> tuple[Any, ...]:
        everything = await c.runs.list(tid)
        first = await c.runs.list(tid, limit=2)
        rest = await c.runs.list(tid, limit=2, offset=2)
        ok = await c.runs.list(tid, status="success")
        failed = await c.runs.list(tid, status="error")
        pending = await c.runs.list(tid, status="pending")
        selected = await c.runs.list(tid, select=["run_id", "status"])
        return everything, first, rest, ok, failed, pending, selected

    everything, first, rest, ok, failed, pending, selected = await server.aio(scenario)
    assert len(everything) == 4
    assert [r["run_id"] for r in everything[1:]] == ids[::-1]  # newest first
    assert [r["run_id"] for r in first + rest] == [r["run_id"] for r in everything]
    assert len(first) == 2
    assert [r["run_id"] for r in ok] == ids[::-1]
    assert [r["status"] for r in failed] == ["error"]
    assert failed[0]["run_id"] == everything[0]["run_id"]
    assert pending == []
    assert [set(r) for r in selected] == [{"run_id", "status"}] * 4
    assert selected[0] == {"run_id": everything[0]["run_id"], "status": "error"}


async def test_get_and_delete_run(server: Server) -> None:
    tid = await new_thread(server)
    created: list[Any] = []
    await server.sync(
        lambda c: c.runs.wait(tid, "agent", input={"topic": "z"}, on_run_created=created.append)
    )
    rid = created[0]["run_id"]
    run = await server.aio(lambda c: c.runs.get(tid, rid))
    assert run["run_id"] == rid
    assert run["thread_id"] == tid
    assert run["status"] == "success"
    async with server.http() as h:
        r = await h.delete(f"/threads/{tid}/runs/{rid}")
        assert r.status_code == 204
        assert r.content == b""
        again = await h.delete(f"/threads/{tid}/runs/{rid}")
        assert again.status_code == 404
        assert again.json() == {"detail": "Run not found"}
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.runs.get(tid, rid))
    with pytest.raises(NotFoundError):
        await server.aio(lambda c: c.runs.delete(tid, rid))
    assert await server.sync(lambda c: c.runs.list(tid)) == []


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_interrupt_running_run(server: Server) -> None:
    tid = await new_thread(server)
    rid = await stream_until_step1(server, tid)
    async with server.http() as h:
        r = await h.post(f"/threads/{tid}/runs/{rid}/cancel", params={"action": "interrupt"})
    assert r.status_code == 202
    assert r.content == b""
    run = await run_reaches(server, tid, rid, "interrupted", "success", "error")
    assert run["status"] == "interrupted"
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "interrupted"  # step2 was still to run
    assert thread["error"] == {
        "error": "UserInterrupt",
        "message": f"interrupt requested via POST /threads/{tid}/runs/{rid}/cancel",
    }
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert state["values"] == {"delay": SLOW, "log": ["step1"]}  # completed steps stay
    assert state["next"] == ["step2"]


async def test_cancel_wait_returns_last_values(server: Server) -> None:
    tid = await new_thread(server)
    rid = await stream_until_step1(server, tid)
    # the SDK types cancel() as returning None; with wait=True it returns the join body
    result = await server.sync(
        lambda c: c.runs.cancel(tid, rid, wait=True)  # type: ignore[func-returns-value]
    )
    assert result == {"delay": SLOW, "log": ["step1"]}
    run = await server.aio(lambda c: c.runs.get(tid, rid))
    assert run["status"] == "interrupted"


async def test_cancel_finished_run_is_404(server: Server) -> None:
    tid = await new_thread(server)
    created: list[Any] = []
    await server.sync(
        lambda c: c.runs.wait(tid, "agent", input={"topic": "q"}, on_run_created=created.append)
    )
    rid = created[0]["run_id"]
    with pytest.raises(NotFoundError) as info:
        await server.aio(lambda c: c.runs.cancel(tid, rid))
    assert info.value.message.startswith("No matching runs to cancel.")
    with pytest.raises(NotFoundError) as unknown:
        await server.sync(lambda c: c.runs.cancel(tid, str(uuid.uuid4())))
    assert unknown.value.message == "No runs found to cancel."
    run = await server.sync(lambda c: c.runs.get(tid, rid))
    assert run["status"] == "success"


# -- join and join stream ---------------------------------------------------------------------


async def test_join_stream_with_stream_mode_filter(server: Server) -> None:
    tid = await new_thread(server)
    run = await server.sync(
        lambda c: c.runs.create(
            tid,
            "agent",
            input={"topic": "f"},
            stream_mode=["values", "updates"],
            after_seconds=1,  # still pending when both joins subscribe
        )
    )
    rid = run["run_id"]
    results: dict[str, list[Any]] = {}

    async def join(name: str, modes: Any) -> None:
        results[name] = await server.aio(
            lambda c: collect(c.runs.join_stream(tid, rid, stream_mode=modes))
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join, "updates", "updates")
        nursery.start_soon(join, "meta+values", ["metadata", "values"])
    assert [(p.event, p.data) for p in results["updates"]] == [
        ("updates", {"refine_topic": {"topic": "f and cats"}}),
        ("updates", {"generate_joke": {"joke": "This is a joke about f and cats"}}),
    ]
    assert [p.event for p in results["meta+values"]] == ["metadata", "values", "values", "values"]
    assert results["meta+values"][0].data == {"run_id": rid, "attempt": 1}
    assert results["meta+values"][-1].data == joke("f")


async def test_join_stream_last_event_id_replays_exactly_the_rest(server: Server) -> None:
    tid = await new_thread(server)
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(
                tid,
                "test_agent",
                input=TEST_INPUT,
                stream_mode=["values", "updates", "tasks"],
                stream_resumable=True,
            )
        )
    )
    assert parts[0].event == "metadata"
    rid = parts[0].data["run_id"]
    keys = [event_key(p.id) for p in parts]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)  # strictly increasing
    for k in (0, 3, len(parts) - 2):
        replay = await server.aio(
            lambda c, k=k: collect(c.runs.join_stream(tid, rid, last_event_id=parts[k].id))
        )
        assert replay == parts[k + 1 :]
    rest = await server.sync(
        lambda c: list(c.runs.join_stream(tid, rid, last_event_id=parts[-1].id))
    )
    assert rest == []


async def test_join_stream_reconnect_mid_run(server: Server) -> None:
    tid = await new_thread(server)

    async def scenario(c: Any) -> tuple[list[Any], list[Any]]:
        stream = c.runs.stream(
            tid,
            "slow",
            input={"delay": 0.5},
            stream_mode=["values", "updates"],
            stream_resumable=True,
        )
        seen = []
        async for part in stream:
            seen.append(part)
            if part.event == "updates":
                break  # drop the connection in the middle of the run
        await stream.aclose()
        rid = seen[0].data["run_id"]
        rest = await collect(c.runs.join_stream(tid, rid, last_event_id=seen[-1].id))
        return seen, rest

    seen, rest = await server.aio(scenario)
    assert [p.event for p in seen] == ["metadata", "values", "updates"]
    assert seen[-1].data == {"step1": {"log": ["step1"]}}
    assert [(p.event, p.data) for p in rest] == [
        ("values", {"delay": 0.5, "log": ["step1"]}),
        ("updates", {"step2": {"log": ["step2"]}}),
        ("values", {"delay": 0.5, "log": ["step1", "step2"]}),
    ]
    keys = [event_key(p.id) for p in seen + rest]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


# -- RunCreate options ------------------------------------------------------------------------


async def test_if_not_exists(server: Server) -> None:
    tid = str(uuid.uuid4())
    # ``wait`` goes through the SDK's reconnecting request: a plain HTTPStatusError
    with pytest.raises(httpx.HTTPStatusError) as waited:
        await server.sync(lambda c: c.runs.wait(tid, "agent", input={"topic": "n"}))
    assert waited.value.response.status_code == 404
    assert waited.value.response.json() == {"detail": "Thread or assistant not found."}
    with pytest.raises(NotFoundError) as info:
        await server.aio(lambda c: c.runs.create(tid, "agent", input={"topic": "n"}))
    assert info.value.message == "Thread or assistant not found."
    assert (await get(server, f"/threads/{tid}"))[0] == 404

    result = await server.aio(
        lambda c: c.runs.wait(tid, "agent", input={"topic": "n"}, if_not_exists="create")
    )
    assert result == joke("n")
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["thread_id"] == tid
    assert thread["metadata"]["graph_id"] == "agent"
    assert thread["values"] == joke("n")


async def test_after_seconds(server: Server) -> None:
    tid = await new_thread(server)
    thread_before = await server.sync(lambda c: c.threads.get(tid))
    run = await server.sync(
        lambda c: c.runs.create(tid, "agent", input={"topic": "later"}, after_seconds=1)
    )
    assert run["status"] == "pending"
    assert run["kwargs"]["config"]["configurable"]["__after_seconds__"] == 1
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "busy"
    # created_at is the scheduled start (contract §5.1)
    assert run["created_at"] > thread_before["created_at"]
    assert await server.aio(lambda c: c.runs.join(tid, run["run_id"])) == joke("later")
    assert (await server.sync(lambda c: c.runs.get(tid, run["run_id"])))["status"] == "success"


async def test_metadata_merged_into_run_and_thread(server: Server) -> None:
    tid = await new_thread(server, metadata={"owner": "me"})
    run = await server.sync(
        lambda c: c.runs.create(
            tid,
            "agent",
            input={"topic": "m"},
            metadata={"m": 1, "thread_id": "stripped"},
            config={"metadata": {"cm": 2}},
        )
    )
    meta = run["metadata"]
    assert {k: meta.get(k) for k in ("owner", "m", "cm", "graph_id")} == {
        "owner": "me",
        "m": 1,
        "cm": 2,
        "graph_id": "agent",
    }
    assert meta["assistant_id"] == run["assistant_id"]
    assert str(uuid.UUID(run["assistant_id"])) == run["assistant_id"]
    assert "thread_id" not in meta
    await server.aio(lambda c: c.runs.join(tid, run["run_id"]))

    implicit = str(uuid.uuid4())
    await server.aio(
        lambda c: c.runs.wait(
            implicit,
            "agent",
            input={"topic": "m"},
            metadata={"m": 3, "run_id": "stripped"},
            config={"metadata": {"cm": 4}},
            if_not_exists="create",
        )
    )
    thread = await server.sync(lambda c: c.threads.get(implicit))
    assert {k: thread["metadata"].get(k) for k in ("m", "cm", "graph_id", "assistant_id")} == {
        "m": 3,
        "cm": 4,
        "graph_id": "agent",
        "assistant_id": run["assistant_id"],
    }
    assert "run_id" not in thread["metadata"]


async def test_config_and_context_reach_the_graph(server: Server) -> None:
    async def scenario(c: Any) -> tuple[Any, ...]:
        default = await c.runs.wait(None, "factory", input={})
        via_config = await c.runs.wait(
            None, "factory", input={}, config={"configurable": {"who": "alice"}}
        )
        via_context = await c.runs.wait(None, "factory", input={}, context={"who": "carol"})
        tid = (await c.threads.create())["thread_id"]
        stateful = await c.runs.wait(tid, "factory", input={}, context={"who": "dave"})
        return default, via_config, via_context, stateful

    results = await server.aio(scenario)
    assert [r["greeting"] for r in results] == [
        "hello world",
        "hello alice",
        "hello carol",
        "hello dave",
    ]


async def test_config_tags_reach_the_graph(server: Server) -> None:
    tid = await new_thread(server)
    parts = await server.sync(
        lambda c: list(
            c.runs.stream(
                tid, "agent", input={"topic": "t"}, stream_mode="events", config={"tags": ["t1"]}
            )
        )
    )
    events = [p.data for p in parts if p.event == "events"]
    assert events
    assert events[0]["event"] == "on_chain_start"
    assert all("t1" in e["tags"] for e in events)
    run = (await server.sync(lambda c: c.runs.list(tid)))[0]
    assert "t1" in run["kwargs"]["config"]["tags"]


async def test_checkpoint_id_forks_from_an_earlier_checkpoint(server: Server) -> None:
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "agent", input={"topic": "dogs"}))
    history = await server.sync(lambda c: c.threads.get_history(tid, limit=20))
    fork_point = next(s for s in history if s["next"] == ["generate_joke"])
    assert fork_point["values"] == {"topic": "dogs and cats"}
    cp = fork_point["checkpoint"]["checkpoint_id"]
    await server.sync(lambda c: c.runs.wait(tid, "agent", input={"topic": "birds"}))

    birds = (await server.sync(lambda c: c.threads.get_state(tid)))["checkpoint"]
    forked = await server.aio(lambda c: c.runs.wait(tid, "agent", input=None, checkpoint_id=cp))
    assert forked == joke("dogs")
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert state["values"] == joke("dogs")
    # the new head descends from the fork point, not from the "birds" run
    history = await server.sync(lambda c: c.threads.get_history(tid, limit=50))
    parents = {
        s["checkpoint"]["checkpoint_id"]: (s["parent_checkpoint"] or {}).get("checkpoint_id")
        for s in history
    }
    chain, at = [], state["checkpoint"]["checkpoint_id"]
    while at is not None:
        chain.append(at)
        at = parents.get(at)
    assert cp in chain
    assert birds["checkpoint_id"] not in chain

    again = await server.aio(
        lambda c: c.runs.wait(tid, "agent", input=None, checkpoint={"checkpoint_id": cp})
    )
    assert again == joke("dogs")


async def test_durability_exit_keeps_one_checkpoint(server: Server) -> None:
    tid = await new_thread(server)
    result = await server.sync(
        lambda c: c.runs.wait(tid, "agent", input={"topic": "d"}, durability="exit")
    )
    assert result == joke("d")
    history = await server.aio(lambda c: c.threads.get_history(tid, limit=20))
    assert len(history) == 1
    assert history[0]["values"] == joke("d")
    run = (await server.sync(lambda c: c.runs.list(tid)))[0]
    assert run["kwargs"]["durability"] == "exit"


async def test_interrupt_before_then_resume_with_null_input(server: Server) -> None:
    tid = await new_thread(server)
    first = await server.sync(
        lambda c: c.runs.wait(
            tid, "agent", input={"topic": "i"}, interrupt_before=["generate_joke"]
        )
    )
    assert first == {"topic": "i and cats"}
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "interrupted"
    state = await server.aio(lambda c: c.threads.get_state(tid))
    assert state["next"] == ["generate_joke"]
    resumed = await server.aio(lambda c: c.runs.wait(tid, "agent", input=None))
    assert resumed == joke("i")
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "idle"
    assert (await server.sync(lambda c: c.threads.get_state(tid)))["next"] == []


async def test_command_update_and_goto(server: Server) -> None:
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "agent", input={"topic": "x"}))
    result = await server.aio(
        lambda c: c.runs.wait(
            tid, "agent", command={"update": {"topic": "fish"}, "goto": "generate_joke"}
        )
    )
    assert result == {"topic": "fish", "joke": "This is a joke about fish"}


async def test_command_resume_after_dynamic_interrupt(server: Server) -> None:
    tid = await new_thread(server)
    created: list[Any] = []
    first = await server.sync(
        lambda c: c.runs.wait(
            tid, "interrupter", input={"question": "age?"}, on_run_created=created.append
        )
    )
    assert first["question"] == "age?"
    [item] = first["__interrupt__"]
    assert item["value"] == {"question": "age?"}
    assert len(item["id"]) == 32
    # join of the finished run: the thread's interrupts, without values (contract §5.6)
    joined = await server.aio(lambda c: c.runs.join(tid, created[0]["run_id"]))
    assert joined == {"__interrupt__": [{"id": item["id"], "value": {"question": "age?"}}]}
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "interrupted"
    resumed = await server.aio(lambda c: c.runs.wait(tid, "interrupter", command={"resume": "Bob"}))
    assert resumed == {"question": "age?", "answer": "Bob!"}
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "idle"


async def test_error_body_of_wait_and_join(server: Server) -> None:
    boom = {"__error__": {"error": "ValueError", "message": "boom from node"}}
    stateless = await server.aio(
        lambda c: c.runs.wait(None, "erroring", input={}, raise_error=False)
    )
    assert stateless == boom
    with pytest.raises(Exception, match="ValueError: boom from node"):
        await server.sync(lambda c: c.runs.wait(None, "erroring", input={}))

    tid = await new_thread(server)
    run = await server.sync(lambda c: c.runs.create(tid, "erroring", input={}))
    assert await server.aio(lambda c: c.runs.join(tid, run["run_id"])) == boom
    assert (await server.sync(lambda c: c.runs.get(tid, run["run_id"])))["status"] == "error"
    # joined again once finished: from the thread's error
    assert await server.aio(lambda c: c.runs.join(tid, run["run_id"])) == boom
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "error"
    assert thread["error"] == boom["__error__"]
    assert thread["values"] == {"x": 1}


# -- disconnects ------------------------------------------------------------------------------


async def test_on_disconnect_cancel_interrupts_the_run(server: Server) -> None:
    tid = await new_thread(server)
    body = {"assistant_id": "slow", "input": {"delay": SLOW}, "on_disconnect": "cancel"}
    raw = await post_and_drop(server, f"/threads/{tid}/runs/stream", body, b"event: metadata")
    assert raw.startswith(b"HTTP/1.1 200")
    rid = header(raw, "content-location").rsplit("/", 1)[-1]
    # the client stream is closed: the run must be cancelled
    run = await run_reaches(server, tid, rid, "interrupted", "success", "error")
    assert run["status"] == "interrupted"
    thread = await poll(
        lambda: server.sync(lambda c: c.threads.get(tid)), lambda t: t["status"] != "busy"
    )
    assert thread["error"] == {
        "error": "UserInterrupt",
        "message": "client disconnected from the run stream (on_disconnect=cancel)",
    }


async def test_on_disconnect_continue_is_the_default(server: Server) -> None:
    tid = await new_thread(server)
    body = {"assistant_id": "slow", "input": {"delay": 0.3}}
    raw = await post_and_drop(server, f"/threads/{tid}/runs/stream", body, b"event: metadata")
    rid = header(raw, "content-location").rsplit("/", 1)[-1]
    run = await run_reaches(server, tid, rid, "interrupted", "success", "error")
    assert run["status"] == "success"


async def test_a_join_mid_run_of_a_run_nobody_followed_gets_every_event_from_then_on(
    server: Server,
) -> None:
    """Nobody streamed the run so far: its chunks came from the graph loop in bulk; from
    the join on they are the joiner's, in order."""
    tid = await new_thread(server)
    run = await server.sync(
        lambda c: c.runs.create(tid, "slow", input={"delay": 0.3}, stream_mode=["updates"])
    )
    parts = await server.aio(lambda c: collect(c.runs.join_stream(tid, run["run_id"])))
    assert [(p.event, p.data) for p in parts if p.event != "metadata"] == [
        ("updates", {"step1": {"log": ["step1"]}}),
        ("updates", {"step2": {"log": ["step2"]}}),
    ]


async def test_a_joiner_of_a_run_nobody_followed_gets_its_events_as_they_come(
    server: Server,
) -> None:
    """The run's chunks were coming in bulk (nobody followed it): a join turns them live,
    so the joiner sees the first step's update while the second one still runs, not at
    the run's end."""
    tid = await new_thread(server)
    run = await server.sync(
        lambda c: c.runs.create(tid, "slow", input={"delay": 2.0}, stream_mode=["updates"])
    )

    async def first_update(c: Any) -> tuple[Any, str]:
        async for part in c.runs.join_stream(tid, run["run_id"]):
            if part.event == "updates":
                return part.data, (await c.runs.get(tid, run["run_id"]))["status"]
        raise AssertionError("the stream ended without an update")

    data, status = await server.aio(first_update)
    assert data == {"step1": {"log": ["step1"]}}
    assert status == "running"
    assert (await run_reaches(server, tid, run["run_id"], "success"))["status"] == "success"
