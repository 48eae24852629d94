"""The storage contract (``core/infra/storage.py``), run against every registered backend.

The backends are the ones the default plugins and the installed third-party plugins
register, found as the app finds them. Each test opens its backend fresh with the backend's
own factory inside a real ``GraphBridge``, and drives it through the protocol: the metadata
repositories from Trio, the checkpointer and the store on the graph loop.

``memory`` and ``file`` (a database under ``tmp_path``) always run. ``postgres`` runs when
``TRIOGRAPH_TEST_POSTGRES`` names a server the tests may create databases on (``tests/pg.py``),
each test on a fresh database. Any other backend NAME runs when ``TRIOGRAPH_TEST_<NAME>``
gives its ``--storage`` spec, naming an empty database, and is skipped otherwise.
"""

from __future__ import annotations

import datetime as dt
import operator
import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypedDict

import attrs
import pytest
import trio
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import StateGraph

from tests import pg
from triograph.core.infra.graph_bridge import GraphBridge
from triograph.core.infra.models import Assistant, Cron, Run, Thread
from triograph.core.infra.plugin_manager import fill_registry, make_plugin_manager
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import AssistantChanged, Storage, StorageRegistry


def registered_backends() -> StorageRegistry:
    registry = StorageRegistry()
    fill_registry(make_plugin_manager(), "triograph_register_storage", registry)
    return registry


BACKENDS = registered_backends()
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@asynccontextmanager
async def backend_spec(name: str, tmp_path: pathlib.Path) -> AsyncIterator[str]:
    """The ``--storage`` spec of a new, empty database of backend ``name`` for one test."""
    if name == "memory":
        yield "memory"
    elif name == "file":
        yield f"file:{tmp_path / 'contract.sqlite'}"
    elif name == "postgres" and pg.ADMIN_DSN is not None:
        url = await trio.to_thread.run_sync(pg.fresh_database)
        try:
            yield url
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(pg.drop_database, url)
    else:
        variable = f"TRIOGRAPH_TEST_{name.upper()}"
        if variable not in os.environ:
            pytest.skip(f"the {name!r} backend runs when {variable} gives its storage spec")
        yield os.environ[variable]


@attrs.define
class Backend:
    """One backend under test: its factory, and the graph loop its LangGraph parts use."""

    name: str
    spec: str
    bridge: GraphBridge
    settings: Settings = attrs.Factory(Settings)

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Storage]:
        async with BACKENDS.get(self.name)(self.spec, self.settings) as storage:
            yield storage

    async def call(self, make: Callable[[], Any]) -> Any:
        return await self.bridge.call(make)


@pytest.fixture(params=BACKENDS.names())
async def backend(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Backend]:
    bridge = GraphBridge()
    async with backend_spec(request.param, tmp_path) as spec, bridge.open():
        yield Backend(request.param, spec, bridge)


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    async with backend.open() as opened:
        yield opened


def durable(backend: Backend) -> None:
    if backend.name == "memory":
        pytest.skip("the memory backend keeps nothing once closed")


def uid() -> str:
    return str(uuid.uuid4())


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def assistant(**fields: Any) -> Assistant:
    return Assistant(**{"assistant_id": uid(), "graph_id": "agent", **fields})


def thread(**fields: Any) -> Thread:
    return Thread(**{"thread_id": uid(), **fields})


def run(thread_id: str, **fields: Any) -> Run:
    return Run(**{"run_id": uid(), "thread_id": thread_id, "assistant_id": uid(), **fields})


def cron(assistant_id: str, **fields: Any) -> Cron:
    return Cron(
        **{"cron_id": uid(), "assistant_id": assistant_id, "schedule": "* * * * *", **fields}
    )


# -- assistants -------------------------------------------------------------------------------


async def test_assistant_records_and_versions(storage: Storage) -> None:
    repo = storage.assistants
    a = assistant(metadata={"v": 1}, config={"configurable": {"x": [1, 2]}}, name="First")
    assert await repo.create(a) is True
    assert await repo.create(assistant(assistant_id=a.assistant_id, name="Other")) is False
    assert await repo.get(a.assistant_id) == a  # the refused create wrote nothing
    assert await repo.get(uid()) is None

    got = await repo.get(a.assistant_id)
    assert got is not None
    got.name = "mutated"  # records are copies: nothing changes until update
    assert (await repo.get(a.assistant_id)) == a
    await repo.update(got)  # the row only: no new version
    assert [v.version for v in await repo.versions(a.assistant_id)] == [1]
    assert (await repo.get(a.assistant_id)).name == "mutated"  # type: ignore[union-attr]

    for n in (2, 3):
        stored = await repo.new_version(attrs.evolve(a, metadata={"v": n}, version=99))
        assert stored.version == n
    assert (await repo.get(a.assistant_id)).version == 3  # type: ignore[union-attr]
    versions = await repo.versions(a.assistant_id)
    assert [(v.version, v.metadata) for v in versions] == [
        (3, {"v": 3}),
        (2, {"v": 2}),
        (1, {"v": 1}),
    ]
    assert versions[-1].config == {"configurable": {"x": [1, 2]}}
    assert [v.version for v in await repo.versions(a.assistant_id, metadata={"v": 2})] == [2]
    assert [v.version for v in await repo.versions(a.assistant_id, limit=1, offset=1)] == [2]
    first = await repo.get_version(a.assistant_id, 1)
    assert first is not None
    assert (first.name, first.created_at) == ("First", a.updated_at)
    assert await repo.get_version(a.assistant_id, 4) is None


