"""The run wire itself, read with raw httpx: SSE headers and framing, heartbeats, event
order, ``/wait`` keep-alives and the ``Location`` headers clients reconnect to (contract
§5.4-5.6, §6)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.infra.settings import GraphSpec

SSE = "text/event-stream; charset=utf-8"
HEARTBEAT = b": heartbeat\r\n\r\n"
EVENT_FRAME = rb"event: [^\r\n]+\r\ndata: [^\r\n]*\r\n"
FRAME = re.compile(rb"(?:" + EVENT_FRAME + rb"(?:id: [^\r\n]+\r\n)?\r\n|: heartbeat\r\n\r\n)")
TEST_INPUT = {"foo": None, "bar": "checked", "baz": None}
DONE = {"foo": "checked", "bar": "checked", "baz": "checked"}

# a chat model called inside a subgraph: the only way to see whether ``messages/*`` events
# get namespaced (none of the example graphs streams tokens from a subgraph)
NESTED_CHAT = """
from typing import Annotated, TypedDict

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


async def chat(state: State) -> State:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hello there friend")]))
    return {"messages": [await model.ainvoke(state["messages"])]}


inner = StateGraph(State).add_node(chat).add_edge(START, "chat").add_edge("chat", END).compile()
graph = (
    StateGraph(State)
    .add_node("inner", inner)
    .add_edge(START, "inner")
    .add_edge("inner", END)
    .compile()
)
"""


@pytest.fixture
async def nested_server(nursery: trio.Nursery, tmp_path: Any) -> AsyncIterator[Server]:
    """The examples plus ``nested_chat`` (a chat model inside subgraph ``inner``)."""
    path = tmp_path / "nested_chat.py"
    path.write_text(NESTED_CHAT)
    settings = example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    spec = GraphSpec(graph_id="nested_chat", path=f"{path}:graph")
    async for s in start_server(nursery, attrs.evolve(settings, graphs=(*settings.graphs, spec))):
        yield s


# -- helpers ----------------------------------------------------------------------------------


@attrs.frozen
class Event:
    name: str
    data: Any
    id: str | None


def parse_sse(body: bytes) -> tuple[list[Event], int]:
    """Split a complete SSE body into events; returns ``(events, heartbeats)``.

    Fails unless the body is nothing but well-formed CRLF frames."""
    events, beats, pos = [], 0, 0
    while pos < len(body):
        match = FRAME.match(body, pos)
        assert match, f"malformed SSE at byte {pos}: {body[pos : pos + 200]!r}"
        frame = match.group(0)
        pos = match.end()
        if frame == HEARTBEAT:
            beats += 1
            continue
        lines = frame[:-4].split(b"\r\n")
        assert lines[0].startswith(b"event: ")
        assert lines[1].startswith(b"data: ")
        event_id = lines[2][len(b"id: ") :].decode() if len(lines) == 3 else None
        name = lines[0][len(b"event: ") :].decode()
        events.append(Event(name, json.loads(lines[1][len(b"data: ") :]), event_id))
    return events, beats


async def new_thread(h: httpx.AsyncClient) -> str:
    r = await h.post("/threads", json={})
    assert r.status_code == 200
    return r.json()["thread_id"]  # type: ignore[no-any-return]


async def post_stream(
    h: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> tuple[httpx.Response, bytes]:
    """POST and read the whole (streamed) body; returns the response and the raw bytes."""
    async with h.stream("POST", path, json=body) as r:
        raw = b"".join([chunk async for chunk in r.aiter_bytes()])
    return r, raw


def label(event: Event) -> str:
    if event.name == "debug":
        return f"debug:{event.data['type']}"
    if event.name == "tasks":
        return "tasks:result" if "result" in event.data else "tasks:start"
    return event.name


def event_key(event_id: str) -> tuple[int, int]:
    assert re.fullmatch(r"\d+-\d+", event_id), event_id
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


# -- headers and framing ----------------------------------------------------------------------


async def test_thread_stream_headers_and_framing(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        r, raw = await post_stream(
            h,
            f"/threads/{tid}/runs/stream",
            {"assistant_id": "test_agent", "input": TEST_INPUT, "stream_mode": ["values"]},
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == SSE
    assert r.headers["cache-control"] == "no-store"
    events, _ = parse_sse(raw)
    assert events[0].name == "metadata"
    rid = events[0].data["run_id"]
    assert events[0].data == {"run_id": rid, "attempt": 1}
    assert r.headers["location"] == f"/threads/{tid}/runs/{rid}/stream"
    assert r.headers["content-location"] == f"/threads/{tid}/runs/{rid}"
    # CRLF only, one data line per event, no terminal ``end`` event; ids on every event,
    # increasing, although the run is not resumable (as the JS server sends them)
    assert re.search(rb"(?<!\r)\n", raw) is None
    assert raw.endswith(b"\r\n\r\n")
    assert [e.name for e in events] == ["metadata", "values", "values", "values"]
    assert events[-1].data == DONE
    seqs = [int(e.id.rpartition("-")[2]) for e in events if e.id is not None]
    assert len(seqs) == len(events)
    assert seqs == sorted(set(seqs))
    assert b"event: end" not in raw


async def test_stateless_stream_headers(server: Server) -> None:
    async with server.http() as h:
        r, raw = await post_stream(
            h, "/runs/stream", {"assistant_id": "agent", "input": {"topic": "s"}}
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == SSE
    assert r.headers["cache-control"] == "no-store"
    events, _ = parse_sse(raw)
    rid = events[0].data["run_id"]
    assert (events[0].name, events[0].data) == ("metadata", {"run_id": rid, "attempt": 1})
    assert all(e.id is not None for e in events)
    assert r.headers["location"] == f"/runs/{rid}/stream"
    assert r.headers["content-location"] == f"/runs/{rid}"
    assert [e.name for e in events] == ["metadata", "values", "values", "values"]


async def test_resumable_frames_carry_increasing_ids(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        body = {
            "assistant_id": "test_agent",
            "input": TEST_INPUT,
            "stream_mode": ["values", "updates", "debug"],
            "stream_resumable": True,
        }
        _, raw = await post_stream(h, f"/threads/{tid}/runs/stream", body)
        events, _ = parse_sse(raw)
        assert all(e.id is not None for e in events)
        keys = [event_key(e.id) for e in events]  # type: ignore[arg-type]
        assert keys == sorted(keys)
        assert len(set(keys)) == len(keys)
        # field order is event, data, id
        assert re.search(rb"event: [^\r\n]+\r\ndata: [^\r\n]+\r\nid: \d+-\d+\r\n\r\n", raw)

        # replay with a raw Last-Event-ID header: the same frames, ids included
        rid = events[0].data["run_id"]
        async with h.stream(
            "GET",
            f"/threads/{tid}/runs/{rid}/stream",
            headers={"Last-Event-ID": events[4].id},  # type: ignore[dict-item]
        ) as replay:
            replayed = b"".join([chunk async for chunk in replay.aiter_bytes()])
        assert replay.headers["content-type"] == SSE
        assert parse_sse(replayed)[0] == events[5:]


async def test_heartbeat_comment_during_a_slow_run(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        r, raw = await post_stream(
            h, f"/threads/{tid}/runs/stream", {"assistant_id": "slow", "input": {"delay": 1.2}}
        )
    assert r.status_code == 200
    events, beats = parse_sse(raw)  # heartbeats sit between frames, never inside one
    assert beats >= 1
    assert HEARTBEAT in raw
    assert [e.name for e in events] == ["metadata", "values", "values", "values"]
    assert events[-1].data == {"delay": 1.2, "log": ["step1", "step2"]}


async def test_modes_interleave_in_production_order(server: Server) -> None:
    modes = ["values", "updates", "tasks", "checkpoints", "debug"]
    async with server.http() as h:
        tid = await new_thread(h)
        _, raw = await post_stream(
            h,
            f"/threads/{tid}/runs/stream",
            {"assistant_id": "agent", "input": {"topic": "o"}, "stream_mode": modes},
        )
    events, _ = parse_sse(raw)
    checkpoint = ["checkpoints", "debug:checkpoint"]
    step = ["tasks:start", "debug:task", "updates", "tasks:result", "debug:task_result", "values"]
    assert [label(e) for e in events] == [
        "metadata",
        *checkpoint,  # the input checkpoint (step -1)
        "values",
        *checkpoint,  # step 0
        *step,  # refine_topic
        *checkpoint,
        *step,  # generate_joke
        *checkpoint,
    ]
    assert [e.data["name"] for e in events if e.name == "tasks"] == [
        "refine_topic",
        "refine_topic",
        "generate_joke",
        "generate_joke",
    ]

    # debug checkpoint payloads carry checkpoint / parent_checkpoint, chained
    debug_cps = [e.data for e in events if label(e) == "debug:checkpoint"]
    assert [d["step"] for d in debug_cps] == [-1, 0, 1, 2]
    parent = None
    for debug in debug_cps:
        payload = debug["payload"]
        ref = payload["checkpoint"]
        assert set(ref) == {"checkpoint_id", "thread_id", "checkpoint_ns"}
        assert ref["thread_id"] == tid
        assert ref["checkpoint_ns"] == ""
        assert payload["parent_checkpoint"] == parent
        assert payload["config"]["configurable"]["checkpoint_id"] == ref["checkpoint_id"]
        parent = ref
    checkpoints = [e.data for e in events if e.name == "checkpoints"]
    assert [c["config"]["configurable"]["checkpoint_id"] for c in checkpoints] == [
        d["payload"]["checkpoint"]["checkpoint_id"] for d in debug_cps
    ]
    assert checkpoints[-1]["values"] == {
        "topic": "o and cats",
        "joke": "This is a joke about o and cats",
    }
    assert checkpoints[-1]["next"] == []


# -- /wait and Location -----------------------------------------------------------------------


async def test_wait_sends_keepalive_newlines_then_json(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        r, raw = await post_stream(
            h, f"/threads/{tid}/runs/wait", {"assistant_id": "slow", "input": {"delay": 1.2}}
        )
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert raw.startswith(b"\n")  # keep-alive before the body
        assert raw.lstrip(b"\n").startswith(b"{")
        final = {"delay": 1.2, "log": ["step1", "step2"]}
        assert json.loads(raw) == final

        location = r.headers["location"]
        base = r.headers["content-location"]
        assert re.fullmatch(rf"/threads/{tid}/runs/[0-9a-f-]{{36}}", base)
        assert location == base + "/join"
        joined = await h.get(location)
        assert joined.status_code == 200
        assert joined.json() == final
        assert joined.headers["location"] == location
        assert joined.headers["content-location"] == base


async def test_stateless_wait_location_joins_the_running_run(server: Server) -> None:
    """The SDK re-issues ``GET <Location>`` when a wait's body breaks off (contract §5.5)."""
    final = {"delay": 1.0, "log": ["step1", "step2"]}
    got: dict[str, Any] = {}
    async with server.http() as h, trio.open_nursery() as nursery:
        body = {"assistant_id": "slow", "input": {"delay": 1.0}}
        async with h.stream("POST", "/runs/wait", json=body) as r:
            base = r.headers["content-location"]
            location = r.headers["location"]

            async def join() -> None:
                joined = await h.get(location)
                got["status"], got["body"] = joined.status_code, joined.content

            nursery.start_soon(join)
            raw = b"".join([chunk async for chunk in r.aiter_bytes()])
    assert r.status_code == 200
    assert json.loads(raw) == final
    # the temporary thread is exposed here (contract §5.5)
    assert re.fullmatch(r"/threads/[0-9a-f-]{36}/runs/[0-9a-f-]{36}", base)
    assert location == base + "/join"
    assert got["status"] == 200, got["body"]
    assert json.loads(got["body"]) == final


