"""The file backend: SQLite files that outlive the process.

``--storage file:PATH`` (the default of ``triograph serve``) keeps three SQLite databases in
WAL mode side by side, each with its own write lock, so a graph writing checkpoints never
waits for a metadata write:

* ``PATH``: the metadata (assistants and their versions, threads, runs, crons), reached from
  Trio with the stdlib ``sqlite3`` in worker threads (``trio.to_thread`` under this backend's
  own ``CapacityLimiter``). One writer connection runs the writes one at a time, each in a
  ``BEGIN IMMEDIATE`` transaction; a few reader connections read meanwhile (in WAL mode
  readers never wait for the writer).
* ``PATH-checkpoints``: LangGraph's ``AsyncSqliteSaver`` (:class:`FileCheckpointer`);
* ``PATH-store``: LangGraph's ``AsyncSqliteStore`` (:class:`FileStore`).

A record is one row: its JSON document, plus the fields searches filter and sort on as
columns (datetimes as UTC epoch microseconds, so they sort as they compare). ``metadata``
and a thread's ``values`` are JSON columns, searched and filtered by the SQL that
:mod:`triograph.storage.query` compiles to SQLite's JSON1 functions, so searches, counts and
authorization filters have the memory backend's semantics exactly (ties in insertion order,
NULLs first ascending). Foreign keys cascade as the
protocol says: deleting a thread deletes its runs and crons, deleting an assistant its
versions and crons.

The metadata schema is versioned (``PRAGMA user_version``): the :data:`MIGRATIONS` a file
lacks are applied at open in one ``BEGIN IMMEDIATE`` transaction, and the store's own
migrations likewise, so processes opening a file at once apply each exactly once.
Commits use ``synchronous=NORMAL``: one survives the process crashing, though not
necessarily the machine losing power.
"""

from __future__ import annotations

import array
import datetime as dt
import math
import operator
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, Literal, TypeVar, cast

import aiosqlite
import attrs
import orjson
import trio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import (
    GetOp,
    IndexConfig,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.sqlite.aio import AsyncSqliteStore
from langgraph.store.sqlite.base import NS_MATCH_FUNCTION, _namespace_match, _namespace_to_text

from triograph.core.infra import encoding
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import detached, shielded
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import (
    Assistant,
    AssistantVersion,
    Cron,
    Run,
    Thread,
    converter,
    now,
)
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import Cluster, StorageRegistry
from triograph.core.infra.store_config import SweepSchedule, store_index, store_ttl
from triograph.storage.query import SQLITE_JSON, Filters, Where

R = TypeVar("R", Assistant, AssistantVersion, Thread, Run, Cron)
T = TypeVar("T")
_Statement = tuple[str, Sequence[Any]]

#: seconds a connection waits for another's write lock before "database is locked"
BUSY_TIMEOUT = 30.0
#: reader connections to the metadata file; the limiter admits one thread more (the writer)
READERS = 3

#: the metadata schema: the statements of each version, in order (``PRAGMA user_version``)
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE assistants (
            assistant_id TEXT PRIMARY KEY, graph_id TEXT NOT NULL, name TEXT NOT NULL,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            metadata TEXT NOT NULL, doc TEXT NOT NULL)""",
        """CREATE TABLE assistant_versions (
            assistant_id TEXT NOT NULL REFERENCES assistants ON DELETE CASCADE,
            version INTEGER NOT NULL, metadata TEXT NOT NULL, doc TEXT NOT NULL,
            PRIMARY KEY (assistant_id, version))""",
        """CREATE TABLE threads (
            thread_id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL, state_updated_at INTEGER NOT NULL, expires_at INTEGER,
            metadata TEXT NOT NULL, "values" TEXT NOT NULL, doc TEXT NOT NULL)""",
        "CREATE INDEX threads_expiry ON threads (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads ON DELETE CASCADE,
            status TEXT NOT NULL, created_at INTEGER NOT NULL, doc TEXT NOT NULL)""",
        "CREATE INDEX runs_by_thread ON runs (thread_id, created_at)",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        """CREATE TABLE crons (
            cron_id TEXT PRIMARY KEY,
            assistant_id TEXT NOT NULL REFERENCES assistants ON DELETE CASCADE,
            thread_id TEXT REFERENCES threads ON DELETE CASCADE,
            enabled INTEGER NOT NULL, next_run_date INTEGER, end_time INTEGER,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            metadata TEXT NOT NULL, doc TEXT NOT NULL)""",
        "CREATE INDEX crons_due ON crons (next_run_date) WHERE enabled",
        "CREATE INDEX crons_by_assistant ON crons (assistant_id)",
        "CREATE INDEX crons_by_thread ON crons (thread_id)",
    ),
)


