"""Thread state, state updates and history through the official SDK (contract §4, §13.2, 7,
17, 21): nested subgraph state, forks, the status after an update, history filters and
its equality with the ``checkpoints`` and ``debug`` stream payloads. Raw httpx where the
wire is asserted (status codes, query encodings, 4xx that change nothing)."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from langgraph_sdk.errors import BadRequestError, ConflictError, NotFoundError

from tests.conftest import start_server
from tests.sdk import Server, collect
from triograph.core.infra.models import Assistant
from triograph.core.infra.settings import GraphSpec, Settings

JOKE = {"topic": "dogs and cats", "joke": "This is a joke about dogs and cats"}
EMPTY_STATE = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": None,
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}


async def ran(server: Server, graph: str, payload: Any) -> str:
    """A new thread on which one run of ``graph`` with ``payload`` has finished."""

    def go(c: Any) -> str:
        tid: str = c.threads.create()["thread_id"]
        c.runs.wait(tid, graph, input=payload, raise_error=False)
        return tid

    return await server.sync(go)


async def history(server: Server, tid: str, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("limit", 100)
    return await server.sync(lambda c: c.threads.get_history(tid, **kw))  # type: ignore[no-any-return]


# -- reading state --------------------------------------------------------------------------


async def test_state_of_a_thread_that_never_ran(server: Server) -> None:
    tid = (await server.sync(lambda c: c.threads.create()))["thread_id"]
    assert await server.sync(lambda c: c.threads.get_state(tid)) == EMPTY_STATE
    assert await history(server, tid) == []
    missing = str(uuid.uuid4())
    async with server.http() as h:
        for path in ("/state", "/history"):
            r = await h.get(f"/threads/{missing}{path}")
            assert r.status_code == 404
            assert r.json() == {"detail": f"Thread with ID {missing} not found"}
            r = await h.get(f"/threads/nope{path}")
            assert r.status_code == 422


async def test_state_at_checkpoint(server: Server) -> None:
    tid = await ran(server, "agent", {"topic": "dogs"})
    rows = await history(server, tid)
    middle = rows[1]
    assert middle["next"] == ["generate_joke"]
    by_id = await server.sync(
        lambda c: c.threads.get_state(tid, checkpoint_id=middle["checkpoint_id"])
    )
    by_ref = await server.sync(
        lambda c: c.threads.get_state(tid, checkpoint={"checkpoint_id": middle["checkpoint_id"]})
    )
    assert by_id == by_ref == middle
    unknown = str(uuid.uuid4())
    state = await server.sync(lambda c: c.threads.get_state(tid, checkpoint_id=unknown))
    assert (state["values"], state["metadata"]) == ({}, None)
    assert state["checkpoint_id"] == unknown
    assert state["checkpoint"]["checkpoint_id"] == unknown
    async with server.http() as h:
        r = await h.post(f"/threads/{tid}/state/checkpoint", json={"subgraphs": True})
        assert r.status_code == 422
        assert r.json() == {"detail": "$.checkpoint: required field missing"}


async def test_subgraph_state_nests_and_interrupts_are_keyed_by_the_inner_task(
    server: Server,
) -> None:
    tid = await ran(server, "subint", {"foo": "a"})
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "interrupted"
    flat = await server.sync(lambda c: c.threads.get_state(tid))
    (task,) = flat["tasks"]
    assert (task["name"], task["state"]) == ("inner", None)
    ns = task["checkpoint"]["checkpoint_ns"]
    assert ns == f"inner:{task['id']}"
    # no checkpoint_id key (not even null) for a task's checkpoint: as on the official server
    assert task["checkpoint"] == {"thread_id": tid, "checkpoint_ns": ns}

    nested = await server.sync(lambda c: c.threads.get_state(tid, subgraphs=True))
    sub = nested["tasks"][0]["state"]
    assert sub["checkpoint"]["checkpoint_ns"] == ns
    assert sub["values"] == {"foo": "a|pre"}
    assert sub["next"] == ["ask"]
    assert [i["value"] for i in sub["interrupts"]] == ["sub question"]
    (ask,) = sub["tasks"]
    # the thread's interrupts are keyed by the task that called interrupt(), inside the subgraph
    assert thread["interrupts"] == {ask["id"]: sub["interrupts"]}
    assert ask["id"] != task["id"]
    async with server.http() as h:  # the JS SDK's boolean spelling
        r = await h.get(f"/threads/{tid}/state", params={"subgraphs": "1"})
    assert r.json() == nested


async def test_subgraph_history_and_update(server: Server) -> None:
    tid = await ran(server, "subint", {"foo": "a"})
    nested = await server.sync(lambda c: c.threads.get_state(tid, subgraphs=True))
    sub = nested["tasks"][0]["state"]
    ns = sub["checkpoint"]["checkpoint_ns"]

    rows = await history(server, tid, checkpoint={"checkpoint_ns": ns})
    assert [r["values"] for r in rows] == [{"foo": "a|pre"}, {"foo": "a"}, {}]
    assert {r["checkpoint"]["checkpoint_ns"] for r in rows} == {ns}
    assert rows[0]["checkpoint_id"] == sub["checkpoint_id"]
    assert len(await history(server, tid)) == 2  # the root namespace only

    ref = {"checkpoint_ns": ns, "checkpoint_id": sub["checkpoint_id"]}
    at = await server.sync(lambda c: c.threads.get_state(tid, checkpoint=ref))
    assert (at["values"], at["next"], at["checkpoint_id"]) == (
        {"foo": "a|pre"},
        ["ask"],
        ref["checkpoint_id"],
    )
    out = await server.sync(
        lambda c: c.threads.update_state(tid, {"foo": "patched"}, as_node="pre", checkpoint=ref)
    )
    assert out["checkpoint"]["checkpoint_ns"] == ns
    nested = await server.sync(lambda c: c.threads.get_state(tid, subgraphs=True))
    assert nested["tasks"][0]["state"]["values"] == {"foo": "patched"}
    result = await server.sync(lambda c: c.runs.wait(tid, "subint", command={"resume": "x"}))
    assert result == {"foo": "patched|x|post"}
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["status"], thread["interrupts"]) == ("idle", {})


# -- updating state ---------------------------------------------------------------------------


async def test_update_state_as_node_sets_values_and_status(server: Server) -> None:
    tid = await ran(server, "interrupter", {"question": "name?"})
    before = await history(server, tid)
    out = await server.sync(
        lambda c: c.threads.update_state(tid, {"answer": "manual"}, as_node="ask")
    )
    assert set(out) == {"checkpoint", "configurable", "checkpoint_id"}
    assert out["checkpoint"] == out["configurable"]
    ref = {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": out["checkpoint_id"]}
    assert out["checkpoint"] == ref
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["values"] == {"question": "name?", "answer": "manual"}
    assert (thread["status"], thread["interrupts"]) == ("idle", {})
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert state["checkpoint_id"] == out["checkpoint_id"]
    assert state["parent_checkpoint_id"] == before[0]["checkpoint_id"]
    assert (state["metadata"]["source"], state["metadata"]["graph_id"]) == ("update", "interrupter")
    assert state["metadata"]["step"] == before[0]["metadata"]["step"] + 1

    await server.sync(
        lambda c: c.threads.update_state(tid, {"question": "age?"}, as_node="__start__")
    )
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["status"], thread["values"]["question"]) == ("interrupted", "age?")

    with pytest.raises(BadRequestError, match="Node nope does not exist"):
        await server.sync(lambda c: c.threads.update_state(tid, {"answer": "x"}, as_node="nope"))
    assert len(await history(server, tid)) == len(before) + 2


async def test_update_state_fork_moves_the_head(server: Server) -> None:
    """§13.7: after a fork, the thread shows the new head, not the base checkpoint."""
    tid = await ran(server, "agent", {"topic": "dogs"})
    rows = await history(server, tid)
    base = rows[1]  # after refine_topic, before generate_joke
    out = await server.sync(
        lambda c: c.threads.update_state(
            tid, {"topic": "birds"}, as_node="refine_topic", checkpoint_id=base["checkpoint_id"]
        )
    )
    thread = await server.sync(lambda c: c.threads.get(tid))
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert thread["values"] == state["values"] == {"topic": "birds"}
    assert (thread["status"], state["next"]) == ("interrupted", ["generate_joke"])
    assert state["checkpoint_id"] == out["checkpoint_id"]
    assert state["parent_checkpoint_id"] == base["checkpoint_id"]
    # the same through a checkpoint object
    await server.sync(
        lambda c: c.threads.update_state(
            tid,
            {"topic": "bats"},
            as_node="refine_topic",
            checkpoint={"checkpoint_id": base["checkpoint_id"], "checkpoint_ns": ""},
        )
    )
    assert (await server.sync(lambda c: c.threads.get(tid)))["values"] == {"topic": "bats"}
    result = await server.sync(lambda c: c.runs.wait(tid, "agent", input=None))
    assert result == {"topic": "bats", "joke": "This is a joke about bats"}


async def test_update_state_refusals_change_nothing(server: Server) -> None:
    tid = await ran(server, "agent", {"topic": "dogs"})
    thread = await server.sync(lambda c: c.threads.get(tid))
    ids = [r["checkpoint_id"] for r in await history(server, tid)]
    async with server.http() as h:
        for body, status, detail in (
            ({"values": {"topic": "x"}, "checkpoint_id": "nope"}, 422, "Invalid checkpoint ID"),
            ({"values": {"topic": "x"}, "checkpoint_id": str(uuid.uuid4())}, 404, "Checkpoint "),
            ({"values": {"topic": "x"}, "as_node": 3}, 422, "$.as_node"),
            ({"values": {"topic": "x"}, "checkpoint": "x"}, 422, "$.checkpoint"),
            ({"values": {"topic": "x"}, "as_node": "ghost"}, 400, "Node ghost does not exist"),
            ({"values": "x", "as_node": "refine_topic"}, 422, "$.values: expected an object"),
        ):
            r = await h.post(f"/threads/{tid}/state", json=body)
            assert r.status_code == status, body
            assert r.json()["detail"].startswith(detail), r.json()
    assert [r["checkpoint_id"] for r in await history(server, tid)] == ids
    assert await server.sync(lambda c: c.threads.get(tid)) == thread
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.threads.update_state(str(uuid.uuid4()), {"topic": "x"}))


async def test_update_state_conflicts_with_runs_in_flight(server: Server) -> None:
    def start(c: Any) -> tuple[str, str]:
        tid = c.threads.create()["thread_id"]
        return tid, c.runs.create(tid, "slow", input={"delay": 0.3})["run_id"]

    tid, rid = await server.sync(start)
    with pytest.raises(ConflictError, match=f"Thread {tid} has in-flight runs"):
        await server.sync(lambda c: c.threads.update_state(tid, {"log": ["x"]}, as_node="step1"))
    await server.sync(lambda c: c.runs.join(tid, rid))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["values"]["log"] == ["step1", "step2"]
    await server.sync(lambda c: c.threads.update_state(tid, {"log": ["x"]}, as_node="step1"))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["values"]["log"], thread["status"]) == (["step1", "step2", "x"], "interrupted")


async def test_update_state_needs_a_graph(server: Server) -> None:
    tid = (await server.sync(lambda c: c.threads.create()))["thread_id"]
    with pytest.raises(BadRequestError, match=f"Thread '{tid}' has no assigned graph ID"):
        await server.sync(lambda c: c.threads.update_state(tid, {"topic": "x"}))
    assert await server.sync(lambda c: c.threads.get_state(tid)) == EMPTY_STATE
    await server.sync(lambda c: c.threads.update(tid, metadata={"graph_id": "agent"}))
    await server.sync(lambda c: c.threads.update_state(tid, {"topic": "x"}, as_node="refine_topic"))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["values"], thread["status"]) == ({"topic": "x"}, "interrupted")


async def test_patch_state_is_method_not_allowed(server: Server) -> None:
    """§13.21: no checkpointer can edit a stored checkpoint's metadata in place."""
    tid = await ran(server, "agent", {"topic": "dogs"})
    before = await history(server, tid)
    async with server.http() as h:
        r = await h.patch(f"/threads/{tid}/state", json={"metadata": {"x": 1}})
    assert (r.status_code, r.json()) == (405, {"detail": "Method Not Allowed"})
    assert set(r.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
    assert await history(server, tid) == before


# -- factory graphs built with the assistant's config ---------------------------------------

CONFIGURED_GRAPH = """
from typing import TypedDict

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    text: str


def make_graph(config):
    name = config["configurable"].get("node", "plain")

    def node(state):
        return {"text": state.get("text", "") + "|" + name}

    return StateGraph(State).add_node(name, node).add_edge(START, name).add_edge(name, END)
"""


@pytest.fixture
async def configured(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Server]:
    """A server with a factory graph whose node is named by ``configurable.node``."""
    (tmp_path / "configured.py").write_text(textwrap.dedent(CONFIGURED_GRAPH))
    settings = Settings(
        graphs=(GraphSpec(graph_id="configured", path="./configured.py:make_graph"),),
        base_dir=tmp_path,
        shutdown_grace=0.5,
    )
    async for s in start_server(nursery, settings):
        yield s


async def test_factory_state_uses_the_assistant_config(configured: Server) -> None:
    server = configured
    assistant_id = str(uuid.uuid4())
    await server.core.storage.assistants.create(
        Assistant(
            assistant_id=assistant_id,
            graph_id="configured",
            config={"configurable": {"node": "custom"}},
        )
    )
    tid = await ran(server, assistant_id, {"text": "a"})
    state = await server.sync(lambda c: c.threads.get_state(tid))
    assert state["values"] == {"text": "a|custom"}
    # ``custom`` exists only in the graph built with the assistant's config
    await server.sync(lambda c: c.threads.update_state(tid, {"text": "b"}, as_node="custom"))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["values"], thread["status"]) == ({"text": "b"}, "idle")
    with pytest.raises(BadRequestError, match="Node plain does not exist"):
        await server.sync(lambda c: c.threads.update_state(tid, {"text": "c"}, as_node="plain"))