async def test_new_version_of_an_unknown_assistant_creates_it(storage: Storage) -> None:
    a = assistant()
    assert (await storage.assistants.new_version(a)).version == 1
    assert await storage.assistants.get(a.assistant_id) is not None


async def test_assistant_delete_takes_versions_and_crons(storage: Storage) -> None:
    a, other = assistant(), assistant()
    for each in (a, other):
        await storage.assistants.create(each)
    await storage.assistants.new_version(a)
    c, kept = cron(a.assistant_id), cron(other.assistant_id)
    for each in (c, kept):
        await storage.crons.create(each)
    assert await storage.assistants.delete(a.assistant_id) is True
    assert await storage.assistants.delete(a.assistant_id) is False
    assert await storage.assistants.get(a.assistant_id) is None
    assert await storage.assistants.versions(a.assistant_id) == []
    assert await storage.assistants.get_version(a.assistant_id, 1) is None
    assert await storage.crons.get(c.cron_id) is None
    assert await storage.crons.get(kept.cron_id) == kept


async def test_assistant_search(storage: Storage) -> None:
    repo = storage.assistants
    rows = [
        assistant(graph_id="agent", name="Alpha Bot", metadata={"team": {"name": "x"}, "n": 1}),
        assistant(graph_id="chat", name="beta", metadata={"team": {"name": "y"}}),
        assistant(graph_id="agent", name="Gamma ÉTÉ", metadata={"team": {"name": "x"}, "n": 2}),
        assistant(graph_id="other", name="beta"),
    ]
    for i, a in enumerate(rows):
        a.created_at = a.updated_at = at(i)
        await repo.create(a)
    ids = [a.assistant_id for a in rows]

    async def found(**kwargs: Any) -> tuple[list[str], int]:
        page, total = await repo.search(limit=10, **kwargs)
        return [a.assistant_id for a in page], total

    assert await found() == ([ids[3], ids[2], ids[1], ids[0]], 4)  # created_at, newest first
    assert await found(graph_ids=["agent", "chat"], sort_order="asc") == (ids[:3], 3)
    assert await found(graph_ids=[]) == ([], 0)
    assert await found(metadata={"team": {"name": "x"}}, sort_order="asc") == (
        [ids[0], ids[2]],
        2,
    )
    assert await found(metadata={"team": {}}) == ([ids[2], ids[1], ids[0]], 3)
    assert await found(metadata={"n": 2}) == ([ids[2]], 1)
    assert await found(name="BET", sort_order="asc") == ([ids[1], ids[3]], 2)
    assert await found(name="été") == ([ids[2]], 1)  # case-insensitive beyond ASCII
    # ties keep insertion order both ways
    assert await found(sort_by="name", sort_order="asc") == ([ids[0], ids[2], ids[1], ids[3]], 4)
    assert await found(sort_by="name", sort_order="desc") == ([ids[1], ids[3], ids[2], ids[0]], 4)
    assert await found(sort_by="graph_id", sort_order="asc") == (
        [ids[0], ids[2], ids[1], ids[3]],
        4,
    )
    page, total = await repo.search(sort_order="asc", limit=2, offset=1)
    assert ([a.assistant_id for a in page], total) == (ids[1:3], 4)
    assert await repo.search(sort_order="asc", limit=2, offset=10) == ([], 4)
    assert await repo.search(graph_ids=["agent"], limit=0) == ([], 2)


# -- threads ----------------------------------------------------------------------------------


async def test_thread_records(storage: Storage) -> None:
    repo = storage.threads
    ttl = {"strategy": "delete", "ttl_minutes": 5, "expires_at": at(5)}
    t = thread(
        metadata={"a": 1}, values={"messages": [{"type": "human", "content": "hi"}]}, ttl=ttl
    )
    t.interrupts = {"task": [{"value": "ask", "id": "1"}]}
    assert await repo.create(t) is True
    assert await repo.create(thread(thread_id=t.thread_id)) is False
    got = await repo.get(t.thread_id)
    assert got == t
    assert got is not None
    assert isinstance(got.ttl["expires_at"], dt.datetime)  # type: ignore[index]
    got.status, got.values, got.ttl = "busy", {"n": 1}, None
    assert await repo.get(t.thread_id) == t
    await repo.update(got)
    assert await repo.get(t.thread_id) == got
    await repo.update(thread())  # not there: nothing happens
    assert await repo.search(limit=0) == ([], 1)


