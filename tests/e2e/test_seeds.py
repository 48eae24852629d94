"""The seed documents' examples, reproduced against the real server with their data."""

from __future__ import annotations

from tests.sdk import Server, collect

TEST_INPUT = {"foo": None, "bar": "checked", "baz": None}
DONE = {"foo": "checked", "bar": "checked", "baz": "checked"}


async def test_stateless_wait_returns_final_values(server: Server) -> None:
    result = await server.aio(lambda c: c.runs.wait(None, "test_agent", input=TEST_INPUT))
    assert result == DONE


async def test_stateless_stream_all_modes_but_events(server: Server) -> None:
    modes = [
        "values",
        "messages",
        "updates",
        "tasks",
        "checkpoints",
        "debug",
        "custom",
        "messages-tuple",
    ]
    parts = await server.aio(
        lambda c: collect(c.runs.stream(None, "test_agent", stream_mode=modes, input=TEST_INPUT))
    )
    by_event: dict[str, list[object]] = {}
    for part in parts:
        by_event.setdefault(part.event, []).append(part.data)
    # seed 002: no checkpoints (stateless runs keep none), no messages (no LLM)
    assert set(by_event) == {"metadata", "values", "tasks", "debug", "updates"}
    assert by_event["metadata"][0]["attempt"] == 1
    assert by_event["values"] == [TEST_INPUT, {**TEST_INPUT, "foo": "checked"}, DONE]
    assert by_event["updates"] == [
        {"foo": {"foo": "checked"}},
        {"bar": None},
        {"baz": {"baz": "checked"}},
    ]
    tasks = by_event["tasks"]
    assert [(t["name"], "result" in t) for t in tasks] == [
        ("foo", False),
        ("foo", True),
        ("bar", False),
        ("bar", True),
        ("baz", False),
        ("baz", True),
    ]
    assert tasks[0]["input"] == TEST_INPUT
    assert tasks[0]["triggers"] == ["branch:to:foo"]
    assert tasks[3] == {
        "id": tasks[2]["id"],
        "name": "bar",
        "error": None,
        "result": {},
        "interrupts": [],
    }
    debug = by_event["debug"]
    assert [d["type"] for d in debug] == ["task", "task_result"] * 3
    assert [d["step"] for d in debug] == [1, 1, 2, 2, 3, 3]


async def test_create_delayed_keep_goes_pending_then_success(server: Server) -> None:
    run = await server.aio(
        lambda c: c.runs.create(
            None, "test_agent", input=TEST_INPUT, after_seconds=2, on_completion="keep"
        )
    )
    assert run["status"] == "pending"
    assert run["thread_id"]
    import trio

    await trio.sleep(1)
    mid = await server.sync(lambda c: c.runs.get(run["thread_id"], run["run_id"]))
    assert mid["status"] == "pending"
    await trio.sleep(2)
    end = await server.sync(lambda c: c.runs.get(run["thread_id"], run["run_id"]))
    assert end["status"] == "success"
    thread = await server.sync(lambda c: c.threads.get(run["thread_id"]))
    assert thread["values"] == DONE
    assert thread["status"] == "idle"


async def test_join_and_join_stream(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        run = await c.runs.create(None, "test_agent", input=TEST_INPUT)
        joined = await c.runs.join(run["thread_id"], run["run_id"])
        run2 = await c.runs.create(None, "test_agent", input=TEST_INPUT)
        parts = await collect(c.runs.join_stream(run2["thread_id"], run2["run_id"]))
        return joined, run2, parts

    joined, run2, parts = await server.aio(scenario)
    assert joined == DONE
    assert [p.event for p in parts] == ["metadata", "values", "values", "values"]
    assert parts[0].data == {"run_id": run2["run_id"], "attempt": 1}
    assert parts[-1].data == DONE


async def test_stateful_stream_updates_agent(server: Server) -> None:
    async def scenario(c):  # type: ignore[no-untyped-def]
        thread = await c.threads.create()
        parts = await collect(
            c.runs.stream(
                thread["thread_id"], "agent", input={"topic": "ice cream"}, stream_mode="updates"
            )
        )
        return thread, parts

    thread, parts = await server.aio(scenario)
    assert [p.data for p in parts[1:]] == [
        {"refine_topic": {"topic": "ice cream and cats"}},
        {"generate_joke": {"joke": "This is a joke about ice cream and cats"}},
    ]
    state = await server.sync(lambda c: c.threads.get_state(thread["thread_id"]))
    assert state["values"]["joke"] == "This is a joke about ice cream and cats"
