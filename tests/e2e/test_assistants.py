"""The assistants API through the official SDK (contract §2, §1.6-1.8, §11, §13.8); raw
httpx where the wire itself is under test (status codes, pagination headers, query
encodings, validation errors that must change nothing)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import attrs
import pytest
import trio
from langgraph_sdk.errors import BadRequestError, ConflictError, NotFoundError

from tests.conftest import example_settings, start_server
from tests.sdk import Server, poll
from triograph.core.infra.graphs import system_assistant_id
from triograph.core.infra.models import Assistant
from triograph.core.infra.settings import GraphSpec

T = TypeVar("T")

ASSISTANT_KEYS = {
    "assistant_id",
    "graph_id",
    "config",
    "context",
    "metadata",
    "name",
    "created_at",
    "updated_at",
    "version",
    "description",
}
VERSION_KEYS = ASSISTANT_KEYS - {"updated_at"}
SCHEMA_KEYS = {"input_schema", "output_schema", "state_schema", "config_schema", "context_schema"}
BAD_UUID = "Invalid assistant ID: must be a UUID"
BOTH = "Cannot specify both configurable and context."
SERVED = (
    "['agent', 'chat', 'ctxgraph', 'custom', 'erroring', 'factory', 'interrupter', 'slow', "
    "'subgraph', 'subint', 'test_agent', 'tooluser']"
)


# -- helpers ----------------------------------------------------------------------------------


async def call(server: Server, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with server.http() as h:
        r = await h.request(method, path, **kwargs)
    return r.status_code, (r.json() if r.content else None)


async def create(server: Server, graph_id: str = "agent", **kwargs: Any) -> dict[str, Any]:
    return await server.sync(lambda c: c.assistants.create(graph_id, **kwargs))


async def versions_of(server: Server, aid: str) -> list[int]:
    rows = await server.sync(lambda c: c.assistants.get_versions(aid, limit=100))
    return [row["version"] for row in rows]


def node_ids(drawing: dict[str, Any]) -> set[str]:
    return {node["id"] for node in drawing["nodes"]}


@pytest.fixture
async def configured(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """A server with ``LANGGRAPH_CONFIG`` defaults and the ``shaped`` factory graph."""
    settings = example_settings()
    shaped = GraphSpec(graph_id="shaped", path="./graphs/shaped.py:make_graph")
    settings = attrs.evolve(
        settings,
        graphs=(*settings.graphs, shaped),
        graph_configs={
            "ctxgraph": {"tags": ["sys"], "context": {"user": "carol"}},
            "shaped": {"configurable": {"steps": ["first", "second"]}},
        },
    )
    async for server in start_server(nursery, settings):
        yield server


# -- create and get ---------------------------------------------------------------------------


async def test_system_assistants(server: Server) -> None:
    found = await server.sync(lambda c: c.assistants.search(limit=100))
    by_graph = {a["graph_id"]: a for a in found}
    assert sorted(by_graph) == sorted(server.core.graphs.graphs)
    agent = by_graph["agent"]
    assert agent["assistant_id"] == "fe096781-5601-53d2-b2f6-0d3403f7e9ca"
    assert set(agent) == ASSISTANT_KEYS
    assert (agent["config"], agent["context"]) == ({}, {})
    assert agent["metadata"] == {"created_by": "system"}
    assert (agent["name"], agent["version"], agent["description"]) == ("agent", 1, None)
    assert by_graph["ctxgraph"]["name"] == "ctxgraph"  # the compiled graph's own name


async def test_create_defaults_and_get(server: Server) -> None:
    created = await create(server, metadata={"owner": "me", "assistant_id": "x", "run_id": "y"})
    assert set(created) == ASSISTANT_KEYS
    assert uuid.UUID(created["assistant_id"]).version == 4
    assert created["graph_id"] == "agent"
    assert (created["name"], created["description"], created["version"]) == ("Untitled", None, 1)
    assert (created["config"], created["context"]) == ({}, {})
    assert created["metadata"] == {"owner": "me"}  # reserved keys stripped (§1.6)
    assert created["created_at"] == created["updated_at"]
    got = await server.aio(lambda c: c.assistants.get(created["assistant_id"]))
    assert got == created


async def test_create_with_id_and_if_exists(server: Server) -> None:
    aid = str(uuid.uuid4())
    first = await create(server, assistant_id=aid.upper(), name="first", description="d")
    assert (first["assistant_id"], first["name"], first["description"]) == (aid, "first", "d")
    with pytest.raises(ConflictError) as info:
        await create(server, assistant_id=aid, name="second")
    assert info.value.message == f"Assistant {aid} already exists"
    same = await create(server, "ctxgraph", assistant_id=aid, name="third", if_exists="do_nothing")
    assert same == first
    status, explicit = await call(
        server,
        "POST",
        "/assistants",
        json={"graph_id": "agent", "assistant_id": aid, "if_exists": "raise"},
    )
    assert (status, explicit) == (409, {"detail": f"Assistant {aid} already exists"})


async def test_config_and_context_mirror(server: Server) -> None:
    """§1.7: one given, both returned; reserved keys stripped from both (§1.6)."""
    from_config = await create(server, config={"tags": ["t"], "configurable": {"x": 1}})
    assert from_config["config"] == {"tags": ["t"], "configurable": {"x": 1}}
    assert from_config["context"] == {"x": 1}
    from_context = await create(server, context={"user": "bob", "langgraph_auth_user": "evil"})
    assert from_context["context"] == {"user": "bob"}
    assert from_context["config"] == {"configurable": {"user": "bob"}}
    config = {"metadata": {"thread_id": "t", "keep": 1}, "recursion_limit": 5}
    plain = await create(server, config=config)
    assert plain["config"] == {"metadata": {"keep": 1}, "recursion_limit": 5}
    assert plain["context"] == {}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"graph_id": "agent", "assistant_id": "nope"}, 422, BAD_UUID),
        ({"graph_id": "nope"}, 404, f"Graph 'nope' not found. Expected one of: {SERVED}"),
        ({}, 422, "$.graph_id: required field missing"),
        ({"graph_id": 7}, 422, "$.graph_id: expected a string, got int"),
        (
            {"graph_id": "agent", "config": {"tags": "t"}},
            422,
            "$.config.tags: expected a list of strings",
        ),
        (
            {"graph_id": "agent", "config": {"recursion_limit": "5"}},
            422,
            "$.config.recursion_limit: expected an integer",
        ),
        (
            {"graph_id": "agent", "config": {"configurable": []}},
            422,
            "$.config.configurable: expected an object",
        ),
        ({"graph_id": "agent", "context": "x"}, 422, "$.context: expected an object, got str"),
        (
            {"graph_id": "agent", "if_exists": "replace"},
            422,
            "$.if_exists: got 'replace'; allowed: 'raise', 'do_nothing'",
        ),
        (
            {"graph_id": "agent", "config": {"configurable": {"a": 1}}, "context": {"b": 2}},
            400,
            BOTH,
        ),
    ],
)
async def test_create_rejects_and_stores_nothing(
    server: Server, body: dict[str, Any], status: int, detail: str
) -> None:
    before = await server.sync(lambda c: c.assistants.count())
    got_status, got = await call(server, "POST", "/assistants", json=body)
    assert got_status == status
    assert got["detail"].startswith(detail)
    assert await server.sync(lambda c: c.assistants.count()) == before


async def test_create_both_configurable_and_context(server: Server) -> None:
    with pytest.raises(BadRequestError) as info:
        await create(server, config={"configurable": {"a": 1}}, context={"b": 2})
    assert info.value.message.startswith(BOTH)


async def test_get_unknown_and_malformed(server: Server) -> None:
    missing = str(uuid.uuid4())
    assert await call(server, "GET", f"/assistants/{missing}") == (
        404,
        {"detail": f"Assistant {missing} not found"},  # which one: the official says "Not Found"
    )
    assert await call(server, "GET", "/assistants/agent") == (422, {"detail": BAD_UUID})


async def test_assistant_of_an_unserved_graph_is_hidden(server: Server) -> None:
    """An assistant stored by a server that had another graph does not exist here."""
    ghost = Assistant(assistant_id=str(uuid.uuid4()), graph_id="gone", metadata={"ghost": True})
    await server.core.storage.assistants.create(ghost)
    aid = ghost.assistant_id
    assert (await call(server, "GET", f"/assistants/{aid}"))[0] == 404
    assert await server.sync(lambda c: c.assistants.search(metadata={"ghost": True})) == []
    assert await server.sync(lambda c: c.assistants.count(metadata={"ghost": True})) == 0
    for method, path in [("PATCH", ""), ("POST", "/versions"), ("GET", "/schemas")]:
        status, _ = await call(server, method, f"/assistants/{aid}{path}", json={})
        assert status == 404, path


# -- patch and versions -----------------------------------------------------------------------


async def test_patch_makes_a_version_every_time(server: Server) -> None:
    made = await create(
        server, config={"tags": ["t1"], "configurable": {"x": 1}}, metadata={"a": 1}, name="n"
    )
    aid = made["assistant_id"]
    empty = await server.sync(lambda c: c.assistants.update(aid))
    assert empty["version"] == 2
    assert empty["updated_at"] > made["updated_at"]
    assert {k: empty[k] for k in ("config", "context", "metadata", "name")} == {
        k: made[k] for k in ("config", "context", "metadata", "name")
    }
    replaced = await server.sync(
        lambda c: c.assistants.update(aid, config={"configurable": {"x": 2}})
    )
    assert replaced["config"] == {"configurable": {"x": 2}}  # tags gone: config replaces
    assert replaced["context"] == {"x": 2}
    merged = await server.aio(lambda c: c.assistants.update(aid, metadata={"b": 2, "run_id": "r"}))
    assert merged["metadata"] == {"a": 1, "b": 2}
    ctx = await server.sync(lambda c: c.assistants.update(aid, context={"y": 3}))
    assert (ctx["config"], ctx["context"]) == ({"configurable": {"y": 3}}, {"y": 3})
    tagged = await server.sync(lambda c: c.assistants.update(aid, config={"tags": ["t2"]}))
    assert tagged["config"] == {"tags": ["t2"], "configurable": {"y": 3}}  # context kept
    cleared = await server.sync(lambda c: c.assistants.update(aid, context={}))
    assert (cleared["config"], cleared["context"]) == ({"tags": ["t2"]}, {})
    moved = await server.sync(
        lambda c: c.assistants.update(aid, graph_id="ctxgraph", name="m", description="d")
    )
    assert (moved["graph_id"], moved["name"], moved["description"]) == ("ctxgraph", "m", "d")
    assert moved["version"] == 8
    assert await server.sync(lambda c: c.assistants.get(aid)) == moved
    assert await versions_of(server, aid) == [8, 7, 6, 5, 4, 3, 2, 1]


async def test_patch_rejects_and_changes_nothing(server: Server) -> None:
    aid = (await create(server, context={"k": 1}))["assistant_id"]
    path = f"/assistants/{aid}"
    rejected = [
        ({"graph_id": "nope"}, 404, f"Graph 'nope' not found. Expected one of: {SERVED}"),
        ({"config": {"tags": [1]}}, 422, "$.config.tags: expected a list of strings"),
        ({"metadata": []}, 422, "$.metadata: expected an object, got list"),
        ({"name": 3}, 422, "$.name: expected a string, got int"),
    ]
    for body, status, detail in rejected:
        assert await call(server, "PATCH", path, json=body) == (status, {"detail": detail})
    status, both = await call(
        server, "PATCH", path, json={"config": {"configurable": {"a": 1}}, "context": {"b": 1}}
    )
    assert status == 400
    assert both["detail"].startswith(BOTH)
    assert (await call(server, "PATCH", path, content=b""))[0] == 422
    assert await versions_of(server, aid) == [1]
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as info:
        await server.sync(lambda c: c.assistants.update(unknown, name="x"))
    assert info.value.message == f"Assistant {unknown} not found"


async def test_versions_list(server: Server) -> None:
    aid = (await create(server, metadata={"stage": "draft"}, name="v1"))["assistant_id"]
    await server.sync(lambda c: c.assistants.update(aid, name="v2"))
    await server.sync(lambda c: c.assistants.update(aid, metadata={"stage": "final"}, name="v3"))
    rows = await server.sync(lambda c: c.assistants.get_versions(aid))
    assert [(r["version"], r["name"]) for r in rows] == [(3, "v3"), (2, "v2"), (1, "v1")]
    assert all(set(r) == VERSION_KEYS for r in rows)
    drafts = await server.aio(lambda c: c.assistants.get_versions(aid, metadata={"stage": "draft"}))
    assert [r["version"] for r in drafts] == [2, 1]
    page = await server.sync(lambda c: c.assistants.get_versions(aid, limit=1, offset=1))
    assert [r["version"] for r in page] == [2]
    path = f"/assistants/{aid}/versions"
    assert await call(server, "POST", path, json={"limit": 0}) == (
        422,
        {"detail": "$.limit: 0 is not between 1 and 1000"},
    )
    assert (await call(server, "POST", path, json={"offset": -1}))[0] == 422
    unknown = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as info:
        await server.sync(lambda c: c.assistants.get_versions(unknown))
    assert info.value.message == f"Assistant {unknown} not found"


async def test_set_latest_restores_everything(server: Server) -> None:
    """§13.8: graph and context come back too; the next patch numbers on from the highest."""
    v1 = await create(server, context={"user": "a"}, metadata={"v": 1}, name="one")
    aid = v1["assistant_id"]
    await server.sync(
        lambda c: c.assistants.update(
            aid,
            graph_id="ctxgraph",
            context={"user": "b"},
            metadata={"w": 2},
            name="two",
            description="second",
        )
    )
    back: dict[str, Any] = await server.sync(lambda c: c.assistants.set_latest(aid, 1))
    restored = ("graph_id", "config", "context", "metadata", "name", "description")
    assert {k: back[k] for k in restored} == {k: v1[k] for k in restored}
    assert back["version"] == 1
    assert await server.sync(lambda c: c.assistants.get(aid)) == back
    assert await versions_of(server, aid) == [2, 1]
    after = await server.sync(lambda c: c.assistants.update(aid, name="three"))
    assert (after["version"], after["graph_id"], after["context"]) == (3, "agent", {"user": "a"})
    with pytest.raises(NotFoundError) as info:
        await server.aio(lambda c: c.assistants.set_latest(aid, 99))
    assert info.value.message == f"Version 99 not found for assistant {aid}"
    path = f"/assistants/{aid}/latest"
    assert await call(server, "POST", path, json={}) == (
        422,
        {"detail": "$.version: required field missing"},
    )
    assert (await call(server, "POST", path, json={"version": "1"}))[0] == 422
    assert (await server.sync(lambda c: c.assistants.get(aid)))["version"] == 3


# -- delete -----------------------------------------------------------------------------------


async def test_delete(server: Server) -> None:
    aid = (await create(server))["assistant_id"]
    await server.sync(lambda c: c.assistants.update(aid, name="x"))
    assert await call(server, "DELETE", f"/assistants/{aid}") == (204, None)
    assert await call(server, "DELETE", f"/assistants/{aid}") == (
        404,
        {"detail": f"Assistant with ID {aid} not found"},
    )
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.assistants.get(aid))
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.assistants.get_versions(aid))
    assert await call(server, "DELETE", "/assistants/agent") == (422, {"detail": BAD_UUID})


async def thread_ran_by(server: Server, aid: str) -> str:
    thread = await server.sync(lambda c: c.threads.create())
    tid = thread["thread_id"]
    await server.sync(lambda c: c.runs.wait(tid, aid, input={"topic": "t"}))
    return tid  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("flag", "deletes"), [("1", True), ("true", True), ("0", False), ("false", False)]
)
async def test_delete_threads_query(server: Server, flag: str, deletes: bool) -> None:
    aid = (await create(server))["assistant_id"]
    tid = await thread_ran_by(server, aid)
    bystander = await thread_ran_by(server, "agent")
    assert await call(server, "DELETE", f"/assistants/{aid}?delete_threads={flag}") == (204, None)
    assert (await call(server, "GET", f"/threads/{tid}"))[0] == (404 if deletes else 200)
    assert (await call(server, "GET", f"/threads/{bystander}"))[0] == 200


async def test_delete_threads_through_sdk(server: Server) -> None:
    aid = (await create(server))["assistant_id"]
    owned = [await thread_ran_by(server, aid) for _ in range(2)]
    await server.aio(lambda c: c.assistants.delete(aid, delete_threads=True))
    for tid in owned:
        with pytest.raises(NotFoundError):
            await server.sync(lambda c, tid=tid: c.threads.get(tid))


async def test_delete_interrupts_runs_in_flight(server: Server) -> None:
    aid = (await create(server, "slow"))["assistant_id"]
    tid = (await server.sync(lambda c: c.threads.create()))["thread_id"]
    rid = (await server.sync(lambda c: c.runs.create(tid, aid, input={"delay": 30})))["run_id"]
    path = f"/threads/{tid}/runs/{rid}"
    await poll(lambda: call(server, "GET", path), lambda r: r[1]["status"] == "running")
    await server.sync(lambda c: c.assistants.delete(aid))
    run = await poll(lambda: call(server, "GET", path), lambda r: r[1]["status"] != "running")
    assert run[1]["status"] == "interrupted"
    assert (await call(server, "GET", f"/threads/{tid}"))[0] == 200  # threads kept by default


# -- search and count -------------------------------------------------------------------------


async def suite_of_three(server: Server) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Three assistants sharing a fresh ``suite`` metadata value; returns the filter too."""
    suite = {"suite": str(uuid.uuid4())}
    made = [
        await create(server, "agent", name="bravo bot", metadata={**suite, "n": 1}),
        await create(server, "ctxgraph", name="alpha helper", metadata={**suite, "n": 2}),
        await create(server, "agent", name="charlie", metadata={**suite, "n": 3}),
    ]
    return suite, made