async def test_thread_delete_takes_its_runs_and_crons(storage: Storage) -> None:
    a = assistant()
    await storage.assistants.create(a)
    t, other = thread(), thread()
    for each in (t, other):
        await storage.threads.create(each)
    r, kept_run = run(t.thread_id), run(other.thread_id)
    for each_run in (r, kept_run):
        await storage.runs.create(each_run)
    c, kept_cron = cron(a.assistant_id, thread_id=t.thread_id), cron(a.assistant_id)
    for each_cron in (c, kept_cron):
        await storage.crons.create(each_cron)
    assert await storage.threads.delete(t.thread_id) is True
    assert await storage.threads.delete(t.thread_id) is False
    assert await storage.threads.get(t.thread_id) is None
    assert await storage.runs.get(r.run_id) is None
    assert await storage.runs.for_thread(t.thread_id) == []
    assert await storage.crons.get(c.cron_id) is None
    assert await storage.runs.get(kept_run.run_id) == kept_run
    assert await storage.crons.get(kept_cron.cron_id) == kept_cron


async def test_thread_search(storage: Storage) -> None:
    repo = storage.threads
    rows = [
        thread(metadata={"user": "ann", "tags": ["a"]}, values={"topic": "cats", "n": 1}),
        thread(metadata={"user": "bob"}, status="busy", values={"topic": "dogs"}),
        thread(metadata={"user": "ann"}, status="busy"),  # no values
        thread(metadata={"user": "cy", "deep": {"a": {"b": None}}}, values={"topic": "cats"}),
    ]
    for i, t in enumerate(rows):
        t.created_at = at(i)
        t.updated_at = at(10 - i)
        t.state_updated_at = at(5)  # one value for all: ties
        await repo.create(t)
    ids = [t.thread_id for t in rows]

    async def found(**kwargs: Any) -> tuple[list[str], int]:
        page, total = await repo.search(**kwargs)
        return [t.thread_id for t in page], total

    assert await found() == (ids, 4)  # updated_at, newest first
    assert await found(sort_by="created_at") == (ids[::-1], 4)
    assert await found(sort_by="state_updated_at", sort_order="desc") == (ids, 4)
    assert await found(sort_by="status", sort_order="asc") == ([ids[1], ids[2], ids[0], ids[3]], 4)
    assert await found(ids=[ids[3], ids[0], uid()]) == ([ids[0], ids[3]], 2)
    assert await found(ids=[]) == ([], 0)
    assert await found(metadata={"user": "ann"}) == ([ids[0], ids[2]], 2)
    assert await found(metadata={"tags": ["a"]}) == ([ids[0]], 1)
    assert await found(metadata={"deep": {"a": {"b": None}}}) == ([ids[3]], 1)
    assert await found(metadata={"deep": {"a": {"c": None}}}) == ([], 0)
    assert await found(values={"topic": "cats"}) == ([ids[0], ids[3]], 2)
    assert await found(values={}) == (ids, 4)  # an empty filter matches threads without values
    assert await found(status="busy", metadata={"user": "ann"}) == ([ids[2]], 1)
    assert await found(status="busy", limit=1, offset=1) == ([ids[2]], 2)
    assert await found(values={"topic": "cats"}, limit=0) == ([], 2)


async def test_expired_threads_soonest_first(storage: Storage) -> None:
    def with_ttl(minutes: float | None) -> Thread:
        ttl = None if minutes is None else {"strategy": "delete", "ttl_minutes": 1}
        if minutes is not None:
            ttl["expires_at"] = at(minutes)  # type: ignore[index]
        return thread(ttl=ttl)

    rows = [with_ttl(3), with_ttl(None), with_ttl(1), with_ttl(10), with_ttl(1)]
    for t in rows:
        await storage.threads.create(t)
    expired = await storage.threads.expired(at(3))
    assert [t.thread_id for t in expired] == [
        rows[2].thread_id,
        rows[4].thread_id,
        rows[0].thread_id,
    ]
    assert [t.thread_id for t in await storage.threads.expired(at(3), limit=1)] == [
        rows[2].thread_id
    ]
    assert await storage.threads.expired(at(0)) == []


# -- runs -------------------------------------------------------------------------------------


async def test_run_records(storage: Storage) -> None:
    t = thread()
    await storage.threads.create(t)
    r = run(t.thread_id, kwargs={"input": {"x": [1, {"y": None}]}, "config": {"tags": ["a"]}})
    await storage.runs.create(r)
    assert await storage.runs.get(r.run_id) == r
    r.status = "running"
    assert (await storage.runs.get(r.run_id)).status == "pending"  # type: ignore[union-attr]
    await storage.runs.update(r)
    assert await storage.runs.get(r.run_id) == r
    await storage.runs.update(run(t.thread_id))  # not there: nothing happens
    assert await storage.runs.delete(r.run_id) is True
    assert await storage.runs.delete(r.run_id) is False
    assert await storage.runs.get(r.run_id) is None


async def test_a_run_stored_with_its_new_thread(storage: Storage) -> None:
    """A stateless run's thread and the run in one write; deleting the thread takes both."""
    t = thread(status="busy", metadata={"graph_id": "g"})
    r = run(t.thread_id)
    await storage.runs.create(r, thread=t)
    assert await storage.threads.get(t.thread_id) == t
    assert await storage.runs.get(r.run_id) == r
    assert [x.run_id for x in await storage.runs.for_thread(t.thread_id)] == [r.run_id]
    assert await storage.threads.delete(t.thread_id) is True
    assert await storage.runs.get(r.run_id) is None


