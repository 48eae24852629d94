"""The threads API through the official SDK (contract §3, §13.1, 11, 16, 20): create (TTL,
supersteps), get, patch, delete, search, count, copy, prune, the TTL sweeper and the thread
status machine. Raw httpx where the wire itself is asserted (status codes, headers,
``Prefer``, query encodings) and for 4xx that must change nothing."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest
import trio
from langgraph_sdk.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    UnprocessableEntityError,
)

from tests.conftest import example_settings, start_server
from tests.sdk import Server, poll
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.resources import threads as threads_module

T = TypeVar("T")

WIRE_KEYS = {
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "status",
    "values",
    "interrupts",
    "error",
}
JOKE = {"topic": "dogs and cats", "joke": "This is a joke about dogs and cats"}
QUESTION = {"question": "name?"}


async def ran(server: Server, graph: str, payload: Any, **create: Any) -> str:
    """A new thread on which one run of ``graph`` with ``payload`` has finished."""

    def go(c: Any) -> str:
        tid: str = c.threads.create(**create)["thread_id"]
        c.runs.wait(tid, graph, input=payload, raise_error=False)
        return tid

    return await server.sync(go)


async def history_ids(server: Server, tid: str) -> list[str]:
    rows = await server.sync(lambda c: c.threads.get_history(tid, limit=100))
    return [row["checkpoint_id"] for row in rows]


async def checkpoint_count(server: Server, tid: str) -> int:
    """Root checkpoints of a thread, straight from the checkpointer (the thread may be gone)."""
    checkpointer = server.core.storage.checkpointer
    config: Any = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}

    async def count() -> int:
        return len([c async for c in checkpointer.alist(config)])

    return await server.core.bridge.call(count)


# -- create, get ----------------------------------------------------------------------------


async def test_fresh_thread_has_every_key_and_no_ttl(server: Server) -> None:
    metadata = {"assistant_id": "x", "graph_id": "y", "thread_id": "z", "run_id": "r", "keep": 1}
    thread = await server.sync(lambda c: c.threads.create(metadata=metadata))
    assert set(thread) == WIRE_KEYS
    assert thread["metadata"] == {"graph_id": "y", "keep": 1}
    assert (thread["status"], thread["values"], thread["interrupts"], thread["error"]) == (
        "idle",
        None,
        {},
        None,
    )
    assert uuid.UUID(thread["thread_id"]).version == 7
    got = await server.sync(lambda c: c.threads.get(thread["thread_id"]))
    assert got == thread
    with_ttl = await server.sync(lambda c: c.threads.get(thread["thread_id"], include=["ttl"]))
    assert with_ttl == {**thread, "ttl": None}


async def test_get_unknown_and_malformed(server: Server) -> None:
    missing = str(uuid.uuid4())
    async with server.http() as h:
        r = await h.get(f"/threads/{missing}")
        assert (r.status_code, r.json()) == (404, {"detail": f"Thread with ID {missing} not found"})
        r = await h.get("/threads/not-a-uuid")
        assert (r.status_code, r.json()) == (422, {"detail": "Invalid thread ID: must be a UUID"})
        tid = (await h.post("/threads", json={})).json()["thread_id"]
        r = await h.get(f"/threads/{tid}", params={"include": "ttl,bogus"})
        assert r.status_code == 422
        assert "bogus" in r.json()["detail"]
        count = (await h.post("/threads/count", json={})).json()
        r = await h.post("/threads", params={"include": "bogus"}, json={})
        assert r.status_code == 422
        assert (await h.post("/threads/count", json={})).json() == count
        r = await h.get(f"/threads/{tid}", params=[("include", "ttl")])  # the JS SDK's spelling
        assert r.json()["ttl"] is None
        assert (await h.head(f"/threads/{tid}")).status_code == 200


async def test_create_if_exists(server: Server) -> None:
    tid = str(uuid.uuid4())
    first = await server.sync(lambda c: c.threads.create(thread_id=tid, metadata={"v": 1}))
    assert first["thread_id"] == tid
    with pytest.raises(ConflictError, match=f"Thread with ID {tid} already exists"):
        await server.sync(lambda c: c.threads.create(thread_id=tid, metadata={"v": 2}))
    same = await server.sync(
        lambda c: c.threads.create(thread_id=tid, metadata={"v": 3}, if_exists="do_nothing")
    )
    assert same == first
    async with server.http() as h:
        r = await h.post("/threads", json={"thread_id": "nope"})
        assert (r.status_code, r.json()) == (422, {"detail": "Invalid thread ID: must be a UUID"})
        r = await h.post("/threads", json={"if_exists": "overwrite"})
        assert r.status_code == 422
        assert "$.if_exists" in r.json()["detail"]


async def test_create_with_ttl(server: Server) -> None:
    before = dt.datetime.now(dt.UTC)
    thread = await server.sync(lambda c: c.threads.create(ttl=30))
    assert "ttl" not in thread
    ttl = (await server.sync(lambda c: c.threads.get(thread["thread_id"], include=["ttl"])))["ttl"]
    assert (ttl["strategy"], ttl["ttl_minutes"]) == ("delete", 30)
    expires = dt.datetime.fromisoformat(ttl["expires_at"])
    assert before + dt.timedelta(minutes=30) <= expires <= before + dt.timedelta(minutes=31)
    kept = await server.sync(
        lambda c: c.threads.create(
            ttl={"ttl": 1.5, "strategy": "keep_latest"}, params={"include": "ttl"}
        )
    )
    assert (kept["ttl"]["strategy"], kept["ttl"]["ttl_minutes"]) == ("keep_latest", 1.5)

    count = await server.sync(lambda c: c.threads.count())
    async with server.http() as h:
        for ttl_body, field in (
            (60, "$.ttl"),  # a bare number is the SDK's job to wrap
            ({"ttl": 5, "strategy": "archive"}, "$.ttl.strategy"),
            ({"strategy": "delete"}, "$.ttl.ttl"),
            ({"ttl": 0}, "$.ttl.ttl"),
            ({"ttl": True}, "$.ttl.ttl"),
        ):
            r = await h.post("/threads", json={"ttl": ttl_body})
            assert r.status_code == 422, ttl_body
            assert r.json()["detail"].startswith(field), r.json()
    assert await server.sync(lambda c: c.threads.count()) == count


# -- supersteps -----------------------------------------------------------------------------


async def test_create_with_supersteps_replays_them(server: Server) -> None:
    supersteps = [
        {"updates": [{"values": QUESTION, "as_node": "__input__"}]},
        {"updates": [{"values": QUESTION, "as_node": "__start__"}]},
    ]
    thread = await server.sync(
        lambda c: c.threads.create(graph_id="interrupter", supersteps=supersteps)
    )
    tid = thread["thread_id"]
    assert thread["status"] == "interrupted"  # the replay left ``ask`` pending
    assert thread["values"] == QUESTION
    history = await server.sync(lambda c: c.threads.get_history(tid, limit=10))
    assert [(h["metadata"]["source"], h["next"]) for h in history] == [
        ("update", ["ask"]),
        ("input", ["__start__"]),
    ]
    # the thread continues like one a run left there
    out = await server.sync(lambda c: c.runs.wait(tid, "interrupter", input=None))
    assert out["__interrupt__"][0]["value"] == QUESTION
    out = await server.sync(lambda c: c.runs.wait(tid, "interrupter", command={"resume": "Bob"}))
    assert out == {**QUESTION, "answer": "Bob!"}


async def test_create_with_supersteps_command(server: Server) -> None:
    supersteps = [
        {"updates": [{"values": {"topic": "x"}, "as_node": "__input__"}]},
        {
            "updates": [
                {"values": None, "command": {"update": {"topic": "owls"}}, "as_node": "__start__"}
            ]
        },
        {"updates": [{"values": {"topic": "owls and cats"}, "as_node": "refine_topic"}]},
    ]
    thread = await server.sync(lambda c: c.threads.create(graph_id="agent", supersteps=supersteps))
    assert thread["values"] == {"topic": "owls and cats"}
    state = await server.sync(lambda c: c.threads.get_state(thread["thread_id"]))
    assert state["next"] == ["generate_joke"]
    assert thread["status"] == "interrupted"


async def test_failing_supersteps_create_nothing(server: Server) -> None:
    tid = str(uuid.uuid4())
    bad_node = [
        {"updates": [{"values": {"topic": "x"}, "as_node": "__input__"}]},
        {"updates": [{"values": {"topic": "y"}, "as_node": "nope"}]},
    ]
    async with server.http() as h:
        body = {"thread_id": tid, "metadata": {"graph_id": "agent"}, "supersteps": bad_node}
        r = await h.post("/threads", json=body)
        assert (r.status_code, r.json()) == (400, {"detail": "Node nope does not exist"})
        # without a graph there is nothing to replay with: 400 before anything is written
        r = await h.post("/threads", json={"thread_id": tid, "supersteps": bad_node[:1]})
        assert r.status_code == 400
        assert "has no assigned graph ID" in r.json()["detail"]
        r = await h.post(
            "/threads",
            json={"thread_id": tid, "metadata": {"graph_id": "agent"}, "supersteps": [{}]},
        )
        assert r.status_code == 422
        assert r.json()["detail"] == "$.supersteps[0].updates: required field missing"
        r = await h.post(
            "/threads",
            json={
                "thread_id": tid,
                "metadata": {"graph_id": "agent"},
                "supersteps": [{"updates": [{"values": {}}]}],
            },
        )
        assert r.json()["detail"] == "$.supersteps[0].updates[0].as_node: required field missing"
        for step, detail in (
            ({"updates": []}, "$.supersteps[0].updates: at least one update needed"),
            (
                {"updates": [{"values": 3, "as_node": "__input__"}]},
                "$.supersteps[0].updates[0].values: expected an object, an array or null, got int",
            ),
        ):
            body = {"thread_id": tid, "metadata": {"graph_id": "agent"}, "supersteps": [step]}
            r = await h.post("/threads", json=body)
            assert (r.status_code, r.json()) == (422, {"detail": detail})
        assert (await h.get(f"/threads/{tid}")).status_code == 404
    assert await checkpoint_count(server, tid) == 0


# -- patch, delete --------------------------------------------------------------------------


async def test_patch_merges_metadata_and_replaces_ttl(server: Server) -> None:
    created = await server.sync(
        lambda c: c.threads.create(metadata={"a": 1, "b": {"x": 1}}, ttl=10)
    )
    tid = created["thread_id"]
    patched = await server.sync(
        lambda c: c.threads.update(
            tid, metadata={"b": {"y": 2}, "c": 3, "run_id": "r"}, ttl={"ttl": 99}
        )
    )
    assert patched["metadata"] == {"a": 1, "b": {"y": 2}, "c": 3}  # shallow merge
    assert patched["updated_at"] > created["updated_at"]
    assert "ttl" not in patched
    ttl = (await server.sync(lambda c: c.threads.get(tid, include=["ttl"])))["ttl"]
    assert (ttl["ttl_minutes"], ttl["strategy"]) == (99, "delete")
    minimal = await server.sync(
        lambda c: cast(Any, c.threads).update(tid, metadata={"d": 4}, return_minimal=True)
    )
    assert minimal is None
    async with server.http() as h:
        r = await h.patch(
            f"/threads/{tid}", json={"metadata": {"e": 5}}, headers={"Prefer": "return=minimal"}
        )
        assert (r.status_code, r.content) == (204, b"")
        before = (await h.get(f"/threads/{tid}")).json()
        assert before["metadata"] == {"a": 1, "b": {"y": 2}, "c": 3, "d": 4, "e": 5}
        for bad in ({"metadata": "x"}, {"metadata": {"f": 6}, "ttl": {"ttl": -1}}):
            r = await h.patch(f"/threads/{tid}", json=bad)
            assert r.status_code == 422, bad
        assert (await h.get(f"/threads/{tid}")).json() == before
        r = await h.patch(f"/threads/{uuid.uuid4()}", json={"metadata": {}})
        assert r.status_code == 404


async def test_delete_cascades(server: Server) -> None:
    tid = await ran(server, "agent", {"topic": "dogs"})
    assert await checkpoint_count(server, tid) == 4
    await server.sync(lambda c: c.threads.delete(tid))
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.threads.get(tid))
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.runs.list(tid))
    assert await checkpoint_count(server, tid) == 0
    async with server.http() as h:
        r = await h.delete(f"/threads/{tid}")
        assert (r.status_code, r.json()) == (404, {"detail": f"Thread with ID {tid} not found"})


class Recorder:
    """Records the order of run ends and thread deletions (a plugin made for a test)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    @hookimpl
    def triograph_run_finished(self, run: Any) -> None:
        self.seen.append(("run finished", run.run_id))

    @hookimpl
    def triograph_thread_deleted(self, thread_id: str) -> None:
        self.seen.append(("thread deleted", thread_id))