# -- history --------------------------------------------------------------------------------


async def test_history_get_and_post_forms(server: Server) -> None:
    tid = await ran(server, "agent", {"topic": "dogs"})
    rows = await history(server, tid)
    assert [(r["metadata"]["step"], r["metadata"]["source"], r["next"]) for r in rows] == [
        (2, "loop", []),
        (1, "loop", ["generate_joke"]),
        (0, "loop", ["refine_topic"]),
        (-1, "input", ["__start__"]),
    ]
    ids = [r["checkpoint_id"] for r in rows]
    async with server.http() as h:
        r = await h.get(f"/threads/{tid}/history")
        assert [x["checkpoint_id"] for x in r.json()] == ids[:1]  # GET defaults to 1
        r = await h.get(f"/threads/{tid}/history", params={"limit": 10, "before": ids[1]})
        assert [x["checkpoint_id"] for x in r.json()] == ids[2:]
        for limit in ("abc", "1.5"):
            r = await h.get(f"/threads/{tid}/history", params={"limit": limit})
            assert (r.status_code, r.json()) == (422, {"detail": f"Invalid limit {limit}"})
        r = await h.get(f"/threads/{tid}/history", params={"limit": 0})
        assert r.status_code == 422
        # §13.2: every spelling of ``before``
        for before in (
            ids[0],
            {"checkpoint_id": ids[0]},
            {"configurable": {"checkpoint_id": ids[0]}},
            {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": ids[0]},
        ):
            r = await h.post(f"/threads/{tid}/history", json={"limit": 2, "before": before})
            assert [x["checkpoint_id"] for x in r.json()] == ids[1:3], before
        r = await h.post(f"/threads/{tid}/history", json={"before": 5})
        assert r.status_code == 422
        assert r.json()["detail"].startswith("$.before")
        r = await h.post(f"/threads/{tid}/history", json={"limit": 1001})
        assert r.status_code == 422
        r = await h.post(f"/threads/{tid}/history", json={})
        assert [x["checkpoint_id"] for x in r.json()] == ids[:1]
    loops = await history(server, tid, metadata={"source": "loop"})
    assert [x["checkpoint_id"] for x in loops] == ids[:3]
    step_one = await history(server, tid, metadata={"step": 1})
    assert [x["checkpoint_id"] for x in step_one] == ids[1:2]
    exact = await history(server, tid, checkpoint={"checkpoint_id": ids[2]})
    assert [x["checkpoint_id"] for x in exact] == ids[2:3]
    assert exact[0] == rows[2]


async def test_history_equals_the_checkpoints_and_debug_streams(server: Server) -> None:
    async def go(c: Any) -> tuple[str, list[Any]]:
        tid = (await c.threads.create())["thread_id"]
        parts = await collect(
            c.runs.stream(tid, "subgraph", input={"foo": "x"}, stream_mode=["checkpoints", "debug"])
        )
        return tid, parts

    tid, parts = await server.aio(go)
    streamed = {
        p.data["config"]["configurable"]["checkpoint_id"]: p.data
        for p in parts
        if p.event == "checkpoints"
    }
    debug = {
        p.data["payload"]["checkpoint"]["checkpoint_id"]: p.data["payload"]
        for p in parts
        if p.event == "debug" and p.data["type"] == "checkpoint"
    }
    rows = {r["checkpoint_id"]: r for r in await history(server, tid)}
    assert streamed.keys() == debug.keys() == rows.keys()
    assert len(rows) == 4
    for checkpoint_id, row in rows.items():
        for payload in (streamed[checkpoint_id], debug[checkpoint_id]):
            assert payload["values"] == row["values"]
            assert payload["next"] == row["next"]
            # the stream carries the loop's metadata; storage adds the run's (graph_id, run_id...)
            assert payload["metadata"].items() <= row["metadata"].items()
            assert row["metadata"]["graph_id"] == "subgraph"
            assert _ref(payload["config"]) == row["checkpoint"]
            assert _ref(payload["parent_config"]) == row["parent_checkpoint"]
            assert [_task(t) for t in payload["tasks"]] == [_task(t) for t in row["tasks"]]
            for sent, stored in zip(payload["tasks"], row["tasks"], strict=True):
                if "result" in sent:  # streamed only once the task has finished
                    assert sent["result"] == stored["result"]
        assert debug[checkpoint_id]["checkpoint"] == row["checkpoint"]
        assert debug[checkpoint_id]["parent_checkpoint"] == row["parent_checkpoint"]
    subgraph_tasks = [t for r in rows.values() for t in r["tasks"] if t["name"] == "node_2"]
    assert subgraph_tasks
    for task in subgraph_tasks:
        assert task["checkpoint"]["checkpoint_ns"] == f"node_2:{task['id']}"


def _ref(config: Any) -> Any:
    if config is None:
        return None
    conf = config["configurable"]
    return {k: conf[k] for k in ("checkpoint_id", "thread_id", "checkpoint_ns")}


def _task(task: dict[str, Any]) -> dict[str, Any]:
    """What a streamed task and a history task both carry."""
    out = {"id": task["id"], "name": task["name"], "interrupts": task.get("interrupts", [])}
    ref = task.get("checkpoint") or task.get("state")  # history: a ref; stream: a config
    if isinstance(ref, dict):
        out["checkpoint_ns"] = ref.get("configurable", ref)["checkpoint_ns"]
    return out


async def test_history_reads_each_checkpoint_through_its_own_graph(server: Server) -> None:
    """§13.17: a thread that ran ``agent`` then ``test_agent`` keeps ``agent``'s values in
    ``agent``'s checkpoints."""
    tid = await ran(server, "agent", {"topic": "dogs"})
    agent_head = (await history(server, tid))[0]
    await server.sync(
        lambda c: c.runs.wait(tid, "test_agent", input={"foo": None, "bar": "checked", "baz": None})
    )
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["metadata"]["graph_id"] == "test_agent"
    assert thread["values"] == {"foo": "checked", "bar": "checked", "baz": "checked"}
    rows = await history(server, tid)
    graphs = [r["metadata"]["graph_id"] for r in rows]
    assert graphs == ["test_agent"] * 5 + ["agent"] * 4
    assert rows[5] == agent_head
    assert rows[5]["values"] == JOKE
    at = await server.sync(
        lambda c: c.threads.get_state(tid, checkpoint_id=agent_head["checkpoint_id"])
    )
    assert at == agent_head