# -- connections ------------------------------------------------------------------------------


class _Connection(sqlite3.Connection):
    """Every connection of this backend, aiosqlite's included: foreign keys enforced, and
    ``synchronous=NORMAL``, with which WAL mode syncs at checkpoints, not at every commit."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA synchronous=NORMAL")
        self.execute("PRAGMA foreign_keys=ON")


def _connect(path: str, isolation_level: Literal["DEFERRED"] | None = None) -> sqlite3.Connection:
    """A connection for any thread (used by one at a time), by default in autocommit mode:
    transactions are explicit."""
    return sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT,
        isolation_level=isolation_level,
        check_same_thread=False,
        factory=_Connection,
    )


def _metadata_connection(path: str) -> sqlite3.Connection:
    conn = _connect(path)
    conn.create_function("triograph_lower", 1, str.lower, deterministic=True)
    return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str) -> T:
    """``fn(conn)`` between ``begin`` and a commit, rolled back if it raises."""
    conn.execute(begin)
    try:
        result = fn(conn)
    except Exception:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring the metadata file to the latest :data:`MIGRATIONS`, all in one transaction."""

    def apply(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this triograph's ({len(MIGRATIONS)})"
            )
        for statements in MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: set before any transaction
    _transaction(conn, apply, "BEGIN IMMEDIATE")


def _migrate_store(conn: sqlite3.Connection, vectors: bool) -> None:
    """Apply LangGraph's store migrations (and, for an index, its vector ones) in one
    transaction, recorded as its ``setup()`` records them: that checks and applies outside
    any transaction, so two processes starting at once would both apply them."""
    migrations = [("store_migrations", AsyncSqliteStore.MIGRATIONS)]
    if vectors:
        migrations.append(("vector_migrations", AsyncSqliteStore.VECTOR_MIGRATIONS))

    def apply(conn: sqlite3.Connection) -> None:
        for table, scripts in migrations:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (v INTEGER PRIMARY KEY)")
            done = conn.execute(f"SELECT COALESCE(MAX(v), -1) FROM {table}").fetchone()[0]
            for v, sql in enumerate(scripts[done + 1 :], start=done + 1):
                conn.execute(sql)
                conn.execute(f"INSERT INTO {table} (v) VALUES (?)", (v,))

    conn.execute("PRAGMA journal_mode=WAL")
    _transaction(conn, apply, "BEGIN IMMEDIATE")


class _Database:
    """The metadata file's connections, each used by one worker thread at a time: the
    writer under ``_write_lock``, a reader while it is out of ``_idle``."""

    def __init__(self, path: str, limiter: trio.CapacityLimiter) -> None:
        self.path = path
        self._limiter = limiter
        self._write_lock = trio.Lock()
        self._idle_in, self._idle = trio.open_memory_channel[sqlite3.Connection](READERS)
        self._connections: list[sqlite3.Connection] = []

    def open(self) -> None:
        """Migrate the file and connect (in a worker thread; :meth:`close` even if it fails)."""
        self._connections.append(_metadata_connection(self.path))
        _migrate(self._connections[0])
        for _ in range(READERS):
            self._connections.append(_metadata_connection(self.path))
            self._idle_in.send_nowait(self._connections[-1])

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(writer)`` in a ``BEGIN IMMEDIATE`` transaction, after the writes before it."""
        async with self._write_lock:
            return await trio.to_thread.run_sync(
                _transaction, self._connections[0], fn, "BEGIN IMMEDIATE", limiter=self._limiter
            )

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(reader)`` in one read transaction, so it sees one snapshot."""
        conn = await self._idle.receive()
        try:
            return await trio.to_thread.run_sync(
                _transaction, conn, fn, "BEGIN", limiter=self._limiter
            )
        finally:
            self._idle_in.send_nowait(conn)


# -- records as rows --------------------------------------------------------------------------

#: a column value: datetimes as UTC epoch microseconds (naive ones taken as UTC)
_sql = SQLITE_JSON.value


def _json(value: Any) -> str:
    return encoding.dumps(value).decode()