@pytest.fixture
def recorder(server: Server) -> Iterator[Recorder]:
    plugin = Recorder()
    server.core.pm.register(plugin, name="threads-test-recorder")
    try:
        yield plugin
    finally:
        server.core.pm.unregister(plugin)


async def test_delete_interrupts_runs_in_flight(server: Server, recorder: Recorder) -> None:
    def start(c: Any) -> tuple[str, str]:
        tid = c.threads.create()["thread_id"]
        return tid, c.runs.create(tid, "slow", input={"delay": 5})["run_id"]

    tid, rid = await server.sync(start)
    await poll(
        lambda: server.sync(lambda c: c.runs.get(tid, rid)), lambda r: r["status"] == "running"
    )
    await server.sync(lambda c: c.threads.delete(tid))
    # the run ended (and wrote what it writes) before the thread and its checkpoints went
    assert recorder.seen == [("run finished", rid), ("thread deleted", tid)]
    assert await checkpoint_count(server, tid) == 0
    assert await server.core.storage.runs.get(rid) is None


# -- search, count ----------------------------------------------------------------------------


async def test_search_filters_sort_select_extract(server: Server) -> None:
    batch = str(uuid.uuid4())
    ids = []
    for n in range(3):
        thread = await server.sync(
            lambda c, n=n: c.threads.create(metadata={"batch": batch, "n": n, "tags": ["t"]})
        )
        ids.append(thread["thread_id"])
    done = await ran(server, "agent", {"topic": "dogs"}, metadata={"batch": batch, "n": 9})

    def search(**kw: Any) -> Callable[[Any], Any]:
        kw.setdefault("metadata", {"batch": batch})
        return lambda c: c.threads.search(**kw)

    rows = await server.sync(search())
    assert [r["thread_id"] for r in rows] == [done, *reversed(ids)]  # updated_at desc
    assert all(set(r) == WIRE_KEYS for r in rows)
    rows = await server.sync(search(sort_by="created_at", sort_order="asc"))
    assert [r["thread_id"] for r in rows] == [*ids, done]
    rows = await server.sync(search(status="idle", values={"topic": "dogs and cats"}))
    assert [r["thread_id"] for r in rows] == [done]
    rows = await server.sync(search(ids=[ids[0], done, str(uuid.uuid4())], sort_by="thread_id"))
    assert [r["thread_id"] for r in rows] == sorted([ids[0], done], reverse=True)
    rows = await server.sync(search(metadata={"batch": batch, "n": 1}))
    assert [r["thread_id"] for r in rows] == [ids[1]]

    rows = await server.sync(
        search(
            select=["thread_id", "status"],
            extract={
                "joke": "values.joke",
                "n": "metadata.n",
                "tag": "metadata.tags[-1]",
                "none": "values.joke[3]",
                "deep": "metadata.tags[5].x",
            },
            sort_by="created_at",
            sort_order="desc",
            limit=2,
        )
    )
    assert rows == [
        {
            "thread_id": done,
            "status": "idle",
            "extracted": {"joke": JOKE["joke"], "n": 9, "tag": None, "none": None, "deep": None},
        },
        {
            "thread_id": ids[2],
            "status": "idle",
            "extracted": {"joke": None, "n": 2, "tag": "t", "none": None, "deep": None},
        },
    ]