@pytest.mark.parametrize("with_thread", [True, False])
async def test_a_run_stored_only_while_its_assistant_is_unchanged(
    storage: Storage, with_thread: bool
) -> None:
    """``runs.create(..., assistant=copy)`` stores the run (and its new thread) only while
    the assistant is stored as ``copy``; after an update, or once it is deleted, it writes
    nothing and raises ``AssistantChanged``."""
    a = assistant(created_at=at(0), updated_at=at(0))
    await storage.assistants.create(a)

    async def create(copy: Assistant) -> tuple[Thread, Run]:
        t = thread(status="busy")
        if not with_thread:
            await storage.threads.create(t)
        r = run(t.thread_id, assistant_id=a.assistant_id)
        try:
            await storage.runs.create(r, thread=t if with_thread else None, assistant=copy)
        except AssistantChanged:
            assert await storage.runs.get(r.run_id) is None
            assert (await storage.threads.get(t.thread_id) is None) is with_thread
            raise
        return t, r

    t, r = await create(attrs.evolve(a))
    assert await storage.runs.get(r.run_id) == r
    assert await storage.threads.get(t.thread_id) == t
    changed = await storage.assistants.new_version(
        attrs.evolve(a, name="changed", updated_at=at(1))
    )
    with pytest.raises(AssistantChanged):
        await create(attrs.evolve(a))
    await create(changed)
    await storage.assistants.delete(a.assistant_id)
    with pytest.raises(AssistantChanged):
        await create(changed)


async def test_runs_of_a_thread_and_run_search(storage: Storage) -> None:
    t, other = thread(), thread()
    for each in (t, other):
        await storage.threads.create(each)
    statuses = ["success", "pending", "running", "pending", "error"]
    rows = [run(t.thread_id, status=s, created_at=at(i)) for i, s in enumerate(statuses)]
    rows.append(run(other.thread_id, status="pending", created_at=at(2.5)))
    for r in reversed(rows):
        await storage.runs.create(r)
    ids = [r.run_id for r in rows]

    def run_ids(found: list[Run]) -> list[str]:
        return [r.run_id for r in found]

    assert run_ids(await storage.runs.for_thread(t.thread_id)) == ids[4::-1]  # newest first
    assert run_ids(await storage.runs.for_thread(t.thread_id, limit=2, offset=1)) == [
        ids[3],
        ids[2],
    ]
    assert run_ids(await storage.runs.for_thread(t.thread_id, status="pending")) == [ids[3], ids[1]]
    assert run_ids(await storage.runs.search(statuses=["pending"])) == [ids[1], ids[5], ids[3]]
    assert run_ids(
        await storage.runs.search(statuses=["pending", "running"], thread_id=t.thread_id)
    ) == [
        ids[1],
        ids[2],
        ids[3],
    ]
    assert run_ids(await storage.runs.search(run_ids=[ids[4], ids[0]])) == [ids[0], ids[4]]
    assert run_ids(await storage.runs.search(thread_id=other.thread_id)) == [ids[5]]
    assert await storage.runs.search(statuses=[]) == []
    assert run_ids(await storage.runs.search()) == [ids[0], ids[1], ids[2], ids[5], ids[3], ids[4]]


# -- authorization filters --------------------------------------------------------------------

#: metadata of the threads of :func:`test_filters_match_metadata`, by name
FILTERED = {
    "alice": {"owner": "alice", "tags": ["a", "b"], "n": 1},
    "bob": {"owner": "bob", "tags": ["b"], "n": 1.0},
    "cy": {"owner": "cy", "tags": "a", "n": True, "team": {"a": [1, 2], "b": None}},
    "dee": {"owner": None, "tags": [["a"], {"k": 1}], "n": "1", 'we"ird.key': "x"},
    "eve": {},
}
#: filter -> the threads it lets through
FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"owner": "alice"}, {"alice"}),
    ({"owner": {"$eq": "alice"}}, {"alice"}),
    ({"owner": "alice", "n": 1}, {"alice"}),
    ({"owner": None}, {"dee"}),  # there and null: not absent
    ({"n": 1}, {"alice", "bob", "cy"}),  # Python's ==: 1 == 1.0 == True, not "1"
    ({"n": "1"}, {"dee"}),
    ({"tags": {"$contains": "a"}}, {"alice"}),  # a list holding it: not the string "a"
    ({"tags": {"$contains": "b"}}, {"alice", "bob"}),
    ({"tags": {"$contains": ["a", "b"]}}, {"alice"}),
    ({"tags": {"$contains": []}}, {"alice", "bob", "dee"}),
    ({"tags": {"$contains": [["a"]]}}, {"dee"}),
    ({"tags": {"$contains": {"k": 1}}}, {"dee"}),
    ({"tags": ["b"]}, {"bob"}),
    ({"team": {"$eq": {"b": None, "a": [1, 2]}}}, {"cy"}),  # objects regardless of key order
    ({"team": {"$eq": {"a": [1, 2]}}}, set()),
    ({'we"ird.key': "x"}, {"dee"}),
    ({"$or": [{"owner": "alice"}, {"owner": "bob"}]}, {"alice", "bob"}),
    ({"$and": [{"n": 1}, {"tags": {"$contains": "b"}}]}, {"alice", "bob"}),
    ({"$or": [{"$and": [{"n": 1}, {"owner": "cy"}]}, {"owner": None}]}, {"cy", "dee"}),
    ({"missing": {"$contains": "a"}}, set()),
]