async def test_search_filters_sort_and_select(server: Server) -> None:
    suite, made = await suite_of_three(server)
    newest_first = await server.sync(lambda c: c.assistants.search(metadata=suite))
    assert [a["assistant_id"] for a in newest_first] == [a["assistant_id"] for a in made[::-1]]
    assert newest_first[0] == made[2]
    by_name = await server.sync(
        lambda c: c.assistants.search(metadata=suite, sort_by="name", sort_order="asc")
    )
    assert [a["name"] for a in by_name] == ["alpha helper", "bravo bot", "charlie"]
    agents = await server.sync(lambda c: c.assistants.search(metadata=suite, graph_id="agent"))
    assert {a["name"] for a in agents} == {"bravo bot", "charlie"}
    named = await server.aio(lambda c: c.assistants.search(metadata=suite, name="HELP"))
    assert [a["name"] for a in named] == ["alpha helper"]
    nested = await server.sync(lambda c: c.assistants.search(metadata={**suite, "n": 3}))
    assert [a["name"] for a in nested] == ["charlie"]
    picked: Any = await server.sync(
        lambda c: c.assistants.search(metadata=suite, select=["assistant_id", "name"], limit=1)
    )
    assert picked == [{"assistant_id": made[2]["assistant_id"], "name": "charlie"}]