async def test_search_pagination_headers(server: Server) -> None:
    batch = str(uuid.uuid4())
    for n in range(5):
        await server.sync(lambda c, n=n: c.threads.create(metadata={"batch": batch, "n": n}))
    async with server.http() as h:
        pages = []
        for offset in (0, 2, 4):
            r = await h.post(
                "/threads/search",
                json={"metadata": {"batch": batch}, "limit": 2, "offset": offset},
            )
            assert r.status_code == 200
            assert r.headers["x-pagination-total"] == "5"
            pages.append([t["metadata"]["n"] for t in r.json()])
            if offset < 4:
                assert r.headers["x-pagination-next"] == str(offset + 2)
            else:
                assert "x-pagination-next" not in r.headers
    assert pages == [[4, 3], [2, 1], [0]]


async def test_search_and_count_reject_bad_input(server: Server) -> None:
    async with server.http() as h:
        for body, field in (
            ({"status": "sleeping"}, "$.status"),
            ({"sort_by": "name"}, "$.sort_by"),
            ({"sort_order": "up"}, "$.sort_order"),
            ({"select": ["thread_id", "secret"]}, "$.select"),
            ({"limit": 0}, "$.limit"),
            ({"limit": 1001}, "$.limit"),
            ({"offset": -1}, "$.offset"),
            ({"metadata": []}, "$.metadata"),
            ({"extract": {"a": "nothing.x"}}, "$.extract.a"),
            ({"extract": {"a": "values..x"}}, "$.extract.a"),
            ({"extract": {f"k{i}": "values.x" for i in range(11)}}, "$.extract"),
            ({"ids": ["nope"]}, "Invalid thread ID"),
        ):
            r = await h.post("/threads/search", json=body)
            assert r.status_code == 422, body
            assert r.json()["detail"].startswith(field), (body, r.json())
        r = await h.post("/threads/count", json={"status": "sleeping"})
        assert r.status_code == 422
        r = await h.post("/threads/search")
        assert (r.status_code, r.json()) == (422, {"detail": "Invalid JSON in request body"})


