"""The file backend: SQLite files that outlive the process.

``--storage file:PATH`` (the default of ``triograph serve``) keeps three SQLite databases in
WAL mode side by side, each with its own write lock, so a graph writing checkpoints never
waits for a metadata write:

* ``PATH``: the metadata (assistants and their versions, threads, runs, crons), reached from
  Trio with the stdlib ``sqlite3`` in worker threads (``trio.to_thread`` under this backend's
  own ``CapacityLimiter``). One writer connection runs the writes one at a time, each in a
  ``BEGIN IMMEDIATE`` transaction (those that queued meanwhile together in one worker
  thread call); a few reader connections read meanwhile (in WAL mode readers never wait
  for the writer).
* ``PATH-checkpoints``: LangGraph's ``AsyncSqliteSaver`` (``FileCheckpointer``);
* ``PATH-store``: LangGraph's ``AsyncSqliteStore`` (``FileStore``), both in
  :mod:`triograph.storage.file_graph`.

The repositories are the SQL layer's (:mod:`triograph.storage.repos` over
:mod:`triograph.storage.tables`, in the SQLite dialect of :mod:`triograph.storage.sql`):
this module keeps what is SQLite's own, the files, their connections and
:data:`MIGRATIONS`. Datetime columns hold UTC epoch microseconds (so they sort as they
compare); ``metadata`` and ``values`` are JSON text, searched and filtered with JSON1 (see
:mod:`triograph.storage.query`). Foreign keys cascade as the protocol says.

The metadata schema is versioned (``PRAGMA user_version``): the :data:`MIGRATIONS` a file
lacks are applied at open in one ``BEGIN IMMEDIATE`` transaction, and the store's own
migrations likewise, so processes opening a file at once apply each exactly once (switching
a new file to WAL mode is retried while another process holds it).
Commits use ``synchronous=NORMAL``: one survives the process crashing, though not
necessarily the machine losing power.
"""

from __future__ import annotations

import pathlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal, TypeVar, cast

import attrs
import outcome
import trio

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import Cluster, StorageRegistry
from triograph.core.infra.store_config import store_index, store_ttl
from triograph.storage import repos
from triograph.storage.file_graph import FileCheckpointer, FileStore, Link, migrate_store, wal
from triograph.storage.sql import SQLITE, Counts, epoch_microseconds, migrate
from triograph.storage.tables import Tables