class _Table(Generic[R]):
    """How records of ``cls`` are rows of ``name``: ``columns`` (fields searched and sorted
    on), ``json`` (fields matched by containment, kept out of the document) and ``doc``."""

    def __init__(
        self,
        name: str,
        cls: type[R],
        key: tuple[str, ...],
        columns: tuple[str, ...],
        json: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.cls: type[R] = cls
        self.key = key
        self.columns = columns
        self.json = json
        stored = [f'"{c}"' for c in (*columns, *json, "doc")]
        self.match_key = " AND ".join(f'"{k}" = ?' for k in key)
        self.insert = (
            f"INSERT INTO {name} ({', '.join(stored)}) VALUES ({', '.join('?' * len(stored))})"
        )
        self.upsert = f"{self.insert} ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in stored
        )
        self.set = f"UPDATE {name} SET {', '.join(f'{c} = ?' for c in stored)}"
        #: what :meth:`load` takes: the JSON columns, then the document
        self.loaded = ", ".join(stored[len(columns) :])
        self.select = f"SELECT {self.loaded} FROM {name}"

    def row(self, record: R) -> list[Any]:
        fields = attrs.asdict(record, recurse=False)
        values: list[Any] = [_sql(self.column(record, c)) for c in self.columns]
        values += [_json(fields.pop(c)) for c in self.json]
        return [*values, _json(fields)]

    def column(self, record: R, name: str) -> Any:
        return getattr(record, name)

    def load(self, row: Sequence[Any]) -> R:
        """The record of a row selected by :attr:`select`."""
        data = orjson.loads(row[-1])
        for name, text in zip(self.json, row, strict=False):
            data[name] = orjson.loads(text)
        record: R = converter.structure(data, self.cls)
        return record

    def get(self, conn: sqlite3.Connection, *key: Any) -> R | None:
        row = conn.execute(f"{self.select} WHERE {self.match_key}", key).fetchone()
        return None if row is None else self.load(row)

    def where(self, key: Any) -> Where:
        """The row of ``key`` (a one-column key)."""
        return Where(SQLITE_JSON).eq(self.key[0], key)

    def insert_new(self, conn: sqlite3.Connection, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        return conn.execute(f"{self.insert} ON CONFLICT DO NOTHING", self.row(record)).rowcount > 0

    def put(self, conn: sqlite3.Connection, record: R) -> None:
        """Insert or replace in place (the row keeps its place in insertion order)."""
        conn.execute(self.upsert, self.row(record))

    def replace(self, conn: sqlite3.Connection, record: R, where: Where) -> None:
        """Update the row ``where`` selects, if there is one."""
        conn.execute(f"{self.set} WHERE {where}", [*self.row(record), *where.params])

    def delete(self, conn: sqlite3.Connection, where: Where) -> bool:
        return conn.execute(f"DELETE FROM {self.name} WHERE {where}", where.params).rowcount > 0

    def page(
        self,
        conn: sqlite3.Connection,
        where: Where,
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
    ) -> tuple[list[R], int]:
        """One sorted page of matches and their number, as ``storage.memory.page`` sorts."""
        if sort_by not in self.columns:
            raise ValueError(f"cannot sort {self.name} by {sort_by!r}")
        way = "DESC" if sort_order == "desc" else "ASC"
        rows = []
        if limit:
            rows = conn.execute(
                f"SELECT {self.loaded}, COUNT(*) OVER () FROM {self.name} WHERE {where} "
                f'ORDER BY "{sort_by}" IS NOT NULL {way}, "{sort_by}" {way}, rowid '
                "LIMIT ? OFFSET ?",
                [*where.params, limit, offset],
            ).fetchall()
        if rows:
            return [self.load(r[:-1]) for r in rows], rows[0][-1]
        total = conn.execute(f"SELECT COUNT(*) FROM {self.name} WHERE {where}", where.params)
        return [], total.fetchone()[0]

    def rows(self, conn: sqlite3.Connection, where: Where, tail: str, *params: Any) -> list[R]:
        found = conn.execute(f"{self.select} WHERE {where} {tail}", [*where.params, *params])
        return [self.load(r) for r in found]


class _ThreadTable(_Table[Thread]):
    """Threads also keep ``ttl.expires_at`` as a column, for :meth:`ThreadRepo.expired`."""

    def column(self, record: Thread, name: str) -> Any:
        if name == "expires_at":
            return (record.ttl or {}).get("expires_at")
        return super().column(record, name)

    def load(self, row: Sequence[Any]) -> Thread:
        thread = super().load(row)
        if thread.ttl and isinstance(thread.ttl.get("expires_at"), str):  # JSON has no datetime
            thread.ttl["expires_at"] = dt.datetime.fromisoformat(thread.ttl["expires_at"])
        return thread


_ASSISTANTS = _Table(
    "assistants",
    Assistant,
    ("assistant_id",),
    ("assistant_id", "graph_id", "name", "created_at", "updated_at"),
    ("metadata",),
)
_VERSIONS = _Table(
    "assistant_versions",
    AssistantVersion,
    ("assistant_id", "version"),
    ("assistant_id", "version"),
    ("metadata",),
)
_THREADS = _ThreadTable(
    "threads",
    Thread,
    ("thread_id",),
    ("thread_id", "status", "created_at", "updated_at", "state_updated_at", "expires_at"),
    ("metadata", "values"),
)
_RUNS = _Table("runs", Run, ("run_id",), ("run_id", "thread_id", "status", "created_at"))
_CRONS = _Table(
    "crons",
    Cron,
    ("cron_id",),
    (
        "cron_id",
        "assistant_id",
        "thread_id",
        "enabled",
        "next_run_date",
        "end_time",
        "created_at",
        "updated_at",
    ),
    ("metadata",),
)


# -- repositories -----------------------------------------------------------------------------


class _Repo(Generic[R]):
    """What every repository does the same way, on ``table``."""

    table: _Table[R]

    def __init__(self, db: _Database) -> None:
        self._db = db

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        """``where``, and ``filters`` on the record's metadata."""
        return where.allowed('"metadata"', filters)

    async def get(self, key: str, *, filters: Filters | None = None) -> R | None:
        if not filters:
            return await self._db.read(lambda conn: self.table.get(conn, key))
        found = await self._rows(self._scoped(self.table.where(key), filters), "")
        return found[0] if found else None

    async def update(self, record: R, *, filters: Filters | None = None) -> None:
        where = self._scoped(self.table.where(getattr(record, self.table.key[0])), filters)
        await self._db.write(lambda conn: self.table.replace(conn, record, where))

    async def delete(self, key: str, *, filters: Filters | None = None) -> bool:
        where = self._scoped(self.table.where(key), filters)
        return await self._db.write(lambda conn: self.table.delete(conn, where))

    async def _insert(self, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        return await self._db.write(lambda conn: self.table.insert_new(conn, record))

    async def _put(self, record: R) -> None:
        await self._db.write(lambda conn: self.table.put(conn, record))

    async def _page(
        self, where: Where, sort_by: str, sort_order: str, limit: int, offset: int
    ) -> tuple[list[R], int]:
        return await self._db.read(
            lambda conn: self.table.page(conn, where, sort_by, sort_order, limit, offset)
        )

    async def _rows(self, where: Where, tail: str, *params: Any) -> list[R]:
        return await self._db.read(lambda conn: self.table.rows(conn, where, tail, *params))


def _version_of(assistant: Assistant) -> AssistantVersion:
    """The version row of what ``assistant`` points at, created when it was updated."""
    fields = attrs.fields(AssistantVersion)
    same = {f.name: getattr(assistant, f.name) for f in fields if f.name != "created_at"}
    return AssistantVersion(**same, created_at=assistant.updated_at)


class _Assistants(_Repo[Assistant]):
    table = _ASSISTANTS

    async def create(self, assistant: Assistant) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            created = _ASSISTANTS.insert_new(conn, assistant)
            if created:
                _VERSIONS.put(conn, _version_of(assistant))
            return created

        return await self._db.write(insert)

    async def new_version(self, assistant: Assistant) -> Assistant:
        def store(conn: sqlite3.Connection) -> Assistant:
            stored = attrs.evolve(assistant)
            stored.version = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM assistant_versions "
                "WHERE assistant_id = ?",
                (assistant.assistant_id,),
            ).fetchone()[0]
            _ASSISTANTS.put(conn, stored)
            _VERSIONS.put(conn, _version_of(stored))
            return stored

        return await self._db.write(store)

    async def get_version(self, assistant_id: str, version: int) -> AssistantVersion | None:
        return await self._db.read(lambda conn: _VERSIONS.get(conn, assistant_id, version))

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[AssistantVersion]:
        where = Where(SQLITE_JSON).eq("assistant_id", assistant_id).contains("metadata", metadata)
        page = await self._db.read(
            lambda conn: _VERSIONS.page(conn, where, "version", "desc", limit, offset)
        )
        return page[0]

    async def search(
        self,
        *,
        graph_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Assistant], int]:
        where = Where(SQLITE_JSON).within("graph_id", graph_ids).contains("metadata", metadata)
        self._scoped(where, filters)
        if name:
            where.add("instr(triograph_lower(name), ?)", name.lower())
        return await self._page(where, sort_by, sort_order, limit, offset)