@pytest.mark.parametrize(("filters", "allowed"), FILTER_CASES)
async def test_filters_match_metadata(
    storage: Storage, filters: dict[str, Any], allowed: set[str]
) -> None:
    """Authorization filters mean the same on every backend: in searches and their totals,
    and on a get of each record."""
    names = {}
    for name, metadata in FILTERED.items():
        t = thread(metadata=metadata)
        names[t.thread_id] = name
        await storage.threads.create(t)
    page, total = await storage.threads.search(filters=filters, limit=10)
    assert ({names[t.thread_id] for t in page}, total) == (allowed, len(allowed))
    assert (await storage.threads.search(filters=filters, limit=0))[1] == len(allowed)
    for thread_id, name in names.items():
        got = await storage.threads.get(thread_id, filters=filters)
        assert (got is not None) == (name in allowed), name


async def test_what_filters_leave_out_is_absent(storage: Storage) -> None:
    """A record a filter leaves out cannot be read, changed, deleted or counted through
    it; one it lets through can. A run is filtered by its thread's metadata."""
    mine, theirs = {"owner": "alice"}, {"owner": "bob"}
    a = assistant(metadata=theirs)
    await storage.assistants.create(a)
    t = thread(metadata=theirs)
    await storage.threads.create(t)
    r = run(t.thread_id)
    await storage.runs.create(r)
    c = cron(a.assistant_id, metadata=theirs)
    await storage.crons.create(c)
    cases: list[tuple[Any, Any]] = [
        (storage.assistants, a),
        (storage.threads, t),
        (storage.crons, c),
        (storage.runs, r),
    ]
    for repo, record in cases:
        key = getattr(record, type(record).__name__.lower() + "_id")
        assert await repo.get(key, filters=mine) is None
        changed = attrs.evolve(record, updated_at=at(60))
        await repo.update(changed, filters=mine)
        assert await repo.get(key) == record  # unchanged
        assert await repo.delete(key, filters=mine) is False
        assert await repo.get(key, filters=theirs) == record
        await repo.update(changed, filters=theirs)
        assert await repo.get(key) == changed
    assert await storage.assistants.search(filters=mine) == ([], 0)
    assert (await storage.assistants.search(filters=theirs))[1] == 1
    assert await storage.crons.search(filters=mine) == ([], 0)
    assert (await storage.crons.search(filters=theirs))[1] == 1
    assert await storage.runs.search(filters=mine) == []
    assert [x.run_id for x in await storage.runs.search(filters=theirs)] == [r.run_id]
    assert await storage.runs.search(thread_id=t.thread_id, filters=mine) == []
    assert await storage.runs.delete(r.run_id, filters=theirs) is True
    assert await storage.crons.delete(c.cron_id, filters=theirs) is True
    assert await storage.threads.delete(t.thread_id, filters=theirs) is True
    assert await storage.assistants.delete(a.assistant_id, filters=theirs) is True
    assert await storage.assistants.get(a.assistant_id) is None


# -- crons ------------------------------------------------------------------------------------


async def test_cron_records_and_search(storage: Storage) -> None:
    a, b = assistant(), assistant()
    for each in (a, b):
        await storage.assistants.create(each)
    t = thread()
    await storage.threads.create(t)
    rows = [
        cron(a.assistant_id, next_run_date=at(5), metadata={"k": "x"}, created_at=at(0)),
        cron(a.assistant_id, next_run_date=None, thread_id=t.thread_id, created_at=at(1)),
        cron(b.assistant_id, next_run_date=at(2), enabled=False, created_at=at(2)),
        cron(a.assistant_id, next_run_date=at(2), end_time=at(9), created_at=at(3)),
    ]
    for c in rows:
        await storage.crons.create(c)
    ids = [c.cron_id for c in rows]
    assert await storage.crons.get(ids[3]) == rows[3]

    async def found(**kwargs: Any) -> tuple[list[str], int]:
        page, total = await storage.crons.search(**kwargs)
        return [c.cron_id for c in page], total

    assert await found() == (ids[::-1], 4)
    assert await found(assistant_id=a.assistant_id, sort_order="asc") == (
        [ids[0], ids[1], ids[3]],
        3,
    )
    assert await found(thread_id=t.thread_id) == ([ids[1]], 1)
    assert await found(enabled=False) == ([ids[2]], 1)
    assert await found(enabled=True, metadata={"k": "x"}) == ([ids[0]], 1)
    # NULL first ascending, last descending; ties in insertion order
    assert await found(sort_by="next_run_date", sort_order="asc") == (
        [ids[1], ids[2], ids[3], ids[0]],
        4,
    )
    assert await found(sort_by="next_run_date", sort_order="desc") == (
        [ids[0], ids[2], ids[3], ids[1]],
        4,
    )
    assert await found(sort_by="end_time", sort_order="desc", limit=1) == ([ids[3]], 4)
    assert await found(assistant_id=b.assistant_id, limit=0) == ([], 1)

    changed = attrs.evolve(rows[2], enabled=True, metadata={"k": "y"})
    await storage.crons.update(changed)
    assert await storage.crons.get(ids[2]) == changed
    assert await storage.crons.delete(ids[2]) is True
    assert await storage.crons.delete(ids[2]) is False
    assert await storage.crons.search(limit=0) == ([], 3)