async def test_values_filter_with_threads_without_values(server: Server) -> None:
    """§13.1: a ``values`` filter is containment that never matches ``values: null``."""
    batch = str(uuid.uuid4())
    await server.sync(lambda c: c.threads.create(metadata={"batch": batch}))  # values null
    done = await ran(server, "agent", {"topic": "dogs"}, metadata={"batch": batch})
    found = await server.sync(lambda c: c.threads.search(values={"topic": "dogs and cats"}))
    assert done in [t["thread_id"] for t in found]
    assert await server.sync(lambda c: c.threads.count(values={"joke": JOKE["joke"]})) >= 1
    assert (
        await server.sync(
            lambda c: c.threads.count(metadata={"batch": batch}, values={"topic": "cats"})
        )
        == 0
    )
    assert await server.sync(lambda c: c.threads.count(metadata={"batch": batch})) == 2
    assert (
        await server.sync(lambda c: c.threads.count(metadata={"batch": batch}, status="idle")) == 2
    )


# -- copy -------------------------------------------------------------------------------------


async def test_copy_keeps_checkpoints_and_recomputes_status(server: Server) -> None:
    tid = await ran(server, "interrupter", QUESTION, metadata={"owner": "me"})
    source = await server.sync(lambda c: c.threads.get(tid))
    copy = await server.sync(lambda c: cast(Any, c.threads).copy(tid))  # typed None, is a Thread
    new = copy["thread_id"]
    assert new != tid
    assert set(copy) == WIRE_KEYS
    assert copy["metadata"] == source["metadata"]
    assert (copy["status"], copy["values"]) == ("interrupted", QUESTION)
    assert copy["interrupts"] == source["interrupts"]
    assert await history_ids(server, new) == await history_ids(server, tid)
    state = await server.sync(lambda c: c.threads.get_state(new))
    assert state["checkpoint"]["thread_id"] == new
    # the copy's checkpoint metadata names the copy, as on the official server
    old_history = await server.sync(lambda c: c.threads.get_history(tid))
    new_history = await server.sync(lambda c: c.threads.get_history(new))
    assert [h["metadata"] for h in new_history] == [
        {**(h["metadata"] or {}), "thread_id": new} for h in old_history
    ]
    assert [h["values"] for h in new_history] == [h["values"] for h in old_history]
    assert await server.sync(lambda c: c.runs.list(new)) == []
    # the copy lives on its own
    out = await server.sync(lambda c: c.runs.wait(new, "interrupter", command={"resume": "Al"}))
    assert out["answer"] == "Al!"
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "interrupted"
    assert (await server.sync(lambda c: c.threads.get(new)))["status"] == "idle"