async def test_search_pagination_headers(server: Server) -> None:
    suite, _ = await suite_of_three(server)
    async with server.http() as h:
        first = await h.post("/assistants/search", json={"metadata": suite, "limit": 2})
        last = await h.post("/assistants/search", json={"metadata": suite, "limit": 2, "offset": 2})
        exact = await h.post("/assistants/search", json={"metadata": suite, "limit": 3})
    assert len(first.json()) == 2
    assert first.headers["x-pagination-next"] == "2"
    assert first.headers["x-pagination-total"] == "3"
    assert len(last.json()) == 1
    assert "x-pagination-next" not in last.headers
    assert last.headers["x-pagination-total"] == "3"
    assert "x-pagination-next" not in exact.headers
    paged = await server.sync(
        lambda c: c.assistants.search(metadata=suite, limit=2, response_format="object")
    )
    assert (len(paged["assistants"]), paged["next"]) == (2, "2")


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"limit": 0}, 422, "$.limit: 0 is not between 1 and 1000"),
        ({"limit": 1001}, 422, "$.limit: 1001 is not between 1 and 1000"),
        ({"offset": -1}, 422, "$.offset: -1 is not between 0 and 2147483647"),
        ({"select": ["name", "bogus"]}, 422, "$.select: invalid fields ['bogus']"),
        ({"sort_by": "bogus"}, 422, "$.sort_by: got 'bogus'"),
        ({"sort_order": "up"}, 422, "$.sort_order: got 'up'"),
        ({"metadata": "x"}, 422, "$.metadata: expected an object"),
        ({"graph_id": "nope"}, 404, "Graph 'nope' not found. Expected one of: "),
    ],
)
async def test_search_rejects(
    server: Server, body: dict[str, Any], status: int, detail: str
) -> None:
    got_status, got = await call(server, "POST", "/assistants/search", json=body)
    assert got_status == status
    assert got["detail"].startswith(detail)


