"""The thread-centric streaming protocol: ``client.threads.stream`` of the Python SDK over SSE
(run start, values, message tokens, tool calls, subgraph namespaces, an interrupt answered with
``input.respond``, two streams on one thread, a reconnect with ``since``), and the wire itself
with raw httpx (errors naming the field, the SSE framing, the envelope)."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import Any

import h11
import orjson
import pytest
import trio

from tests.auth import auth_server, auth_settings, bearer
from tests.conftest import start_server
from tests.sdk import Server

TOPIC = {"topic": "dogs"}
SSE_LINE = b"\r\n\r\n"


async def read_events(
    server: Server,
    tid: str,
    body: dict[str, Any],
    *,
    until: Any,
    limit: float = 20,
    headers: dict[str, str] | None = None,
    status: int = 200,
) -> list[dict[str, Any]]:
    """Protocol events of ``POST /threads/{tid}/stream/events`` until ``until(events)``, then
    hang up (over a bare socket with h11: httpx cannot drop a stream without leaking
    generators)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = h11.Connection(h11.CLIENT)
    payload = orjson.dumps(body)
    request = h11.Request(
        method="POST",
        target=f"/threads/{tid}/stream/events",
        headers=[
            ("host", host),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            *(headers or {}).items(),
        ],
    )
    events: list[dict[str, Any]] = []
    buffer = b""
    with trio.fail_after(limit):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=payload)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                elif isinstance(event, h11.Response):
                    assert event.status_code == status, event
                    if status != 200:
                        return events
                    assert dict(event.headers)[b"content-type"].startswith(b"text/event-stream")
                elif isinstance(event, h11.Data):
                    buffer += event.data
                    while SSE_LINE in buffer:
                        frame, buffer = buffer.split(SSE_LINE, 1)
                        events.extend(parse_frame(frame))
                    if until is not None and until(events):
                        return events
                elif isinstance(event, h11.EndOfMessage) and until is None:
                    return events  # the server ended the stream, as expected
                else:
                    raise AssertionError(f"the stream ended: {event!r} after {events!r}")


def parse_frame(frame: bytes) -> list[dict[str, Any]]:
    """The event of one SSE frame (none for a heartbeat comment); checks the framing."""
    lines = dict(line.split(b": ", 1) for line in frame.split(b"\r\n") if b": " in line)
    if b"data" not in lines:
        return []
    event = orjson.loads(lines[b"data"])
    assert lines[b"event"] == event["method"].encode()
    assert lines[b"id"] == str(event["seq"]).encode()
    return [event]


async def command(
    server: Server, tid: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with server.http() as http:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        response = await http.post(
            f"/threads/{tid}/commands",
            content=raw,
            headers={"content-type": "application/json", **(headers or {})},
        )
        return response.status_code, response.json()


def root_terminal(events: list[dict[str, Any]]) -> bool:
    return any(
        e["method"] == "lifecycle"
        and not e["params"]["namespace"]
        and e["params"]["data"]["event"] in ("completed", "failed", "interrupted")
        for e in events
    )


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["params"]["data"]["delta"].get("text", "")
        for e in events
        if e["method"] == "messages" and e["params"]["data"]["event"] == "content-block-delta"
    )