async def test_due_crons_soonest_first(storage: Storage) -> None:
    a = assistant()
    await storage.assistants.create(a)
    rows = [
        cron(a.assistant_id, next_run_date=at(3)),
        cron(a.assistant_id, next_run_date=at(1), enabled=False),  # disabled
        cron(a.assistant_id, next_run_date=None),
        cron(a.assistant_id, next_run_date=at(10)),  # in the future
        cron(a.assistant_id, next_run_date=at(1)),
        cron(a.assistant_id, next_run_date=at(3)),
    ]
    for c in rows:
        await storage.crons.create(c)
    due = [c.cron_id for c in await storage.crons.due(at(3))]
    assert due == [rows[4].cron_id, rows[0].cron_id, rows[5].cron_id]
    assert [c.cron_id for c in await storage.crons.due(at(3), limit=2)] == due[:2]
    assert await storage.crons.due(at(0)) == []


# -- store ------------------------------------------------------------------------------------


async def test_store(backend: Backend, storage: Storage) -> None:
    store = storage.store

    async def call(make: Callable[[], Any]) -> Any:
        return await backend.call(make)

    await call(lambda: store.aput(("docs", "a"), "one", {"n": 1, "kind": "x"}))
    await call(lambda: store.aput(("docs", "a"), "two", {"n": 2, "kind": "y"}))
    await call(lambda: store.aput(("docs", "b"), "plain", {"kind": "x"}))
    await call(lambda: store.aput(("other",), "k", {"v": True}))
    item = await call(lambda: store.aget(("docs", "a"), "one"))
    assert (tuple(item.namespace), item.key, item.value) == (
        ("docs", "a"),
        "one",
        {"n": 1, "kind": "x"},
    )
    assert item.created_at.utcoffset() == dt.timedelta(0)
    assert await call(lambda: store.aget(("docs", "a"), "absent")) is None

    async def keys(prefix: tuple[str, ...], **kwargs: Any) -> list[str]:
        return sorted(i.key for i in await call(lambda: store.asearch(prefix, **kwargs)))

    assert await keys(("docs",)) == ["one", "plain", "two"]
    assert await keys(()) == ["k", "one", "plain", "two"]
    assert await keys(("doc",)) == []
    assert await keys(("docs",), filter={"kind": "x"}) == ["one", "plain"]
    assert await keys(("docs",), filter={"n": {"$gt": 1}}) == ["two"]
    assert await keys(("docs",), filter={"n": {"$ne": 2}}) == ["one", "plain"]  # lacking n: not 2
    assert len(await keys(("docs",), limit=2)) == len(await keys(("docs",), offset=1)) == 2
    assert await call(lambda: store.alist_namespaces()) == [
        ("docs", "a"),
        ("docs", "b"),
        ("other",),
    ]
    assert await call(lambda: store.alist_namespaces(max_depth=1)) == [("docs",), ("other",)]
    assert await call(lambda: store.alist_namespaces(suffix=("b",))) == [("docs", "b")]

    await call(lambda: store.aput(("docs", "a"), "one", {"n": 10}))
    assert (await call(lambda: store.aget(("docs", "a"), "one"))).value == {"n": 10}
    await call(lambda: store.adelete(("docs", "b"), "plain"))
    await call(lambda: store.adelete(("docs", "b"), "plain"))  # absent: fine
    assert await call(lambda: store.alist_namespaces(prefix=("docs",))) == [("docs", "a")]


# -- checkpoints ------------------------------------------------------------------------------


class Steps(TypedDict):
    log: Annotated[list[str], operator.add]


def two_steps(storage: Storage) -> Any:
    builder = StateGraph(Steps)
    builder.add_node("first", lambda state: {"log": ["first"]})
    builder.add_node("second", lambda state: {"log": ["second"]})
    builder.add_edge("__start__", "first")
    builder.add_edge("first", "second")
    return builder.compile(checkpointer=storage.checkpointer)


async def graph_run(backend: Backend, graph: Any, thread_id: str, run_id: str) -> None:
    config = {
        "configurable": {"thread_id": thread_id, "run_id": run_id},
        "metadata": {"thread_id": thread_id},
    }
    await backend.call(lambda: graph.ainvoke({"log": [run_id]}, config))