class _Threads(_Repo[Thread]):
    table = _THREADS
    create = _Repo._insert

    async def search(
        self,
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Thread], int]:
        where = Where(SQLITE_JSON).within("thread_id", ids).eq("status", status)
        where.contains("metadata", metadata).contains("values", values)
        self._scoped(where, filters)
        return await self._page(where, sort_by, sort_order, limit, offset)

    async def expired(self, at: dt.datetime, *, limit: int = 100) -> list[Thread]:
        where = Where(SQLITE_JSON).add("expires_at <= ?", _sql(at))
        return await self._rows(where, "ORDER BY expires_at, rowid LIMIT ?", limit)


class _Runs(_Repo[Run]):
    """Runs are filtered by their thread's metadata (they are authorized on it)."""

    table = _RUNS
    create = _Repo._put

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        if not filters:
            return where
        inner = Where(SQLITE_JSON).allowed("threads.metadata", filters)
        return where.add(
            f"thread_id IN (SELECT thread_id FROM threads WHERE {inner})", *inner.params
        )

    async def for_thread(
        self, thread_id: str, *, status: str | None = None, limit: int = 10, offset: int = 0
    ) -> list[Run]:
        where = Where(SQLITE_JSON).eq("thread_id", thread_id).eq("status", status)
        return await self._rows(
            where, "ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?", limit, offset
        )

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Run]:
        where = Where(SQLITE_JSON).within("status", statuses).eq("thread_id", thread_id)
        where = self._scoped(where.within("run_id", run_ids), filters)
        return await self._rows(where, "ORDER BY created_at, run_id")