async def test_stateless_stream_location_joins_the_running_run(server: Server) -> None:
    final = {"delay": 1.0, "log": ["step1", "step2"]}
    got: dict[str, Any] = {}
    async with server.http() as h, trio.open_nursery() as nursery:
        body = {"assistant_id": "slow", "input": {"delay": 1.0}}
        async with h.stream("POST", "/runs/stream", json=body) as r:
            location = r.headers["location"]

            async def join() -> None:
                async with h.stream("GET", location) as joined:
                    got["status"] = joined.status_code
                    got["type"] = joined.headers.get("content-type")
                    got["raw"] = b"".join([c async for c in joined.aiter_bytes()])

            nursery.start_soon(join)
            raw = b"".join([chunk async for chunk in r.aiter_bytes()])
    events, _ = parse_sse(raw)
    rid = events[0].data["run_id"]
    assert location == f"/runs/{rid}/stream"
    assert events[-1].data == final
    assert got["status"] == 200
    assert got["type"] == SSE
    joined_events, _ = parse_sse(got["raw"])
    assert joined_events
    assert (joined_events[-1].name, joined_events[-1].data) == ("values", final)
    assert joined_events[-1].id == events[-1].id  # the same event, by the same id


# -- namespacing ------------------------------------------------------------------------------


async def test_messages_events_never_namespaced(nested_server: Server) -> None:
    async with nested_server.http() as h:
        r, raw = await post_stream(
            h,
            "/runs/stream",
            {
                "assistant_id": "nested_chat",
                "input": {"messages": [{"role": "user", "content": "hi"}]},
                "stream_mode": ["messages", "messages-tuple", "updates"],
                "stream_subgraphs": True,
            },
        )
    assert r.status_code == 200
    events, _ = parse_sse(raw)
    names = [e.name for e in events]
    legacy = [n for n in names if n.startswith("messages/")]
    assert {"messages/metadata", "messages/partial"} <= set(legacy)
    assert all("|" not in n for n in legacy)
    partial = [e.data for e in events if e.name == "messages/partial"]
    assert partial[-1][0]["content"] == "hello there friend"
    # tuple-mode and updates events from inside the subgraph are namespaced
    assert any(re.fullmatch(r"messages\|inner:[0-9a-f-]{36}", n) for n in names)
    assert any(re.fullmatch(r"updates\|inner:[0-9a-f-]{36}", n) for n in names)
    assert "updates" in names  # the parent's update for node ``inner``