async def test_count(server: Server) -> None:
    suite, _ = await suite_of_three(server)
    assert await server.sync(lambda c: c.assistants.count(metadata=suite)) == 3
    assert await server.aio(lambda c: c.assistants.count(metadata=suite, graph_id="agent")) == 2
    assert await server.sync(lambda c: c.assistants.count(metadata=suite, name="bot")) == 1
    assert await call(server, "POST", "/assistants/count", json={"metadata": suite}) == (200, 3)
    served = len(server.core.graphs.graphs)
    assert await server.sync(lambda c: c.assistants.count()) == served + 3
    status, _ = await call(server, "POST", "/assistants/count", json={"graph_id": "nope"})
    assert status == 404
    assert (await call(server, "POST", "/assistants/count", content=b""))[0] == 422


# -- the graph behind an assistant ------------------------------------------------------------


async def test_graph_drawing(server: Server) -> None:
    by_graph = await server.sync(lambda c: c.assistants.get_graph("agent"))
    aid = system_assistant_id("agent")
    assert await server.aio(lambda c: c.assistants.get_graph(aid)) == by_graph
    assert node_ids(by_graph) == {"__start__", "refine_topic", "generate_joke", "__end__"}
    assert {"source": "__start__", "target": "refine_topic"} in by_graph["edges"]
    for node in by_graph["nodes"]:
        assert "id" not in node.get("data", {})
    assert {"id": "refine_topic", "type": "runnable", "data": {"name": "refine_topic"}} in (
        by_graph["nodes"]
    )