async def test_copy_of_a_thread_interrupted_in_a_subgraph_resumes(server: Server) -> None:
    tid = await ran(server, "subint", {"foo": "a"})
    new = (await server.sync(lambda c: cast(Any, c.threads).copy(tid)))["thread_id"]
    nested = await server.sync(lambda c: c.threads.get_state(new, subgraphs=True))
    sub = nested["tasks"][0]["state"]
    assert (sub["values"], sub["metadata"]["thread_id"]) == ({"foo": "a|pre"}, new)
    out = await server.sync(lambda c: c.runs.wait(new, "subint", command={"resume": "x"}))
    assert out == {"foo": "a|pre|x|post"}


async def test_copy_unknown_or_malformed(server: Server) -> None:
    missing = str(uuid.uuid4())
    async with server.http() as h:
        count = (await h.post("/threads/count", json={})).json()
        r = await h.post(f"/threads/{missing}/copy")
        assert (r.status_code, r.json()) == (404, {"detail": f"Thread with ID {missing} not found"})
        r = await h.post("/threads/abc/copy")
        assert (r.status_code, r.json()) == (422, {"detail": "Invalid thread ID: must be a UUID"})
        assert (await h.post("/threads/count", json={})).json() == count


# -- prune ------------------------------------------------------------------------------------