async def history(backend: Backend, storage: Storage, thread_id: str) -> list[Any]:
    async def collect() -> list[Any]:
        config = {"configurable": {"thread_id": thread_id}}
        return [c async for c in storage.checkpointer.alist(config)]  # type: ignore[arg-type]

    return await backend.call(collect)  # type: ignore[no-any-return]


async def values(backend: Backend, graph: Any, thread_id: str) -> Any:
    state = await backend.call(lambda: graph.aget_state({"configurable": {"thread_id": thread_id}}))
    return state.values


async def test_checkpoints_deleted_by_run(backend: Backend, storage: Storage) -> None:
    graph, tid = two_steps(storage), uid()
    await graph_run(backend, graph, tid, "run-1")
    await graph_run(backend, graph, tid, "run-2")
    assert {c.metadata["run_id"] for c in await history(backend, storage, tid)} == {
        "run-1",
        "run-2",
    }
    await backend.call(lambda: storage.checkpointer.adelete_for_runs(["run-2", "absent"]))
    left = await history(backend, storage, tid)
    assert left
    assert {c.metadata["run_id"] for c in left} == {"run-1"}
    assert await values(backend, graph, tid) == {"log": ["run-1", "first", "second"]}


class Text(TypedDict):
    text: str
    parts: list[str]


#: strings Postgres's jsonb cannot hold as they are (a NUL), or that look escaped
NUL_TEXTS = ["a\x00b", "\x00", '\x1bnul:"x"', "\x1bnul:plain", "back\\u0000slash"]


async def test_nul_characters_are_stored_as_they_are(backend: Backend, storage: Storage) -> None:
    """Graph output may hold NUL characters (the API refuses them only in requests): records,
    checkpoints and store items keep them, in values and keys, and searches find them."""
    values_ = {"text": NUL_TEXTS, "k\x00": {"\x1bnul:k": "v"}}
    t = thread(metadata={"m": NUL_TEXTS[2]}, values=values_)
    t.interrupts = {"task": [{"value": "a\x00b", "id": "1"}]}
    await storage.threads.create(t)
    assert await storage.threads.get(t.thread_id) == t
    found, total = await storage.threads.search(values={"text": NUL_TEXTS})
    assert ([x.thread_id for x in found], total) == ([t.thread_id], 1)
    assert (await storage.threads.search(metadata={"m": NUL_TEXTS[2]}))[1] == 1
    assert (await storage.threads.search(filters={"m": NUL_TEXTS[2]}))[1] == 1
    assert (await storage.threads.search(metadata={"m": "\x1bnul:"}))[1] == 0
    r = run(t.thread_id, kwargs={"input": {"text": "a\x00b"}})
    await storage.runs.create(r)
    assert await storage.runs.get(r.run_id) == r

    builder = StateGraph(Text)
    builder.add_node("say", lambda state: {"text": state["text"] + "\x00", "parts": NUL_TEXTS})
    builder.add_edge("__start__", "say")
    graph = builder.compile(checkpointer=storage.checkpointer)
    config = {"configurable": {"thread_id": t.thread_id}}
    out = await backend.call(lambda: graph.ainvoke({"text": "a\x00b", "parts": []}, config))
    assert out == {"text": "a\x00b\x00", "parts": NUL_TEXTS}
    assert await values(backend, graph, t.thread_id) == out

    store = storage.store
    await backend.call(lambda: store.aput(("n",), "k", {"text": "a\x00b", "k\x00": NUL_TEXTS}))
    item = await backend.call(lambda: store.aget(("n",), "k"))
    assert item.value == {"text": "a\x00b", "k\x00": NUL_TEXTS}


async def test_checkpoints_copied_to_another_thread(backend: Backend, storage: Storage) -> None:
    graph, source, target = two_steps(storage), uid(), uid()
    await graph_run(backend, graph, source, "run-1")
    await backend.call(lambda: storage.checkpointer.acopy_thread(source, target))
    copied, original = (
        await history(backend, storage, target),
        await history(backend, storage, source),
    )
    assert [c.config["configurable"]["checkpoint_id"] for c in copied] == [
        c.config["configurable"]["checkpoint_id"] for c in original
    ]
    assert [c.metadata for c in copied] == [c.metadata for c in original]
    assert await values(backend, graph, target) == await values(backend, graph, source)
    await graph_run(backend, graph, target, "run-2")  # the copy goes on by itself
    assert await values(backend, graph, source) == {"log": ["run-1", "first", "second"]}
    assert (await values(backend, graph, target))["log"][-3:] == ["run-2", "first", "second"]


async def test_copied_checkpoints_name_their_new_thread(backend: Backend, storage: Storage) -> None:
    source, target = uid(), uid()
    config = {"configurable": {"thread_id": source, "checkpoint_ns": ""}}
    metadata = {"thread_id": source, "source": "update", "step": 0}
    checkpointer = storage.checkpointer
    await backend.call(lambda: checkpointer.aput(config, empty_checkpoint(), metadata, {}))  # type: ignore[arg-type]
    await backend.call(lambda: checkpointer.acopy_thread(source, target))
    [copied] = await history(backend, storage, target)
    assert copied.metadata == {**metadata, "thread_id": target}
    assert (await history(backend, storage, source))[0].metadata == metadata