class _Crons(_Repo[Cron]):
    table = _CRONS
    create = _Repo._put

    async def search(
        self,
        *,
        assistant_id: str | None = None,
        thread_id: str | None = None,
        enabled: bool | None = None,
        metadata: dict[str, Any] | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Cron], int]:
        where = Where(SQLITE_JSON).eq("assistant_id", assistant_id).eq("thread_id", thread_id)
        where.eq("enabled", enabled).contains("metadata", metadata)
        self._scoped(where, filters)
        return await self._page(where, sort_by, sort_order, limit, offset)

    async def due(self, at: dt.datetime, *, limit: int = 100) -> list[Cron]:
        where = Where(SQLITE_JSON).add("enabled").add("next_run_date <= ?", _sql(at))
        return await self._rows(where, "ORDER BY next_run_date, rowid LIMIT ?", limit)


# -- checkpoints and store, on the graph loop -------------------------------------------------
#
# Both are asyncio objects of the graph loop, which this backend is not handed. Each is built
# here without what needs the running loop (an asyncio lock; the store's batching queue and
# task) and finishes construction at its first use, which is on the graph loop (the bridge is
# the only way in). Their sqlite3 connections are opened at open, from Trio, and wrapped in an
# aiosqlite connection at first use (:class:`_Link`).