def content_text(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


# -- through the SDK ------------------------------------------------------------------------------


def watch(projection: Any) -> tuple[Any, Any]:
    """A future of the first item of an SDK projection, and the asyncio task that keeps
    pulling the projection (its items are fed only while it is iterated); cancel it when
    done. Started before the run: the SDK ends a projection once the thread is interrupted."""
    import asyncio  # noqa: TID251 (the SDK scenario runs on its own asyncio loop)

    first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def pump() -> None:
        async for item in projection:
            if not first.done():
                first.set_result(item)
        if not first.done():
            first.set_exception(AssertionError("the projection ended without an item"))

    return first, asyncio.create_task(pump())


async def first_of(projection: Any) -> tuple[Any, Any]:
    """:func:`watch` for a projection opened after the run started."""
    import asyncio  # noqa: TID251 (the SDK scenario runs on its own asyncio loop)

    first, task = watch(projection)
    async with asyncio.timeout(20):
        return await first, task


TRANSPORTS = pytest.mark.parametrize("transport", ["sse", "websocket"])


@TRANSPORTS
async def test_sdk_streams_a_chat_run_values_and_tokens(server: Server, transport: str) -> None:
    """``thread.run.start`` creates the thread from the client's id; ``thread.messages``
    streams the model's tokens, ``thread.values`` the state, ``thread.output`` the end."""

    async def scenario(c: Any) -> dict[str, Any]:
        async with c.threads.stream(assistant_id="chat", transport=transport) as thread:
            await thread.run.start(input={"messages": [{"role": "user", "content": "hi"}]})
            message, pump = await first_of(thread.messages)
            tokens = [delta async for delta in message.text]
            snapshot, values = await first_of(thread.values)
            output = await thread.output
            pump.cancel()
            values.cancel()
            return {
                "thread_id": thread.thread_id,
                "tokens": tokens,
                "snapshot": snapshot,
                "output": output,
            }

    got = await server.aio(scenario)
    assert "".join(got["tokens"]) == "hello there friend"
    assert len(got["tokens"]) > 1  # streamed, not one piece
    assert got["snapshot"]["messages"][0]["content"] == "hi"
    # under the v3 stream the model's message keeps its content blocks (LangGraph's doing)
    assert content_text(got["output"]["messages"][-1]) == "hello there friend"
    # an ordinary run of an ordinary thread, seen through the classic API
    runs = await server.sync(lambda c: c.runs.list(got["thread_id"]))
    assert [r["status"] for r in runs] == ["success"]
    assert runs[0]["multitask_strategy"] == "enqueue"


@TRANSPORTS
async def test_sdk_tool_calls_and_an_interrupt_answered(server: Server, transport: str) -> None:
    """Tool calls stream on ``thread.tool_calls`` (``tools`` channel); the interrupt that
    follows shows on ``thread.interrupts`` and is answered with ``run.respond``."""
    import asyncio  # noqa: TID251 (the SDK scenario runs on its own asyncio loop)

    async def scenario(c: Any) -> dict[str, Any]:
        tid = str(uuid.uuid4())
        async with c.threads.stream(tid, assistant_id="tooluser", transport=transport) as thread:
            first, pump = watch(thread.tool_calls)
            await asyncio.sleep(0.2)  # the projection's stream is open
            # the SDK ends its projections once the thread is interrupted: the graph waits
            # a moment before it stops, so the tool call reaches the projection first
            messages = [{"role": "user", "content": "add"}]
            await thread.run.start(input={"messages": messages, "pause": 0.5})
            async with asyncio.timeout(20):
                call = await first
                result = (call.name, call.input, await call.output)
            pump.cancel()
            async with asyncio.timeout(20):
                # the SDK sets it from its lifecycle watcher; it offers no event to wait on
                while not thread.interrupted:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            interrupts = list(thread.interrupts)
            await thread.run.respond("yes")
            output = await thread.output
            return {"call": result, "interrupts": interrupts, "output": output}

    got = await server.aio(scenario)
    name, args, out = got["call"]
    assert (name, args) == ("add", {"a": 1, "b": 2})
    assert "3" in str(out)
    assert got["interrupts"][0]["value"] == {"question": "send the answer?", "sum": "3"}
    assert got["output"]["verdict"] == "yes"
    assert content_text(got["output"]["messages"][-1]) == "the sum is 3, yes"


@TRANSPORTS
async def test_sdk_subgraph_namespaces(server: Server, transport: str) -> None:
    """Subgraph events carry the subgraph's namespace (``node_2:<task id>``)."""
    tid = str(uuid.uuid4())

    async def scenario(c: Any) -> list[Any]:
        async with c.threads.stream(tid, assistant_id="subgraph", transport=transport) as thread:
            await thread.run.start(input={"foo": "x"})
            return [await thread.output]

    [output] = await server.aio(scenario)
    assert output == {"foo": "hi! xbar"}
    events = await read_events(
        server, tid, {"channels": ["values", "lifecycle"]}, until=root_terminal
    )
    spaces = {tuple(e["params"]["namespace"]) for e in events}
    sub = [ns for ns in spaces if ns and ns[0].startswith("node_2:")]
    assert sub, spaces
    started = [
        e
        for e in events
        if e["method"] == "lifecycle" and e["params"]["data"]["event"] == "started"
    ]
    assert [tuple(e["params"]["namespace"]) for e in started] == [(), sub[0]]
    # a namespace filter with the task id left out keeps the subgraph's events only
    only = await read_events(
        server,
        tid,
        {"channels": ["values"], "namespaces": [["node_2"]]},
        until=lambda ev: len(ev) >= 2,
    )
    assert all(e["params"]["namespace"][0].startswith("node_2:") for e in only)
    assert only[-1]["params"]["data"] == {"foo": "hi! xbar", "bar": "bar"}


async def test_tasks_channel_says_each_task_start_and_result(server: Server) -> None:
    """``tasks``: a start (``id``, ``name``, ``input``, ``triggers``) and a result (same
    ``id``, ``result``) per task, in its namespace, subgraph tasks too; LangGraph folds them
    into its lifecycle events, the server hands them on."""
    tid = str(uuid.uuid4())
    start = {
        "id": 1,
        "method": "run.start",
        "params": {"assistant_id": "subgraph", "input": {"foo": "x"}},
    }
    assert (await command(server, tid, start))[1]["type"] == "success"
    events = await read_events(
        server, tid, {"channels": ["tasks", "lifecycle"]}, until=root_terminal
    )
    tasks = [e for e in events if e["method"] == "tasks"]
    started = {e["params"]["data"]["id"]: e for e in tasks if "result" not in e["params"]["data"]}
    results = {e["params"]["data"]["id"]: e for e in tasks if "result" in e["params"]["data"]}
    assert started
    assert set(started) == set(results)
    for task_id, begun in started.items():
        data = begun["params"]["data"]
        assert {"name", "input", "triggers"} <= set(data)
        assert results[task_id]["params"]["namespace"] == begun["params"]["namespace"]
        assert tasks.index(begun) < tasks.index(results[task_id])
    root = [e["params"]["data"]["name"] for e in started.values() if not e["params"]["namespace"]]
    assert root == ["node_1", "node_2"]
    sub = [e for e in started.values() if e["params"]["namespace"]]
    assert sub
    assert all(e["params"]["namespace"][0].startswith("node_2:") for e in sub)
    node_1 = next(e for e in results.values() if e["params"]["data"]["name"] == "node_1")
    assert node_1["params"]["data"]["result"] == {"foo": "hi! x"}
    # they come where they happened: the root lifecycle ends after the last one
    assert events.index(tasks[-1]) < len(events) - 1


async def test_two_streams_on_one_thread_and_reconnect_since(server: Server) -> None:
    """Every open stream of the thread gets every event it subscribed to; a new connection
    replays the history, and ``since`` skips what the client has (seq is the thread's)."""
    tid = str(uuid.uuid4())
    every = {"channels": ["values", "updates", "messages", "lifecycle", "checkpoints", "tools"]}
    first: list[list[dict[str, Any]]] = []

    async def watch() -> None:
        first.append(await read_events(server, tid, every, until=root_terminal))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        nursery.start_soon(watch)
        await trio.sleep(0.3)  # both streams open before the run
        status, answer = await command(
            server,
            tid,
            {
                "id": 1,
                "method": "run.start",
                "params": {
                    "assistant_id": "chat",
                    "input": {"messages": [{"role": "user", "content": "x"}]},
                },
            },
        )
        assert status == 200
        assert answer["type"] == "success"
        assert set(answer["result"]) == {"run_id"}
    a, b = first
    assert [e["seq"] for e in a] == [e["seq"] for e in b]
    assert [e["event_id"] for e in a] == [e["event_id"] for e in b]
    seqs = [e["seq"] for e in a]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert text_of(a) == "hello there friend"
    checkpoints = [e["params"]["data"] for e in a if e["method"] == "checkpoints"]
    assert checkpoints
    assert set(checkpoints[-1]) == {"id", "parent_id", "step", "source"}
    # a new connection replays it all; since skips the first half
    again = await read_events(server, tid, every, until=root_terminal)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in a]
    half = seqs[len(seqs) // 2]
    rest = await read_events(server, tid, {**every, "since": half}, until=root_terminal)
    assert [e["seq"] for e in rest] == [s for s in seqs if s > half]


async def test_a_stream_follows_later_runs(server: Server) -> None:
    """The stream outlives a run: it follows the thread's next one, with heartbeats between."""
    tid = str(uuid.uuid4())
    start = {
        "id": 1,
        "method": "run.start",
        "params": {"assistant_id": "agent", "input": {"topic": "dogs"}},
    }

    def two_runs(events: list[dict[str, Any]]) -> bool:
        return sum(root_terminal([e]) for e in events) == 2

    async def second() -> None:
        await trio.sleep(1.5)
        assert (await command(server, tid, start))[0] == 200

    async with trio.open_nursery() as nursery:
        assert (await command(server, tid, start))[0] == 200
        nursery.start_soon(second)
        events = await read_events(
            server, tid, {"channels": ["lifecycle", "values"]}, until=two_runs
        )
    lifecycle = [e["params"]["data"]["event"] for e in events if e["method"] == "lifecycle"]
    assert lifecycle == ["started", "completed", "started", "completed"]


# -- the wire ---------------------------------------------------------------------------------


async def test_commands_refuse_bad_input_naming_the_field(server: Server) -> None:
    tid = str(uuid.uuid4())
    status, body = await command(server, tid, b"{not json")
    assert status == 400
    assert body == {"detail": "Invalid JSON body"}
    status, body = await command(server, tid, {"id": "one", "method": "run.start"})
    assert status == 400
    assert body["type"] == "error"
    assert body["id"] is None
    assert body["error"] == "invalid_argument"
    assert "id" in body["message"]
    status, body = await command(server, tid, {"id": 3, "method": "run.fly", "params": {}})
    assert (status, body["id"], body["error"]) == (200, 3, "unknown_command")
    assert "run.start" in body["message"]
    status, body = await command(server, tid, {"id": 4, "method": "run.start", "params": {}})
    assert (body["error"], body["id"]) == ("invalid_argument", 4)
    assert "assistant_id" in body["message"]
    status, body = await command(
        server, tid, {"id": 5, "method": "run.start", "params": {"assistant_id": "nope"}}
    )
    assert body["error"] == "invalid_argument"
    assert "nope" in body["message"]
    status, body = await command(
        server,
        tid,
        {"id": 6, "method": "input.respond", "params": {"interrupt_id": 7, "response": 1}},
    )
    assert body["error"] == "invalid_argument"
    assert "interrupt_id" in body["message"]
    status, body = await command(
        server,
        tid,
        {"id": 7, "method": "input.respond", "params": {"interrupt_id": "x", "response": 1}},
    )
    assert body["error"] == "no_such_run"  # the thread does not exist
    status, body = await command(
        server, "not-a-uuid", {"id": 8, "method": "run.start", "params": {"assistant_id": "chat"}}
    )
    assert body["error"] == "invalid_argument"
    assert "thread" in body["message"].lower()
    # nothing was created
    async with server.http() as http:
        assert (await http.get(f"/threads/{tid}")).status_code == 404


async def test_stream_refuses_bad_filters(server: Server) -> None:
    tid = str(uuid.uuid4())
    async with server.http() as http:
        for body, field in [
            ({"channels": []}, "channels"),
            ({"channels": ["debug"]}, "debug"),
            ({"channels": ["values"], "since": True}, "since"),
            ({"channels": ["values"], "depth": -1}, "depth"),
            ({"channels": ["values"], "namespaces": "a"}, "namespaces"),
        ]:
            response = await http.post(f"/threads/{tid}/stream/events", json=body)
            assert response.status_code == 400, body
            assert field in response.json()["detail"]
        response = await http.post(f"/threads/{tid}/stream/events", content=b"[")
        assert response.status_code == 400


async def test_input_respond_checks_the_interrupt(server: Server) -> None:
    tid = str(uuid.uuid4())
    start = {
        "id": 1,
        "method": "run.start",
        "params": {"assistant_id": "interrupter", "input": {"question": "name?"}},
    }
    assert (await command(server, tid, start))[1]["type"] == "success"
    events = await read_events(
        server, tid, {"channels": ["input", "lifecycle"]}, until=root_terminal
    )
    [asked] = [e for e in events if e["method"] == "input.requested"]
    assert asked["params"]["data"]["payload"] == {"question": "name?"}
    assert [e["params"]["data"]["event"] for e in events if e["method"] == "lifecycle"] == [
        "started",
        "interrupted",
    ]
    wrong = {"id": 2, "method": "input.respond", "params": {"interrupt_id": "x", "response": "a"}}
    assert (await command(server, tid, wrong))[1]["error"] == "no_such_interrupt"
    right = {
        "id": 3,
        "method": "input.respond",
        "params": {"interrupt_id": asked["params"]["data"]["interrupt_id"], "response": "Ann"},
    }
    assert (await command(server, tid, right))[1] == {
        "type": "success",
        "id": 3,
        "result": {},
        "meta": {"applied_through_seq": 0},
    }
    values = await read_events(
        server,
        tid,
        {"channels": ["values", "lifecycle"], "since": events[-1]["seq"]},
        until=root_terminal,
    )
    assert values[-2]["params"]["data"] == {"question": "name?", "answer": "Ann!"}
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert state["values"]["answer"] == "Ann!"


@pytest.mark.parametrize("strategy", ["reject"])
async def test_multitask_strategy_applies(server: Server, strategy: str) -> None:
    """A run started through the protocol is an ordinary run: the multitask strategy applies,
    and it can be cancelled through the classic API."""
    tid = str(uuid.uuid4())
    slow = {"assistant_id": "slow", "input": {"delay": 30}}
    first = await command(server, tid, {"id": 1, "method": "run.start", "params": slow})
    run_id = first[1]["result"]["run_id"]
    second = await command(
        server,
        tid,
        {"id": 2, "method": "run.start", "params": {**slow, "multitaskStrategy": strategy}},
    )
    assert second[1]["type"] == "error"
    assert second[1]["error"] == "invalid_argument"
    await server.sync(lambda c: c.runs.cancel(tid, run_id, wait=True))
    events = await read_events(server, tid, {"channels": ["lifecycle"]}, until=root_terminal)
    assert events[-1]["params"]["data"]["event"] == "failed"


async def test_commands_and_streams_are_authorized(nursery: trio.Nursery) -> None:
    """A command is ``threads.create_run``, a stream ``threads.read``: refused for a user the
    handlers refuse, without credentials a 401."""
    settings = auth_settings("tests.authapps:refusing", heartbeat_interval=1.0)
    alice, bob = {"Authorization": "Bearer user:alice"}, {"Authorization": "Bearer user:bob"}
    start = {"id": 1, "method": "run.start", "params": {"assistant_id": "agent", "input": TOPIC}}
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        tid = str(uuid.uuid4())
        assert (await command(server, tid, start))[0] == 401
        await read_events(server, tid, {"channels": ["values"]}, until=None, status=401)
        refused = await command(server, tid, start, bob)
        assert refused[1]["type"] == "error"
        assert refused[1]["error"] == "permission_denied"
        assert (await command(server, tid, start, alice))[1]["type"] == "success"
        events = await read_events(
            server, tid, {"channels": ["lifecycle"]}, until=root_terminal, headers=alice
        )
        assert events[-1]["params"]["data"]["event"] == "completed"
        await read_events(
            server, tid, {"channels": ["values"]}, until=None, headers=bob, status=403
        )
        runs = await server.sync(lambda c: c.runs.list(tid), headers=alice)
        assert len(runs) == 1  # bob's run.start created nothing


async def test_a_stream_on_someone_elses_thread_ends(nursery: trio.Nursery) -> None:
    """Under owner-only threads (authorization filters): another user's thread is refused,
    and a stream opened on a thread that did not exist yet ends when the thread turns out to
    be someone else's."""
    alice, bob = bearer("alice"), bearer("bob")
    start = {"id": 1, "method": "run.start", "params": {"assistant_id": "agent", "input": TOPIC}}
    async with auth_server(nursery) as server:
        tid = str(uuid.uuid4())
        status, _ = await command(server, tid, start)
        assert status == 401  # no credentials
        early: list[list[dict[str, Any]]] = []

        async def bob_watches() -> None:  # before the thread exists
            early.append(
                await read_events(server, tid, {"channels": ["values"]}, until=None, headers=bob)
            )

        async with trio.open_nursery() as inner:
            inner.start_soon(bob_watches)
            await trio.sleep(0.3)
            assert (await command(server, tid, start, alice))[1]["type"] == "success"
        assert early == [[]]  # his stream ended without an event of hers
        events = await read_events(
            server, tid, {"channels": ["lifecycle"]}, until=root_terminal, headers=alice
        )
        assert events[-1]["params"]["data"]["event"] == "completed"
        await read_events(
            server, tid, {"channels": ["values"]}, until=None, headers=bob, status=404
        )
        refused = await command(server, tid, {**start, "id": 2}, bob)
        assert refused[1]["type"] == "error"
        assert refused[1]["id"] == 2
        runs = await server.sync(lambda c: c.runs.list(tid), headers=alice)
        assert len(runs) == 1  # bob's run.start created nothing


# -- WebSocket wire ---------------------------------------------------------------------------


def ws_session(url: str, frames: list[Any], *, until: Any) -> list[Any]:
    """Send ``frames`` on a WebSocket (a blocking client: run it in a thread) and collect
    what comes back until ``until(received)``."""
    from websockets.sync.client import connect

    received: list[Any] = []
    with connect(url, open_timeout=10) as ws:
        for frame in frames:
            ws.send(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
        while not until(received):
            received.append(orjson.loads(ws.recv(timeout=20)))
    return received


async def test_websocket_commands_subscriptions_and_errors(server: Server) -> None:
    """Over one socket: a bad frame gets an error envelope (id null) and the socket stays
    open; ``subscription.subscribe`` sends the replay after ``since`` before its answer; a
    ``run.start`` on the socket streams to the subscription; unsubscribe ends it."""
    tid = str(uuid.uuid4())
    url = server.url.replace("http://", "ws://") + f"/threads/{tid}/stream/events"
    start = {"id": 2, "method": "run.start", "params": {"assistant_id": "agent", "input": TOPIC}}
    subscribe: dict[str, Any] = {
        "id": 1,
        "method": "subscription.subscribe",
        "params": {"channels": ["lifecycle", "values"]},
    }

    def run_and_watch() -> list[Any]:
        return ws_session(
            url,
            ["{nope", {"id": "x"}, subscribe, start],
            until=lambda got: any(
                m.get("method") == "lifecycle" and root_terminal([m]) for m in got
            ),
        )

    got = await trio.to_thread.run_sync(run_and_watch)
    assert got[0]["type"] == "error"
    assert got[0]["id"] is None
    assert got[1]["error"] == "invalid_argument"
    assert "id" in got[1]["message"]
    answers = {m["id"]: m for m in got if m["type"] in ("success", "error") and m.get("id")}
    assert answers[1]["result"]["replayed_events"] == 0
    assert set(answers[2]["result"]) == {"run_id"}
    events = [m for m in got if m["type"] == "event"]
    assert [e["params"]["data"]["event"] for e in events if e["method"] == "lifecycle"] == [
        "started",
        "completed",
    ]
    # a second connection: the replay after since, then the answer, then unsubscribe
    since = events[0]["seq"]
    again = {**subscribe, "params": {**subscribe["params"], "since": since}}

    def replay() -> list[Any]:
        first = ws_session(url, [again], until=lambda got: any(m.get("id") == 1 for m in got))
        return first

    replayed = await trio.to_thread.run_sync(replay)
    *frames, answer = replayed
    assert [e["seq"] for e in frames] == [e["seq"] for e in events if e["seq"] > since]
    assert answer["result"]["replayed_events"] == len(frames)
    assert answer["meta"]["applied_through_seq"] == events[-1]["seq"]

    def unsubscribe() -> list[Any]:
        def done(got: list[Any]) -> bool:
            return any(m.get("id") == 1 for m in got) and any(m.get("id") == 2 for m in got)

        first = ws_session(url, [subscribe], until=lambda got: any(m.get("id") == 1 for m in got))
        sid = first[-1]["result"]["subscription_id"]
        return ws_session(
            url,
            [
                {"id": 1, "method": "subscription.unsubscribe", "params": {"subscription_id": sid}},
                {"id": 2, "method": "agent.getTree", "params": {}},
            ],
            until=done,
        )

    last = await trio.to_thread.run_sync(unsubscribe)
    by_id = {m["id"]: m for m in last}
    assert by_id[1]["error"] == "no_such_subscription"  # another connection's subscription
    assert by_id[2]["result"]["tree"] == {
        "namespace": [],
        "status": "completed",
        "graph_name": "agent",
    }