async def test_prune_keep_latest_and_delete(server: Server) -> None:
    kept = await ran(server, "agent", {"topic": "dogs"})
    gone = await ran(server, "agent", {"topic": "owls"})
    latest = (await history_ids(server, kept))[0]
    missing = str(uuid.uuid4())
    result = await server.sync(
        lambda c: c.threads.prune([kept, missing, kept], strategy="keep_latest")
    )
    assert result == {"pruned_count": 1}
    assert await history_ids(server, kept) == [latest]
    thread = await server.sync(lambda c: c.threads.get(kept))
    assert (thread["status"], thread["values"]) == ("idle", JOKE)
    state = await server.sync(lambda c: c.threads.get_state(kept))
    assert state["values"] == JOKE
    # the pruned thread still runs from its latest checkpoint
    out = await server.sync(lambda c: c.runs.wait(kept, "agent", input={"topic": "elks"}))
    assert out["topic"] == "elks and cats"

    assert await server.sync(lambda c: c.threads.prune([gone, missing])) == {"pruned_count": 1}
    with pytest.raises(NotFoundError):
        await server.sync(lambda c: c.threads.get(gone))
    assert await checkpoint_count(server, gone) == 0
    assert await server.sync(lambda c: c.threads.prune([])) == {"pruned_count": 0}


async def test_prune_rejects_bad_input_and_changes_nothing(server: Server) -> None:
    tid = await ran(server, "agent", {"topic": "dogs"})
    async with server.http() as h:
        for body, field in (
            ({}, "$.thread_ids: required field missing"),
            ({"thread_ids": [tid], "strategy": "archive"}, "$.strategy"),
            ({"thread_ids": tid}, "$.thread_ids"),
            ({"thread_ids": [tid, "nope"]}, "Invalid thread ID"),
        ):
            r = await h.post("/threads/prune", json=body)
            assert r.status_code == 422, body
            assert r.json()["detail"].startswith(field), r.json()
    assert len(await history_ids(server, tid)) == 4


# -- TTL --------------------------------------------------------------------------------------