async def test_checkpoints_pruned(backend: Backend, storage: Storage) -> None:
    graph, kept, latest, gone = two_steps(storage), uid(), uid(), uid()
    for tid in (kept, latest, gone):
        await graph_run(backend, graph, tid, "run-1")
        await graph_run(backend, graph, tid, "run-2")
    before = await values(backend, graph, latest)
    await backend.call(lambda: storage.checkpointer.aprune([latest], strategy="keep_latest"))
    await backend.call(lambda: storage.checkpointer.aprune([gone], strategy="delete"))
    [head] = await history(backend, storage, latest)
    assert head.parent_config is None
    assert await values(backend, graph, latest) == before
    assert await history(backend, storage, gone) == []
    assert len(await history(backend, storage, kept)) == 8
    await backend.call(lambda: storage.checkpointer.adelete_thread(kept))
    assert await history(backend, storage, kept) == []


# -- concurrency ------------------------------------------------------------------------------


async def test_concurrent_writers(storage: Storage) -> None:
    a = assistant()
    await storage.assistants.create(a)
    threads = [thread(metadata={"i": i}) for i in range(50)]

    async def writer(t: Thread) -> None:
        await storage.threads.create(t)
        first, second = run(t.thread_id), run(t.thread_id)
        await storage.runs.create(first)
        await storage.runs.create(second)
        t.status = "busy"
        await storage.threads.update(t)
        first.status = "success"
        await storage.runs.update(first)
        await storage.runs.delete(second.run_id)
        await storage.assistants.new_version(a)

    async with trio.open_nursery() as nursery:
        for t in threads:
            nursery.start_soon(writer, t)
    assert await storage.threads.search(status="busy", limit=0) == ([], 50)
    runs = await storage.runs.search()
    assert (len(runs), {r.status for r in runs}) == (50, {"success"})
    versions = await storage.assistants.versions(a.assistant_id, limit=100)
    assert sorted(v.version for v in versions) == list(range(1, 52))  # each numbered once


# -- durability -------------------------------------------------------------------------------


async def test_everything_is_there_after_reopening(backend: Backend) -> None:
    durable(backend)
    a, t = assistant(), thread(values={"log": ["x"]})
    async with backend.open() as storage:
        await storage.assistants.create(a)
        await storage.assistants.new_version(a)
        await storage.threads.create(t)
        r = run(t.thread_id, status="running")
        await storage.runs.create(r)
        c = cron(a.assistant_id, thread_id=t.thread_id, next_run_date=at(1))
        await storage.crons.create(c)
        await backend.call(lambda: storage.store.aput(("kept",), "k", {"v": 1}))
        await graph_run(backend, two_steps(storage), t.thread_id, r.run_id)
    async with backend.open() as storage:
        assert (await storage.assistants.get(a.assistant_id)).version == 2  # type: ignore[union-attr]
        assert len(await storage.assistants.versions(a.assistant_id)) == 2
        assert await storage.threads.get(t.thread_id) == t
        assert await storage.runs.get(r.run_id) == r
        assert await storage.crons.due(at(1)) == [c]
        assert (await backend.call(lambda: storage.store.aget(("kept",), "k"))).value == {"v": 1}
        assert await values(backend, two_steps(storage), t.thread_id) == {
            "log": [r.run_id, "first", "second"]
        }


async def test_pending_runs_are_found_again_in_order(backend: Backend) -> None:
    """The run queue: runs waiting as ``pending`` when a server stops are still there, in
    ``created_at`` order, when the next one starts."""
    durable(backend)
    t = thread()
    queued = [run(t.thread_id, created_at=at(i)) for i in (2, 0, 1)]
    async with backend.open() as storage:
        await storage.threads.create(t)
        for r in queued:
            await storage.runs.create(r)
        await storage.runs.create(run(t.thread_id, status="success", created_at=at(0.5)))
    async with backend.open() as storage:
        pending = await storage.runs.search(statuses=["pending"])
    assert [r.run_id for r in pending] == [queued[1].run_id, queued[2].run_id, queued[0].run_id]


async def test_opening_a_new_database_twice_at_once(backend: Backend) -> None:
    """Both openers migrate the same new database at once; each sees the other's writes."""
    opened: list[Storage] = []
    both, done = trio.Event(), trio.Event()

    async def hold() -> None:
        async with backend.open() as storage:
            opened.append(storage)
            if len(opened) == 2:
                both.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        nursery.start_soon(hold)
        await both.wait()
        if backend.name != "memory":  # two memory backends are two sets of dicts
            t = thread()
            await opened[0].threads.create(t)
            assert await opened[1].threads.get(t.thread_id) == t
        done.set()


def test_default_plugins_register_memory_and_file() -> None:
    assert {"memory", "file"} <= set(BACKENDS.names())
