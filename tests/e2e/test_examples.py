"""One test per example graph not covered by ``test_seeds.py``, through the real server.

Each asserts the wire data the seed documents (and the contract) give for that graph:
``chat`` (message streaming), ``subgraph`` (namespaced events), ``custom`` (stream writer),
``interrupter`` (``interrupt()`` and resume), ``erroring`` (run failures), ``slow``
(cancellation mid-run) and ``factory`` (a graph rebuilt per run from its config).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from tests.sdk import Server, collect

HUMAN = {"messages": [{"role": "user", "content": "hi"}]}
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INTERRUPT_ID = re.compile(r"^[0-9a-f]{32}$")
BOOM = {"error": "ValueError", "message": "boom from node"}


def events(parts: list[Any]) -> list[str]:
    return [p.event for p in parts]


# -- chat ---------------------------------------------------------------------------------------


async def test_chat_messages_tuple(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(c.runs.stream(None, "chat", input=HUMAN, stream_mode=["messages-tuple"]))
    )
    assert parts[0].event == "metadata"
    assert set(events(parts[1:])) == {"messages"}
    chunks = [p.data for p in parts[1:]]
    assert all(isinstance(d, list) and len(d) == 2 for d in chunks)
    assert "".join(chunk["content"] for chunk, _ in chunks) == "hello there friend"
    assert len(chunks) >= 3  # streamed token by token, not one message
    for chunk, metadata in chunks:
        assert chunk["type"] == "AIMessageChunk"
        assert metadata["langgraph_node"] == "chat"
    assert len({chunk["id"] for chunk, _ in chunks}) == 1


async def test_chat_legacy_messages(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(c.runs.stream(None, "chat", input=HUMAN, stream_mode="messages"))
    )
    names = events(parts)
    # the input message is complete once it is in the state; the reply streams, then is
    # complete once the node has returned it (as the JS server sends them)
    assert names[:3] == ["metadata", "messages/complete", "messages/metadata"]
    assert set(names[3:-1]) == {"messages/partial"}
    assert names[-1] == "messages/complete"
    assert [m["type"] for m in parts[1].data] == ["human"]
    (msg_id, meta), *_ = parts[2].data.items()
    assert meta["metadata"]["langgraph_node"] == "chat"
    partials = [p.data for p in parts[3:-1]]
    assert parts[-1].data == partials[-1]  # the whole message, once
    assert all(len(d) == 1 and d[0]["id"] == msg_id for d in partials)
    assert partials[-1][0]["content"] == "hello there friend"
    assert partials[-1][0]["type"] == "ai"
    # accumulated: every partial extends the previous one
    texts = [d[0]["content"] for d in partials]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))


async def test_legacy_messages_complete_after_the_values_that_hold_them(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(None, "chat", input=HUMAN, stream_mode=["messages", "values"])
        )
    )
    names = events(parts)
    assert names[-2:] == ["values", "messages/complete"]
    assert names[1:3] == ["values", "messages/complete"]  # the input message
    assert parts[-1].data == parts[-2].data["messages"][-1:]


async def test_chat_on_a_thread_keeps_the_conversation(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        result = await c.runs.wait(thread["thread_id"], "chat", input=HUMAN)
        return result, await c.threads.get(thread["thread_id"])

    result, thread = await server.aio(scenario)
    assert [(m["type"], m["content"]) for m in result["messages"]] == [
        ("human", "hi"),
        ("ai", "hello there friend"),
    ]
    assert thread["status"] == "idle"
    assert thread["values"] == result


# -- subgraph -----------------------------------------------------------------------------------


async def test_subgraph_updates_with_subgraphs(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(
                None, "subgraph", input={"foo": "foo"}, stream_mode="updates", stream_subgraphs=True
            )
        )
    )
    got = [(p.event.split("|"), p.data) for p in parts[1:]]
    assert [(e[0], len(e), d) for e, d in got] == [
        ("updates", 1, {"node_1": {"foo": "hi! foo"}}),
        ("updates", 2, {"subgraph_node_1": {"bar": "bar"}}),
        ("updates", 2, {"subgraph_node_2": {"foo": "hi! foobar"}}),
        ("updates", 1, {"node_2": {"foo": "hi! foobar"}}),
    ]
    ns1, ns2 = got[1][0][1], got[2][0][1]
    assert ns1 == ns2
    node, _, task_id = ns1.partition(":")
    assert node == "node_2"
    assert TASK_ID.match(task_id)


async def test_subgraph_updates_without_subgraphs(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(None, "subgraph", input={"foo": "foo"}, stream_mode="updates")
        )
    )
    assert [(p.event, p.data) for p in parts[1:]] == [
        ("updates", {"node_1": {"foo": "hi! foo"}}),
        ("updates", {"node_2": {"foo": "hi! foobar"}}),
    ]


# -- custom -------------------------------------------------------------------------------------


async def test_custom_stream_writer(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(c.runs.stream(None, "custom", input={"query": "q"}, stream_mode="custom"))
    )
    assert events(parts) == ["metadata", "custom", "custom", "custom"]
    assert [p.data for p in parts[1:]] == [{"progress": 0}, {"progress": 1}, "plain string"]


# -- interrupter --------------------------------------------------------------------------------


async def test_interrupt_then_resume(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        tid = thread["thread_id"]
        parts = await collect(c.runs.stream(tid, "interrupter", input={"question": "name?"}))
        interrupted = await c.threads.get(tid)
        state = await c.threads.get_state(tid)
        first_runs = await c.runs.list(tid)
        result = await c.runs.wait(tid, "interrupter", command={"resume": "Bob"})
        return parts, interrupted, state, first_runs, result, await c.threads.get(tid)

    parts, interrupted, state, first_runs, result, after = await server.aio(scenario)
    assert events(parts) == ["metadata", "values", "values"]
    assert parts[1].data == {"question": "name?"}
    last = parts[-1].data
    assert last["question"] == "name?"
    (intr,) = last["__interrupt__"]
    assert intr["value"] == {"question": "name?"}
    assert INTERRUPT_ID.match(intr["id"])

    # a run stopping at interrupt() succeeds; the *thread* is interrupted
    assert [r["status"] for r in first_runs] == ["success"]
    assert interrupted["status"] == "interrupted"
    assert interrupted["values"] == {"question": "name?"}
    ((task_id, pending),) = interrupted["interrupts"].items()
    assert TASK_ID.match(task_id)
    assert pending == [{"id": intr["id"], "value": {"question": "name?"}}]
    # the thread state: the interrupted task is still next, and carries the interrupt
    assert state["next"] == ["ask"]
    assert state["interrupts"] == pending
    ((task,),) = [state["tasks"]]
    assert (task["id"], task["name"], task["error"]) == (task_id, "ask", None)
    assert task["interrupts"] == pending

    assert result == {"question": "name?", "answer": "Bob!"}
    assert after["status"] == "idle"
    assert after["interrupts"] == {}
    assert after["values"] == {"question": "name?", "answer": "Bob!"}


# -- erroring -----------------------------------------------------------------------------------


async def test_erroring_stream_ends_with_error(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(None, "erroring", input={"x": 0}, stream_mode=["updates", "values"])
        )
    )
    assert [(p.event, p.data) for p in parts[1:]] == [
        ("values", {"x": 0}),
        ("updates", {"ok_node": {"x": 1}}),
        ("values", {"x": 1}),
        ("error", BOOM),
    ]


async def test_erroring_on_a_thread(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        tid = thread["thread_id"]
        parts = await collect(c.runs.stream(tid, "erroring", input={"x": 0}))
        runs = await c.runs.list(tid)
        after_stream = await c.threads.get(tid)
        state = await c.threads.get_state(tid)
        waited = await c.runs.wait(tid, "erroring", input={"x": 5}, raise_error=False)
        try:
            await c.runs.wait(tid, "erroring", input={"x": 7})
        except Exception as exc:
            raised = str(exc)
        else:
            raised = None
        return parts, runs, after_stream, state, waited, raised, await c.threads.get(tid)

    parts, runs, thread, state, waited, raised, final = await server.aio(scenario)
    assert (parts[-1].event, parts[-1].data) == ("error", BOOM)
    assert [r["status"] for r in runs] == ["error"]
    assert thread["status"] == "error"
    assert thread["error"] == BOOM
    assert thread["values"] == {"x": 1}
    # contract §4.1: after an error, next still lists the failed node, whose task carries
    # the error as a repr string
    assert state["values"] == {"x": 1}
    assert state["next"] == ["bad_node"]
    ((task,),) = [state["tasks"]]
    assert task["name"] == "bad_node"
    assert task["error"] == "ValueError('boom from node')"
    assert waited == {"__error__": BOOM}
    assert raised == "ValueError: boom from node"  # the SDK raises on __error__ by default
    assert final["status"] == "error"
    assert final["values"] == {"x": 1}


# -- slow ---------------------------------------------------------------------------------------


async def test_slow_runs_both_steps(server: Server) -> None:
    parts = await server.aio(
        lambda c: collect(
            c.runs.stream(None, "slow", input={"delay": 0.05}, stream_mode=["updates", "values"])
        )
    )
    assert [(p.event, p.data) for p in parts[1:]] == [
        ("values", {"delay": 0.05, "log": []}),
        ("updates", {"step1": {"log": ["step1"]}}),
        ("values", {"delay": 0.05, "log": ["step1"]}),
        ("updates", {"step2": {"log": ["step2"]}}),
        ("values", {"delay": 0.05, "log": ["step1", "step2"]}),
    ]


async def test_slow_cancelled_between_steps(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        tid = thread["thread_id"]
        parts = []
        async for part in c.runs.stream(tid, "slow", input={"delay": 0.3}, stream_mode="updates"):
            parts.append(part)
            if part.event == "updates":  # step1 done, step2 sleeping: cancel it
                await c.runs.cancel(tid, parts[0].data["run_id"], wait=True)
        run = await c.runs.get(tid, parts[0].data["run_id"])
        return parts, run, await c.threads.get(tid)

    parts, run, thread = await server.aio(scenario)
    assert [(p.event, p.data) for p in parts[1:]] == [("updates", {"step1": {"log": ["step1"]}})]
    assert run["status"] == "interrupted"
    # the last checkpoint still has step2 to run
    assert thread["status"] == "interrupted"
    assert thread["values"] == {"delay": 0.3, "log": ["step1"]}
    assert thread["error"]["error"] == "UserInterrupt"


# -- factory ------------------------------------------------------------------------------------


async def test_factory_rebuilt_per_run(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        alice = await c.runs.wait(
            None, "factory", input={}, config={"configurable": {"who": "alice"}}
        )
        bob = await c.runs.wait(None, "factory", input={}, config={"configurable": {"who": "bob"}})
        default = await c.runs.wait(None, "factory", input={})
        return alice, bob, default

    alice, bob, default = await server.aio(scenario)
    assert alice == {"greeting": "hello alice"}
    assert bob == {"greeting": "hello bob"}
    assert default == {"greeting": "hello world"}