@pytest.fixture
async def sweeping(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    """A server whose TTL sweeper polls every 50 ms."""
    monkeypatch.setattr(threads_module, "TTL_SWEEP_INTERVAL", 0.05)
    async for s in start_server(nursery, example_settings(shutdown_grace=0.5)):
        yield s


async def expire(server: Server, tid: str) -> None:
    """Move a thread's TTL expiry into the past, straight in storage."""
    repo = server.core.storage.threads
    thread = await repo.get(tid)
    assert thread is not None
    assert thread.ttl is not None
    thread.ttl = {**thread.ttl, "expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)}
    await repo.update(thread)


async def test_ttl_delete(sweeping: Server) -> None:
    server = sweeping
    doomed = await ran(server, "agent", {"topic": "dogs"}, ttl={"ttl": 60, "strategy": "delete"})
    spared = await ran(server, "agent", {"topic": "dogs"}, ttl=60)
    await expire(server, doomed)

    async def exists(tid: str) -> bool:
        return await server.core.storage.threads.get(tid) is not None

    await poll(lambda: exists(doomed), lambda alive: not alive)
    assert await checkpoint_count(server, doomed) == 0
    assert await exists(spared)


async def test_ttl_keep_latest_prunes_and_rearms(sweeping: Server) -> None:
    server = sweeping
    tid = await ran(server, "agent", {"topic": "dogs"}, ttl={"ttl": 60, "strategy": "keep_latest"})
    latest = (await history_ids(server, tid))[0]
    await expire(server, tid)
    await poll(lambda: history_ids(server, tid), lambda ids: ids == [latest])
    thread = await server.sync(lambda c: c.threads.get(tid, include=["ttl"]))
    assert thread["values"] == JOKE
    rearmed = dt.datetime.fromisoformat(thread["ttl"]["expires_at"])
    assert rearmed > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=59)


async def test_ttl_skips_threads_with_runs_in_flight(server: Server) -> None:
    def start(c: Any) -> tuple[str, str]:
        tid = c.threads.create(ttl=60)["thread_id"]
        return tid, c.runs.create(tid, "slow", input={"delay": 0.5})["run_id"]

    tid, rid = await server.sync(start)
    await expire(server, tid)
    await server.core.threads.expire_due()  # one sweep while the run is in flight
    assert server.core.supervisor.in_flight(tid)
    assert (await server.sync(lambda c: c.runs.get(tid, rid)))["status"] in ("pending", "running")
    await server.sync(lambda c: c.runs.join(tid, rid))
    await server.core.threads.expire_due()
    assert await server.core.storage.threads.get(tid) is None


# -- status machine -------------------------------------------------------------------------


async def test_status_error_is_cleared_by_a_later_success(server: Server) -> None:
    tid = await ran(server, "erroring", {})
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "error"
    assert thread["error"] == {"error": "ValueError", "message": "boom from node"}
    await server.sync(lambda c: c.runs.wait(tid, "agent", input={"topic": "dogs"}))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["status"], thread["error"], thread["values"]) == ("idle", None, JOKE)


async def test_status_is_busy_while_a_run_is_in_flight(server: Server) -> None:
    def start(c: Any) -> tuple[str, str]:
        tid = c.threads.create()["thread_id"]
        return tid, c.runs.create(tid, "slow", input={"delay": 1.5})["run_id"]

    tid, rid = await server.sync(start)
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "busy"
    rows = await server.sync(lambda c: c.threads.search(ids=[tid], status="busy"))
    assert [r["thread_id"] for r in rows] == [tid]
    await server.sync(lambda c: c.runs.join(tid, rid))
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert (thread["status"], thread["values"]["log"]) == ("idle", ["step1", "step2"])


async def test_bad_requests_are_errors_the_sdk_maps(server: Server) -> None:
    with pytest.raises(UnprocessableEntityError):
        await server.sync(lambda c: c.threads.search(status="sleeping"))  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="Node nope does not exist"):
        await server.sync(
            lambda c: c.threads.create(
                graph_id="agent", supersteps=[{"updates": [{"values": {}, "as_node": "nope"}]}]
            )
        )