class _Link:
    """An aiosqlite connection over a sqlite3 connection this backend opened and closes.

    A first use cancelled while aiosqlite starts its thread spends only the wrapper (a thread
    starts once): the next use wraps the same connection anew. The owner serializes
    :meth:`start` under its lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.sqlite = conn
        self.aio = self._wrap()
        self.started = self.connected = False

    def _wrap(self) -> aiosqlite.Connection:
        return aiosqlite.Connection(lambda: self.sqlite, iter_chunk_size=64)

    async def start(self) -> aiosqlite.Connection:
        if not self.connected:
            if self.started:
                self.aio = self._wrap()
            self.started = True
            await self.aio
            self.connected = True
        return self.aio

    def close(self) -> None:
        """From a thread other than the graph loop's: aiosqlite's thread closes what it took."""
        if self.connected:
            self.aio.stop()
        else:
            self.sqlite.close()


async def _transact(conn: aiosqlite.Connection, statements: Sequence[_Statement]) -> None:
    """The statements in one transaction, rolled back if any fails or is cancelled."""
    await conn.execute("BEGIN")
    done = False
    try:
        for sql, params in statements:
            await conn.execute(sql, params)
        done = True
    finally:
        await conn.execute("COMMIT" if done else "ROLLBACK")


class FileCheckpointer(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` that can also delete the checkpoints written by given runs, copy
    a thread's checkpoints to another thread, and prune threads, as ``MemoryCheckpointer``.

    LangGraph's own writes run a statement, then a commit, on the one shared connection;
    they are shielded from cancellation: aiosqlite runs a statement once queued, awaited or
    not, so a write cancelled in between would leave the connection in a transaction nobody
    commits (holding the file's write lock, and failing the next ``BEGIN``). A cancelled
    bridge job waits for them, so they have landed when its cancel returns.

    Every operation awaits :meth:`setup` first; the first call finishes construction.
    """

    def __init__(self, link: _Link) -> None:
        BaseCheckpointSaver.__init__(self)
        self.link = link
        self.opened = self.is_setup = False

    async def setup(self) -> None:
        if self.is_setup:
            return
        if not self.opened:
            self.opened = True
            AsyncSqliteSaver.__init__(self, self.link.aio)
        async with self.lock:
            self.conn = await self.link.start()
        await super().setup()

    async def _write(self, *statements: _Statement) -> None:
        await self.setup()
        async with self.lock:
            await _transact(self.conn, statements)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await shielded(super().aput(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await shielded(super().aput_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self.setup()
        await shielded(super().adelete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Checkpoints whose metadata ``run_id`` is one of ``run_ids``, and their writes."""
        by_run = (
            "json_extract(CAST(c.metadata AS TEXT), '$.run_id') IN (SELECT value FROM json_each(?))"
        )
        ids = _json(list(run_ids))
        await self._write(
            (
                "DELETE FROM writes WHERE EXISTS (SELECT 1 FROM checkpoints c WHERE "
                "c.thread_id = writes.thread_id AND c.checkpoint_ns = writes.checkpoint_ns AND "
                f"c.checkpoint_id = writes.checkpoint_id AND {by_run})",
                (ids,),
            ),
            (f"DELETE FROM checkpoints AS c WHERE {by_run}", (ids,)),
        )

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Every checkpoint and write of the source under the target's id; checkpoint ids are
        kept, ``thread_id`` in checkpoint metadata is rewritten."""
        metadata = "CAST(metadata AS TEXT)"
        await self._write(
            (
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) "
                "SELECT ?, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, "
                f"CASE WHEN json_type({metadata}, '$.thread_id') IS NULL THEN metadata "
                f"ELSE CAST(json_set({metadata}, '$.thread_id', ?) AS BLOB) END "
                "FROM checkpoints WHERE thread_id = ?",
                (target_thread_id, target_thread_id, source_thread_id),
            ),
            (
                "INSERT OR REPLACE INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, "
                "task_path, idx, channel, type, value) SELECT ?, checkpoint_ns, checkpoint_id, "
                "task_id, task_path, idx, channel, type, value FROM writes WHERE thread_id = ?",
                (target_thread_id, source_thread_id),
            ),
        )

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``delete``: drop every checkpoint; ``keep_latest``: keep the newest checkpoint of
        each namespace (with its writes), which then has no parent."""
        ids = _json(list(thread_ids))
        threads = "thread_id IN (SELECT value FROM json_each(?))"
        if strategy == "delete":
            await self._write(
                (f"DELETE FROM writes WHERE {threads}", (ids,)),
                (f"DELETE FROM checkpoints WHERE {threads}", (ids,)),
            )
            return
        older = (
            "checkpoint_id < (SELECT MAX(c.checkpoint_id) FROM checkpoints c WHERE "
            "c.thread_id = {0}.thread_id AND c.checkpoint_ns = {0}.checkpoint_ns)"
        )
        await self._write(
            (f"DELETE FROM writes WHERE {threads} AND {older.format('writes')}", (ids,)),
            (f"DELETE FROM checkpoints WHERE {threads} AND {older.format('checkpoints')}", (ids,)),
            (f"UPDATE checkpoints SET parent_checkpoint_id = NULL WHERE {threads}", (ids,)),
        )


def _stamp(at: dt.datetime) -> str:
    """A store timestamp: UTC, as text that sorts as the times do."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


class FileStore(AsyncSqliteStore):
    """``AsyncSqliteStore`` with the memory store's TTL semantics, on its ``clock``.

    An expired item is deleted before anything could see it: the item itself before a get,
    every expired item before a search or a namespace listing and every
    ``sweep_interval_minutes``, so no sweeper task runs. Expiries are set and refreshed, and
    items stamped (to the microsecond, with their time zone), on ``clock`` rather than on
    SQLite's clock, so tests move it instead of waiting.

    Every operation passes :meth:`_ensure_task` first; the first call finishes construction.
    """

    supports_ttl = True  # BaseStore's False comes first in AsyncSqliteStore's MRO

    def __init__(
        self,
        link: _Link,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], dt.datetime] = now,
    ) -> None:
        self.link = link
        self.opened = self.is_setup = False
        self.ttl_config = ttl
        self.clock = clock
        self._index = index
        self._task = None  # read by the parent's __del__
        self._sweeps = SweepSchedule(ttl)

    def _ensure_task(self) -> None:
        if not self.opened:
            self.opened = True
            # LangGraph's SQLite store takes the paths to embed from "text_fields", not "fields"
            index = self._index and {**self._index, "text_fields": self._index.get("fields")}
            AsyncSqliteStore.__init__(self, self.link.aio, index=index, ttl=self.ttl_config)  # type: ignore[arg-type]
        detached(super()._ensure_task)  # the batch task serves every job, not the first

    async def setup(self) -> None:
        """Connect, and register the SQL functions the store's queries use. The tables are
        made at open (:func:`_migrate_store`); vector distances are Python functions rather
        than the sqlite-vec extension, which many Python builds cannot load."""
        async with self.lock:
            if not self.is_setup:
                self.conn = await self.link.start()
                functions: dict[str, Callable[..., Any]] = {
                    NS_MATCH_FUNCTION: _namespace_match,
                    **_DISTANCES,
                }
                for name, fn in functions.items():
                    await self.conn.create_function(name, 2, fn, deterministic=True)
                self.is_setup = True

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops, at = list(ops), self.clock()
        await self.setup()
        await self._execute(self._expiring(ops, at))
        results = await super().abatch([_untimed(op) for op in ops])
        await self._execute(self._settling(ops, results, at))
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, SearchOp) and op.query and self.index_config:
                found = cast("list[SearchItem]", result)
                found.extend(await self._unscored(op, op.limit - len(found)))
        return results

    async def _unscored(self, op: SearchOp, room: int) -> list[SearchItem]:
        """As in the memory store, a semantic search short of ``limit`` goes on with the
        matching items that have no vectors (put with ``index=False``), without a score."""
        if room <= 0:
            return []
        found = await super().abatch([op._replace(query=None, offset=0, limit=-1)])
        async with self.lock:
            indexed = await self.conn.execute_fetchall("SELECT prefix, key FROM store_vectors")
        vectors = {(prefix, key) for prefix, key in indexed}
        items = cast("list[SearchItem]", found[0])
        return [i for i in items if (_namespace_to_text(i.namespace), i.key) not in vectors][:room]

    def _expiring(self, ops: list[Op], at: dt.datetime) -> list[_Statement]:
        if self._sweeps.due(ops, at):
            return [("DELETE FROM store WHERE expires_at <= ?", (_stamp(at),))]
        return [
            (
                "DELETE FROM store WHERE prefix = ? AND key = ? AND expires_at <= ?",
                (_namespace_to_text(op.namespace), op.key, _stamp(at)),
            )
            for op in ops
            if isinstance(op, GetOp)
        ]

    def _settling(self, ops: list[Op], results: list[Result], at: dt.datetime) -> list[_Statement]:
        """Stamp what was put (with its expiry), refresh the expiry of what was read."""
        out: list[_Statement] = []
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, PutOp) and op.value is not None:
                expires = None if op.ttl is None else _stamp(at + dt.timedelta(minutes=op.ttl))
                out.append(
                    (
                        "UPDATE store SET created_at = ?1, updated_at = ?1, expires_at = ?2, "
                        "ttl_minutes = ?3 WHERE prefix = ?4 AND key = ?5",
                        (_stamp(at), expires, op.ttl, _namespace_to_text(op.namespace), op.key),
                    )
                )
            elif isinstance(op, GetOp) and op.refresh_ttl and result is not None:
                out.append(_refresh(op.namespace, op.key, at))
            elif isinstance(op, SearchOp) and op.refresh_ttl:
                out.extend(_refresh(i.namespace, i.key, at) for i in result or ())  # type: ignore[union-attr]
        return out

    def _get_filter_condition(self, key: str, op: str, value: Any) -> tuple[str, list[Any]]:
        """As in the memory store, an item lacking ``key`` is not equal to ``value``."""
        condition, params = super()._get_filter_condition(key, op, value)
        if op == "$ne" and value is not None:
            return f"(json_extract(value, '$.{key}') IS NULL OR {condition})", params
        return condition, params

    async def _execute(self, statements: list[_Statement]) -> None:
        if statements:
            async with self.lock:
                await _transact(self.conn, statements)