async def test_graph_xray(server: Server) -> None:
    flat = await server.sync(lambda c: c.assistants.get_graph("subgraph"))
    assert "node_2" in node_ids(flat)
    deep = await server.sync(lambda c: c.assistants.get_graph("subgraph", xray=True))
    assert {"node_2:subgraph_node_1", "node_2:subgraph_node_2"} <= node_ids(deep)
    assert "node_2" not in node_ids(deep)
    for value, expanded in [("1", True), ("2", True), ("true", True), ("false", False)]:
        status, drawn = await call(server, "GET", f"/assistants/subgraph/graph?xray={value}")
        assert status == 200
        assert (node_ids(drawn) == node_ids(deep)) is expanded, value
    for value in ("0", "-1", "abc", "1.5"):
        got = await call(server, "GET", f"/assistants/subgraph/graph?xray={value}")
        assert got == (422, {"detail": "Invalid xray value"}), value


async def test_graph_unknown_and_malformed(server: Server) -> None:
    assert (await call(server, "GET", f"/assistants/{uuid.uuid4()}/graph"))[0] == 404
    assert await call(server, "GET", "/assistants/nope/graph") == (422, {"detail": BAD_UUID})


async def test_schemas(server: Server) -> None:
    aid = system_assistant_id("ctxgraph")
    schemas = await server.sync(lambda c: c.assistants.get_schemas(aid))
    assert set(schemas) == {"graph_id", *SCHEMA_KEYS}
    assert schemas["graph_id"] == "ctxgraph"
    assert schemas["input_schema"]["title"] == "Input"
    assert set(schemas["input_schema"]["properties"]) == {"question"}
    assert set(schemas["output_schema"]["properties"]) == {"answer", "seen"}
    assert set(schemas["state_schema"]["properties"]) == {"question", "answer", "seen"}
    context = schemas["context_schema"]
    assert context["title"] == "Context"
    assert context["properties"]["user"] == {
        "default": "anonymous",
        "title": "User",
        "type": "string",
    }
    assert schemas["config_schema"] == context  # configurable takes the context
    agent = await server.aio(lambda c: c.assistants.get_schemas(system_assistant_id("agent")))
    assert (agent["config_schema"], agent["context_schema"]) == ({}, None)
    assert set(agent["state_schema"]["properties"]) == {"topic", "joke"}
    assert await call(server, "GET", "/assistants/agent/schemas") == (422, {"detail": BAD_UUID})
    unknown = str(uuid.uuid4())
    assert await call(server, "GET", f"/assistants/{unknown}/schemas") == (
        404,
        {"detail": f"Assistant {unknown} not found"},
    )


