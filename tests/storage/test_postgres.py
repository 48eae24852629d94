"""What only the Postgres backend does: migrations safe against processes opening a database at
once, claiming the runs of workers that are gone, refusing what it cannot open, and searches
and store filters that are the memory backend's exactly. The protocol itself is checked by
``test_contract.py``. Runs when ``TRIOGRAPH_TEST_POSTGRES`` names a server (``tests/pg.py``)."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from langgraph.checkpoint.postgres.base import MIGRATIONS as SAVER_MIGRATIONS
from langgraph.store.postgres.base import MIGRATIONS as STORE_MIGRATIONS

from tests import pg
from tests.conftest import EXAMPLES
from tests.storage.test_contract import two_steps
from tests.storage.test_file import cli
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import GraphBridge
from triograph.core.infra.models import Run, Thread, now
from triograph.core.infra.settings import Settings, load_settings
from triograph.storage.memory import MemoryStore
from triograph.storage.postgres import (
    MIGRATIONS,
    PostgresStorage,
    claim_orphans,
    open_postgres_storage,
)
from triograph.storage.query import contains

pytestmark = pytest.mark.skipif(
    pg.ADMIN_DSN is None, reason="the Postgres tests run when TRIOGRAPH_TEST_POSTGRES is set"
)

LEASE = 10.0
INDEX = {"dims": 8, "embed": "./embeddings.py:embed", "fields": ["text"]}


@pytest.fixture
async def url() -> AsyncIterator[str]:
    """A fresh database, dropped after the test."""
    made = await trio.to_thread.run_sync(pg.fresh_database)
    try:
        yield made
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(pg.drop_database, made)


@pytest.fixture
async def storage(url: str) -> AsyncIterator[PostgresStorage]:
    async with open_postgres_storage(url, Settings()) as opened:
        yield opened


async def query(storage: PostgresStorage, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    def run(conn: Any) -> list[tuple[Any, ...]]:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    return await storage.db.run(run)


# -- migrations -------------------------------------------------------------------------------


async def test_processes_opening_a_new_database_at_once_migrate_it_once(url: str) -> None:
    opened: list[PostgresStorage] = []
    everyone, done = trio.Event(), trio.Event()

    async def hold() -> None:
        async with open_postgres_storage(url, Settings()) as storage:
            opened.append(storage)
            if len(opened) == 4:
                everyone.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(hold)
        await everyone.wait()
        storage = opened[0]
        assert await query(storage, "SELECT version FROM triograph_migrations ORDER BY 1") == [
            (v,) for v in range(1, len(MIGRATIONS) + 1)
        ]
        assert await query(storage, "SELECT count(*) FROM checkpoint_migrations") == [
            (len(SAVER_MIGRATIONS),)
        ]
        assert await query(storage, "SELECT count(*) FROM store_migrations") == [
            (len(STORE_MIGRATIONS),)
        ]
        thread = Thread(thread_id=str(uuid.uuid4()))
        await opened[1].threads.create(thread)
        assert await opened[3].threads.get(thread.thread_id) == thread
        done.set()


async def test_a_database_of_a_newer_triograph_is_refused(storage: PostgresStorage) -> None:
    newer = len(MIGRATIONS) + 1
    await query(storage, "INSERT INTO triograph_migrations (version) VALUES (%s)", newer)
    with pytest.raises(ConfigError, match=f"schema version {newer} is newer"):
        async with open_postgres_storage(storage.db.conninfo, Settings()):
            pass


# -- refusing what cannot be opened -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shown", "reason"),
    [
        (
            "postgresql://me:secret@127.0.0.1:1/db",
            "postgresql://me:***@127.0.0.1:1/db",
            "Connection refused",
        ),
        (
            "postgres://me@127.0.0.1:1/db?password=secret",
            "postgres://me@127.0.0.1:1/db?password=***",
            "Connection refused",
        ),
        ("postgresql://me@127.0.0.1:notaport/db", None, "port"),
        ("postgresql://me@127.0.0.1/db?nonsense=1", None, "nonsense"),
    ],
)
async def test_a_database_that_cannot_be_opened_is_a_config_error(
    spec: str, shown: str | None, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        async with open_postgres_storage(spec, Settings()):
            pass
    message = info.value.message
    assert message.startswith(f"storage {shown or spec!r}: "), message
    assert reason in message
    assert "secret" not in message


async def test_an_unknown_database_is_a_config_error() -> None:
    assert pg.ADMIN_DSN is not None
    absent = pg.make_conninfo_url(pg.ADMIN_DSN, dbname=f"absent_{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConfigError, match="does not exist"):
        async with open_postgres_storage(absent, Settings()):
            pass


async def test_postgres_scheme_too(url: str) -> None:
    async with open_postgres_storage(url.replace("postgresql://", "postgres://"), Settings()) as s:
        assert s.name == "postgres"


async def skip_with_pgvector() -> None:
    if await trio.to_thread.run_sync(pg.has_extension, "vector"):
        pytest.skip("this server has pgvector")


async def test_a_store_index_needs_the_vector_extension(url: str) -> None:
    await skip_with_pgvector()
    settings = attrs.evolve(load_settings(EXAMPLES / "langgraph.json"), store={"index": INDEX})
    with pytest.raises(ConfigError, match="needs the PostgreSQL extension 'vector'"):
        async with open_postgres_storage(url, settings):
            pass


async def test_serve_exits_2_when_the_store_index_has_no_vector_extension(
    url: str, tmp_path: pathlib.Path
) -> None:
    await skip_with_pgvector()
    index = {**INDEX, "embed": f"{EXAMPLES}/embeddings.py:embed"}
    config = tmp_path / "langgraph.json"
    await trio.Path(config).write_text(json.dumps({"graphs": {}, "store": {"index": index}}))
    proc = cli("serve", "--config", str(config), "--port", "0", "--storage", url, cwd=tmp_path)
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2, out
    assert "needs the PostgreSQL extension 'vector'" in out


# -- claiming the runs of workers that are gone -----------------------------------------------


async def heartbeat(storage: PostgresStorage, worker_id: str, seconds_ago: float) -> None:
    await query(
        storage,
        "INSERT INTO workers (worker_id, heartbeat_at) "
        "VALUES (%s, now() - make_interval(secs => %s)) ON CONFLICT (worker_id) "
        "DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at",
        worker_id,
        seconds_ago,
    )


async def new_runs(
    storage: PostgresStorage, owner: str | None, *statuses: str, start: int = 0
) -> list[Run]:
    """Runs of a new thread, ``created_at`` a minute apart from ``start``, owned by ``owner``."""
    thread = Thread(thread_id=str(uuid.uuid4()))
    await storage.threads.create(thread)
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    runs = [
        Run(
            run_id=str(uuid.uuid4()),
            thread_id=thread.thread_id,
            assistant_id=str(uuid.uuid4()),
            status=status,  # type: ignore[arg-type]
            created_at=t0 + dt.timedelta(minutes=start + i),
            updated_at=t0,
        )
        for i, status in enumerate(statuses)
    ]
    for run in runs:
        await storage.runs.create(run)
    ids = [r.run_id for r in runs]
    await query(storage, "UPDATE runs SET owner = %s WHERE run_id = ANY(%s)", owner, ids)
    return runs


async def owners(storage: PostgresStorage, runs: list[Run]) -> list[str | None]:
    ids = [r.run_id for r in runs]
    rows = await query(storage, "SELECT run_id, owner FROM runs WHERE run_id = ANY(%s)", ids)
    return [dict(rows)[i] for i in ids]


async def test_runs_are_created_as_this_workers(storage: PostgresStorage) -> None:
    thread = Thread(thread_id=str(uuid.uuid4()))
    await storage.threads.create(thread)
    run = Run(run_id=str(uuid.uuid4()), thread_id=thread.thread_id, assistant_id="a")
    await storage.runs.create(run)
    assert await owners(storage, [run]) == [storage.worker_id]


async def test_claim_takes_orphans_oldest_first_and_retries_running_ones(
    storage: PostgresStorage,
) -> None:
    await heartbeat(storage, "dead", seconds_ago=LEASE * 2)
    await heartbeat(storage, "live", seconds_ago=0)
    running, pending = await new_runs(storage, "dead", "running", "pending", start=1)
    [nobodys] = await new_runs(storage, None, "pending", start=0)
    [gone] = await new_runs(storage, "never-heartbeat", "running", start=3)
    kept = [
        *await new_runs(storage, "live", "pending", "running"),
        *await new_runs(storage, "me", "pending", "running"),
        *await new_runs(storage, "dead", "success", "error", "interrupted"),
    ]
    before = now()

    claimed = await claim_orphans(storage.db, "me", LEASE, 3)
    assert [r.run_id for r in claimed] == [nobodys.run_id, running.run_id, pending.run_id]
    assert [(r.status, r.attempt) for r in claimed] == [
        ("pending", 1),
        ("pending", 2),
        ("pending", 1),
    ]
    assert claimed[1].updated_at >= before
    assert claimed[0].updated_at == nobodys.updated_at  # a pending run is only taken over
    for run in claimed:
        assert await storage.runs.get(run.run_id) == run
    assert await owners(storage, claimed) == ["me"] * 3

    [last] = await claim_orphans(storage.db, "me", LEASE, 3)
    assert (last.run_id, last.status, last.attempt) == (gone.run_id, "pending", 2)
    assert await claim_orphans(storage.db, "me", LEASE, 3) == []
    for run in kept:
        assert await storage.runs.get(run.run_id) == run
    assert await owners(storage, kept) == ["live"] * 2 + ["me"] * 2 + ["dead"] * 3


async def test_two_workers_never_claim_the_same_run(storage: PostgresStorage) -> None:
    for worker in ("a", "b"):
        await heartbeat(storage, worker, seconds_ago=0)
    orphans = [r for i in range(6) for r in await new_runs(storage, "dead", *["pending"] * 10)]
    claims: list[tuple[str, str]] = []

    async def claimer(worker: str) -> None:
        while found := await claim_orphans(storage.db, worker, LEASE, 3):
            claims.extend((worker, r.run_id) for r in found)

    async with trio.open_nursery() as nursery:
        for worker in ("a", "b", "a", "b"):
            nursery.start_soon(claimer, worker)
    claimed = [run_id for _, run_id in claims]
    assert sorted(claimed) == sorted(r.run_id for r in orphans)  # each once
    assert {worker for worker, _ in claims} == {"a", "b"}
    by_owner = {run_id: worker for worker, run_id in claims}
    assert await owners(storage, orphans) == [by_owner[r.run_id] for r in orphans]


# -- searches as the memory backend's ---------------------------------------------------------

HAYSTACKS: list[Any] = [
    {},
    {"user": "ann", "tags": ["a", "b"], "n": 1},
    {"user": "bob", "tags": ["a"], "n": 1.0, "flag": True},
    {"user": None, "tags": ["b", "a"], "n": 2, "flag": 1},
    {"team": {"name": "x", "size": 3}, "flag": False, "zero": 0},
    {"team": "x", "deep": {"a": {"b": None}}, "list": [{"k": 1, "j": [True]}], "n": " 2.5e0 "},
    {"team": {}, "deep": {"a": {}}, "list": [{"k": True, "j": [1]}, 2], "n": "abc"},
    {"deep": {"a": {"b": None, "c": 1}}, "list": [{"k": 1}], "n": "1"},
]
NEEDLES: list[dict[str, Any]] = [
    {},
    {"user": "ann"},
    {"user": None},
    {"tags": ["a"]},
    {"tags": ["a", "b"]},
    {"tags": "a"},
    {"n": 1},
    {"n": 1.0},
    {"n": True},
    {"flag": 1},
    {"flag": False},
    {"zero": False},
    {"team": {}},
    {"team": {"name": "x"}},
    {"team": "x"},
    {"deep": {"a": {"b": None}}},
    {"deep": {"a": {}}},
    {"deep": {"a": {"c": None}}},
    {"list": [{"k": 1, "j": [True]}]},
    {"list": [{"k": True, "j": [1]}, 2]},
    {"list": [{"k": 1}]},
    {"n": "1"},
    {"absent": None},
]


async def test_metadata_and_values_match_as_the_memory_backend_does(
    storage: PostgresStorage,
) -> None:
    threads = [
        Thread(thread_id=f"{i:02}", metadata=h, values=h or None) for i, h in enumerate(HAYSTACKS)
    ]
    for thread in threads:
        await storage.threads.create(thread)
    for needle in NEEDLES:
        want = [t.thread_id for t in threads if contains(t.metadata, needle)]
        found, total = await storage.threads.search(
            metadata=needle, sort_by="thread_id", sort_order="asc", limit=100
        )
        assert ([t.thread_id for t in found], total) == (want, len(want)), needle
        want = [t.thread_id for t in threads if not needle or contains(t.values, needle)]
        found, _ = await storage.threads.search(
            values=needle, sort_by="thread_id", sort_order="asc", limit=100
        )
        assert [t.thread_id for t in found] == want, needle


FILTERS: list[dict[str, Any]] = [
    *NEEDLES,
    {"n": {"$gt": 1}},
    {"n": {"$gte": 1, "$lt": 2}},
    {"n": {"$lte": "1.5"}},
    {"n": {"$gt": "many"}},
    {"n": {"$lt": "inf"}},
    {"n": {"$gt": True}},
    {"flag": {"$gte": 0.5}},
    {"n": {"$ne": 1}},
    {"n": {"$ne": None}},
    {"n": {"$eq": None}},
    {"user": {"$eq": "bob"}},
    {"team": {"$eq": {"name": "x", "size": 3}}},
    {"team": {"$ne": {"name": "x"}}},
    {"team": {"size": {"$gt": 2}}},
    {"tags": ["a", {"$ne": "b"}]},
]


@asynccontextmanager
async def graph_loop() -> AsyncIterator[Callable[[Callable[[], Any]], Any]]:
    bridge = GraphBridge()
    async with bridge.open():
        yield bridge.call


async def test_store_filters_match_as_the_memory_store_does(url: str) -> None:
    memory = MemoryStore()
    async with graph_loop() as call, open_postgres_storage(url, Settings()) as storage:
        store = storage.store
        for i, value in enumerate(HAYSTACKS):
            memory.put(("items",), f"{i:02}", value)
            await call(lambda i=i, value=value: store.aput(("items",), f"{i:02}", value))
        for wanted in FILTERS:
            want = sorted(i.key for i in memory.search(("items",), filter=wanted, limit=100))
            found = await call(lambda w=wanted: store.asearch(("items",), filter=w, limit=100))
            assert sorted(i.key for i in found) == want, wanted


class Clock:
    def __init__(self) -> None:
        self.at = now()

    def __call__(self) -> dt.datetime:
        return self.at

    def advance(self, minutes: float) -> None:
        self.at += dt.timedelta(minutes=minutes)


async def test_store_ttls_are_minutes_with_fractions_on_the_stores_clock(url: str) -> None:
    clock = Clock()
    async with graph_loop() as call, open_postgres_storage(url, Settings()) as storage:
        store = storage.store
        store.clock = clock
        await call(lambda: store.aput(("t",), "k", {"v": 1}, ttl=0.5))
        await call(lambda: store.aput(("t",), "kept", {"v": 2}))
        clock.advance(0.4)
        assert await call(lambda: store.aget(("t",), "k", refresh_ttl=True))  # until 0.9
        clock.advance(0.4)
        assert await call(lambda: store.aget(("t",), "k", refresh_ttl=False))
        clock.advance(0.5)  # 1.3: past the refreshed expiry, not past a whole minute's
        assert await call(lambda: store.aget(("t",), "k")) is None
        assert [i.key for i in await call(lambda: store.asearch(("t",)))] == ["kept"]
        [(rows,)] = await query(storage, "SELECT count(*) FROM store")
        assert rows == 1


UNREFERENCED_BLOBS = """SELECT count(*) FROM checkpoint_blobs b WHERE NOT EXISTS (
    SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id
    AND c.checkpoint_ns = b.checkpoint_ns
    AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)"""


async def test_rollback_deletes_the_channel_values_only_its_checkpoints_used(url: str) -> None:
    async with graph_loop() as call, open_postgres_storage(url, Settings()) as storage:
        graph = two_steps(storage)
        for run_id in ("run-1", "run-2"):
            config = {"configurable": {"thread_id": "t", "run_id": run_id}}
            await call(lambda r=run_id, c=config: graph.ainvoke({"log": [r]}, c))
        [(before,)] = await query(storage, "SELECT count(*) FROM checkpoint_blobs")
        assert await query(storage, UNREFERENCED_BLOBS) == [(0,)]
        await call(lambda: storage.checkpointer.adelete_for_runs(["run-2"]))
        [(after,)] = await query(storage, "SELECT count(*) FROM checkpoint_blobs")
        assert 0 < after < before
        assert await query(storage, UNREFERENCED_BLOBS) == [(0,)]
        state = await call(lambda: graph.aget_state({"configurable": {"thread_id": "t"}}))
        assert state.values == {"log": ["run-1", "first", "second"]}


async def test_graph_loop_pools_close_with_the_storage(url: str) -> None:
    async with graph_loop() as call:
        async with open_postgres_storage(url, Settings()) as storage:
            checkpointer, store = storage.checkpointer, storage.store
            config = {"configurable": {"thread_id": "t"}}
            assert await call(lambda: checkpointer.aget_tuple(config)) is None  # type: ignore[arg-type]
            assert await call(lambda: store.aget(("t",), "k")) is None
            assert checkpointer.pool is not None
            assert not checkpointer.pool.closed
            assert not store.pool.closed
        assert checkpointer.pool.closed
        assert store.pool.closed