def _vector(blob: bytes) -> array.array[float]:
    return array.array("f", blob)  # as sqlite_vec.serialize_float32 packs it


def _cosine_distance(a: bytes, b: bytes) -> float:
    x, y = _vector(a), _vector(b)
    norms = math.hypot(*x) * math.hypot(*y)
    return 1.0 - sum(map(operator.mul, x, y)) / norms if norms else 1.0


#: sqlite-vec's distance functions, which the store's vector search calls
_DISTANCES: dict[str, Callable[[bytes, bytes], float]] = {
    "vec_distance_cosine": _cosine_distance,
    "vec_distance_L2": lambda a, b: math.dist(_vector(a), _vector(b)),
    "vec_distance_L1": lambda a, b: sum(map(abs, map(operator.sub, _vector(a), _vector(b)))),
}


def _untimed(op: Op) -> Op:
    """``op`` without the TTL work :class:`FileStore` does itself."""
    if isinstance(op, PutOp):
        return op._replace(ttl=None)
    if isinstance(op, GetOp | SearchOp):
        return op._replace(refresh_ttl=False)
    return op


def _refresh(namespace: tuple[str, ...], key: str, at: dt.datetime) -> _Statement:
    return (
        "UPDATE store SET expires_at = strftime('%Y-%m-%d %H:%M:%f', ?, "
        "'+' || (ttl_minutes * 60) || ' seconds') || '000+00:00' "
        "WHERE prefix = ? AND key = ? AND ttl_minutes IS NOT NULL",
        (_stamp(at), _namespace_to_text(namespace), key),
    )