async def test_subgraphs(server: Server) -> None:
    aid = system_assistant_id("subgraph")
    found = await server.sync(lambda c: c.assistants.get_subgraphs(aid))
    assert list(found) == ["node_2"]
    assert set(found["node_2"]) == SCHEMA_KEYS
    assert set(found["node_2"]["state_schema"]["properties"]) == {"foo", "bar"}
    one = await server.aio(lambda c: c.assistants.get_subgraphs(aid, namespace="node_2"))
    assert one == found
    assert await server.sync(lambda c: c.assistants.get_subgraphs(aid, namespace="nope")) == {}
    none = await server.sync(lambda c: c.assistants.get_subgraphs(system_assistant_id("agent")))
    assert none == {}
    sub = system_assistant_id("subint")
    for flag in ("1", "0", "true", "false"):
        status, got = await call(server, "GET", f"/assistants/{sub}/subgraphs?recurse={flag}")
        assert (status, list(got)) == (200, ["inner"]), flag
    status, bad = await call(server, "GET", f"/assistants/{sub}/subgraphs?recurse=maybe")
    assert status == 422
    assert "recurse" in bad["detail"]
    assert await call(server, "GET", "/assistants/subint/subgraphs") == (422, {"detail": BAD_UUID})


# -- system assistants from LANGGRAPH_CONFIG, factories ---------------------------------------