T = TypeVar("T")

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
    (  # the columns the Postgres schema has, so that one layer serves both
        "ALTER TABLE assistants ADD COLUMN name_lower TEXT NOT NULL DEFAULT ''",
        "UPDATE assistants SET name_lower = triograph_lower(name)",
        "ALTER TABLE runs ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0",
        "UPDATE runs SET updated_at = triograph_epoch(json_extract(doc, '$.updated_at'))",
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
    """A connection to the metadata file, with the functions migrations use."""
    conn = _connect(path)
    conn.create_function("triograph_lower", 1, str.lower, deterministic=True)
    conn.create_function("triograph_epoch", 1, epoch_microseconds, deterministic=True)
    return conn


def _transaction(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str | None
) -> T:
    """``fn(conn)`` between ``begin`` and a commit, rolled back if it raises; with no
    ``begin``, alone (a single statement: a transaction of its own, in autocommit mode)."""
    counts, used = Counts.of_process(), conn
    if counts is not None:
        counts.add(transactions=0 if begin is None else 1)
        used = cast("sqlite3.Connection", _Counted(conn, counts))
    if begin is None:
        return fn(used)
    conn.execute(begin)
    try:
        result = fn(used)
    except Exception:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _hop(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread's call: counted as one (``sql.Counts``)."""
    if (counts := Counts.of_process()) is not None:
        counts.add(calls=1)
    return fn(*args)


@attrs.define(eq=False)
class _Write:
    """A write waiting for the writer connection, and once done its outcome."""

    fn: Callable[[sqlite3.Connection], Any]
    begin: str | None
    outcome: outcome.Outcome[Any] | None = None
    done: trio.Event = attrs.Factory(trio.Event)


def _write_all(conn: sqlite3.Connection, writes: list[_Write]) -> None:
    """Each write in its own transaction, in order (one failing changes none of the others)."""
    for write in writes:
        write.outcome = outcome.capture(_transaction, conn, write.fn, write.begin)


class _Counted:
    """A connection that counts its statements (``sql.Counts``)."""

    def __init__(self, conn: sqlite3.Connection, counts: Counts) -> None:
        self._conn = conn
        self._counts = counts

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._counts.add(statements=1)
        return self._conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _Database:
    """The metadata file's connections (the :class:`~triograph.storage.sql.SqlEngine` of the
    repositories), each used by one worker thread at a time: the writer under
    ``_write_lock``, a reader while it is out of ``_idle``.

    Writes queue for the writer in order, and whoever holds it runs every write queued by
    then in one worker thread call, each in its own transaction, as the writes would have
    run one after the other: under load a thread hop (and its wake-ups) serves many writes
    instead of one. A write cancelled while it waits in the queue never runs; once taken it
    runs to its end, and the cancel arrives after, as with any call in a worker thread.
    """

    dialect = SQLITE

    def __init__(self, path: str, limiter: trio.CapacityLimiter) -> None:
        self.path = path
        self._limiter = limiter
        self._write_lock = trio.Lock()
        #: the writes waiting for the writer connection, in order
        self._queued: list[_Write] = []
        self._idle_in, self._idle = trio.open_memory_channel[sqlite3.Connection](READERS)
        self._connections: list[sqlite3.Connection] = []

    def open(self) -> None:
        """Migrate the file and connect (in a worker thread; :meth:`close` even if it fails)."""
        self._connections.append(_metadata_connection(self.path))
        migrate(self._connections[0], SQLITE, MIGRATIONS)
        for _ in range(READERS):
            self._connections.append(_metadata_connection(self.path))
            self._idle_in.send_nowait(self._connections[-1])

    def close(self) -> None:
        for conn in self._connections:
            conn.close()

    async def write(self, fn: Callable[[sqlite3.Connection], T], *, single: bool = False) -> T:
        """``fn(writer)`` in a ``BEGIN IMMEDIATE`` transaction (or alone, ``single``), after
        the writes before it."""
        write = _Write(fn, None if single else "BEGIN IMMEDIATE")
        self._queued.append(write)
        try:
            async with self._write_lock:
                if write.outcome is None:  # not run by the writes before it
                    writes, self._queued = self._queued, []
                    try:
                        await trio.to_thread.run_sync(
                            _hop, _write_all, self._connections[0], writes, limiter=self._limiter
                        )
                    finally:
                        for each in writes:
                            each.done.set()
        except trio.Cancelled:
            if write in self._queued:  # never taken: it never runs
                self._queued.remove(write)
                raise
            with trio.CancelScope(shield=True):
                await write.done.wait()
        assert write.outcome is not None
        return cast("T", write.outcome.unwrap())

    async def read(self, fn: Callable[[sqlite3.Connection], T], *, single: bool = False) -> T:
        """``fn(reader)`` in one read transaction, so it sees one snapshot (or alone,
        ``single``)."""
        conn = await self._idle.receive()
        try:
            return await trio.to_thread.run_sync(
                _hop, _transaction, conn, fn, None if single else "BEGIN", limiter=self._limiter
            )
        finally:
            self._idle_in.send_nowait(conn)


# -- the backend ------------------------------------------------------------------------------


class FileStorage:
    """Metadata, checkpoints and store in SQLite files; see the module docstring."""

    name = "file"
    cluster: Cluster | None = None  # one process at a time

    def __init__(self, db: _Database, checkpointer: FileCheckpointer, store: FileStore) -> None:
        tables = Tables.of(SQLITE)
        self.assistants = repos.Assistants(db, tables)
        self.threads = repos.Threads(db, tables)
        self.runs = repos.Runs(db, tables)
        self.crons = repos.Crons(db, tables)
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
    links: list[Link] = []

    def open_all() -> None:
        db.open()
        checkpoints = _connect(f"{path}-checkpoints", "DEFERRED")  # the saver commits itself
        links.append(Link(checkpoints))
        wal(checkpoints)
        store = _connect(f"{path}-store")
        links.append(Link(store))
        migrate_store(store, vectors=index is not None)

    def close_all() -> None:
        for link in links:
            link.close()
        db.close()

    try:
        await trio.to_thread.run_sync(open_all, limiter=limiter)
    except (sqlite3.Error, ConfigError) as exc:
        await trio.to_thread.run_sync(close_all, limiter=limiter)
        reason = exc.message if isinstance(exc, ConfigError) else exc
        raise ConfigError(f"storage {spec!r}: cannot open {path!r}: {reason}") from None
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