# -- the backend ------------------------------------------------------------------------------


class FileStorage:
    """Metadata, checkpoints and store in SQLite files; see the module docstring."""

    name = "file"
    cluster: Cluster | None = None  # one process at a time

    def __init__(self, db: _Database, checkpointer: FileCheckpointer, store: FileStore) -> None:
        self.assistants = _Assistants(db)
        self.threads = _Threads(db)
        self.runs = _Runs(db)
        self.crons = _Crons(db)
        self._checkpointer = checkpointer
        self._store = store

    @property
    def checkpointer(self) -> FileCheckpointer:
        return self._checkpointer

    @property
    def store(self) -> FileStore:
        return self._store


def file_path(spec: str) -> pathlib.Path:
    """``file:PATH`` -> PATH (``~`` expanded; relative to the working directory)."""
    _, _, path = spec.partition(":")
    if not path:
        raise ConfigError(f"storage {spec!r}: expected file:PATH, the path of the database file")
    return pathlib.Path(path).expanduser()


@asynccontextmanager
async def open_file_storage(spec: str, settings: Settings) -> AsyncIterator[FileStorage]:
    """Open (creating and migrating) the files of ``file:PATH`` for the block; close them
    after. A file that cannot be opened is a ``ConfigError`` naming it."""
    path = str(file_path(spec))
    index, ttl = store_index(settings), store_ttl(settings)
    limiter = trio.CapacityLimiter(READERS + 1)
    db = _Database(path, limiter)
    links: list[_Link] = []

    def open_all() -> None:
        db.open()
        checkpoints = _connect(f"{path}-checkpoints", "DEFERRED")  # the saver commits itself
        links.append(_Link(checkpoints))
        checkpoints.execute("PRAGMA journal_mode=WAL")
        store = _connect(f"{path}-store")
        links.append(_Link(store))
        _migrate_store(store, vectors=index is not None)

    def close_all() -> None:
        for link in links:
            link.close()
        db.close()

    try:
        await trio.to_thread.run_sync(open_all, limiter=limiter)
    except sqlite3.Error as exc:
        await trio.to_thread.run_sync(close_all, limiter=limiter)
        raise ConfigError(f"storage {spec!r}: cannot open {path!r}: {exc}") from None
    checkpointer = FileCheckpointer(links[0])
    store = FileStore(links[1], index=index, ttl=ttl)
    try:
        yield FileStorage(db, checkpointer, store)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close_all, limiter=limiter)


@hookimpl
def triograph_register_storage(registry: StorageRegistry) -> None:
    registry.add("file", open_file_storage)