async def test_system_assistants_take_langgraph_config(configured: Server) -> None:
    ctx = await configured.sync(lambda c: c.assistants.get(system_assistant_id("ctxgraph")))
    assert ctx["config"] == {"tags": ["sys"], "configurable": {"user": "carol"}}
    assert ctx["context"] == {"user": "carol"}
    shaped = await configured.sync(lambda c: c.assistants.get(system_assistant_id("shaped")))
    assert shaped["context"] == {"steps": ["first", "second"]}
    answer = await configured.sync(lambda c: c.runs.wait(None, "ctxgraph", input={"question": "q"}))
    assert answer["answer"] == "carol asked q"
    agent = await configured.sync(lambda c: c.assistants.get(system_assistant_id("agent")))
    assert (agent["config"], agent["context"]) == ({}, {})


async def test_system_assistants_resync(configured: Server) -> None:
    """At start-up a stored system assistant gets its configured values back."""
    aid = system_assistant_id("ctxgraph")
    await configured.sync(
        lambda c: c.assistants.update(
            aid, context={"user": "zed"}, name="renamed", metadata={"m": 1}
        )
    )
    await configured.core.assistants.sync_system_assistants()
    synced = await configured.sync(lambda c: c.assistants.get(aid))
    assert synced["context"] == {"user": "carol"}
    assert synced["config"] == {"tags": ["sys"], "configurable": {"user": "carol"}}
    assert synced["name"] == "ctxgraph"
    assert synced["metadata"] == {"created_by": "system", "m": 1}  # the rest is left alone
    before = synced["updated_at"]
    await configured.core.assistants.sync_system_assistants()
    assert (await configured.sync(lambda c: c.assistants.get(aid)))["updated_at"] == before