# -- join edge cases and HEAD -----------------------------------------------------------------


async def test_join_stream_of_unknown_run(server: Server) -> None:
    """An unknown run is a 404 before any stream starts. This departs on purpose from the
    reference's 200 stream with one ``error`` event (contract §6.9, quirk §13.12)."""
    async with server.http() as h:
        tid = await new_thread(h)
        rid = str(uuid.uuid4())
        r = await h.get(f"/threads/{tid}/runs/{rid}/stream")
        assert r.status_code == 404
        assert rid in r.json()["detail"]
        assert "not found" in r.json()["detail"].lower()
        r = await h.get(f"/threads/{tid}/runs/not-a-uuid/stream")
        assert r.status_code == 422
        assert r.json() == {"detail": "Invalid run ID: must be a UUID"}


async def test_join_stream_of_finished_run_is_empty(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        r = await h.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "test_agent", "input": TEST_INPUT}
        )
        rid = r.headers["content-location"].rsplit("/", 1)[-1]
        async with h.stream("GET", f"/threads/{tid}/runs/{rid}/stream") as joined:
            raw = b"".join([chunk async for chunk in joined.aiter_bytes()])
    assert joined.status_code == 200
    assert joined.headers["content-type"] == SSE
    assert joined.headers["location"] == f"/threads/{tid}/runs/{rid}/stream"
    assert parse_sse(raw)[0] == []


async def test_every_get_answers_head(server: Server) -> None:
    async with server.http() as h:
        tid = await new_thread(h)
        r = await h.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "agent", "input": {"topic": "h"}}
        )
        rid = r.headers["content-location"].rsplit("/", 1)[-1]
        aid = (await h.get(f"/threads/{tid}/runs/{rid}")).json()["assistant_id"]
        paths = [
            "/ok",
            "/info",
            f"/assistants/{aid}",
            f"/threads/{tid}",
            f"/threads/{tid}/state",
            f"/threads/{tid}/history",
            f"/threads/{tid}/runs",
            f"/threads/{tid}/runs/{rid}",
            f"/threads/{tid}/runs/{rid}/join",
            f"/threads/{tid}/runs/{rid}/stream",
        ]
        for path in paths:
            got = await h.get(path)
            head = await h.head(path)
            assert got.status_code == 200, path
            assert head.status_code == 200, path
            assert head.content == b"", path
            assert head.headers["content-type"] == got.headers["content-type"], path
        missing = await h.head(f"/threads/{uuid.uuid4()}")
        assert missing.status_code == 404