async def test_factory_built_with_the_assistants_config(configured: Server) -> None:
    system = await configured.sync(lambda c: c.assistants.get_graph("shaped"))
    assert node_ids(system) == {"__start__", "first", "second", "__end__"}
    mine = await create(configured, "shaped", context={"steps": ["a", "b", "c"]})
    drawn = await configured.sync(lambda c: c.assistants.get_graph(mine["assistant_id"]))
    assert node_ids(drawn) == {"__start__", "a", "b", "c", "__end__"}
    schemas = await configured.aio(lambda c: c.assistants.get_schemas(mine["assistant_id"]))
    assert set(schemas["state_schema"]["properties"]) == {"trail"}
    result = await configured.sync(lambda c: c.runs.wait(None, mine["assistant_id"], input={}))
    assert result == {"trail": ["a", "b", "c"]}


# -- runs through an assistant ----------------------------------------------------------------


async def test_runs_use_the_assistants_context(server: Server) -> None:
    bob = (await create(server, "ctxgraph", context={"user": "bob"}))["assistant_id"]
    eve = (await create(server, "ctxgraph", config={"configurable": {"user": "eve"}}))[
        "assistant_id"
    ]
    ask = {"question": "hi"}
    assert (await server.sync(lambda c: c.runs.wait(None, bob, input=ask)))[
        "answer"
    ] == "bob asked hi"
    assert (await server.sync(lambda c: c.runs.wait(None, eve, input=ask)))[
        "answer"
    ] == "eve asked hi"
    dave = await server.sync(lambda c: c.runs.wait(None, bob, input=ask, context={"user": "dave"}))
    assert dave["answer"] == "dave asked hi"  # run-level context wins (§1.7)
    plain = await server.sync(lambda c: c.runs.wait(None, "ctxgraph", input=ask))
    assert plain["answer"] == "anonymous asked hi"  # no context: the schema's defaults


async def test_malformed_ids_everywhere(server: Server) -> None:
    for method, suffix in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/schemas"),
        ("GET", "/subgraphs"),
        ("GET", "/subgraphs/node_2"),
        ("POST", "/versions"),
        ("POST", "/latest"),
    ]:
        got = await call(server, method, f"/assistants/not-a-uuid{suffix}", json={"version": 1})
        assert got == (422, {"detail": BAD_UUID}), (method, suffix)
