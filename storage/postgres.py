"""The Postgres backend: one database that any number of processes share.

``--storage postgresql://...`` (or ``postgres://``; any libpq URL) keeps everything in one
PostgreSQL database:

* the metadata (assistants and their versions, threads, runs, crons), reached from Trio
  through a sync psycopg pool in worker threads (:class:`PgDatabase`: ``trio.to_thread``
  under this backend's own ``CapacityLimiter``, as large as the pool), one transaction a call
  (a single statement is sent alone: one round trip);
* checkpoints in LangGraph's ``AsyncPostgresSaver`` and the store in its
  ``AsyncPostgresStore`` (:mod:`triograph.storage.pg_graph`), each with an asyncio pool of
  its own, made on the graph loop at first use and closed there when the storage closes;
* what the processes sharing the database coordinate with: the owner of each run (and its
  ``updated_at``), worker heartbeats and stored stream events, which
  :mod:`triograph.storage.pg_cluster` uses, and :func:`claim_orphans`, which takes over the
  runs of workers that are gone.

The repositories are the SQL layer's (:mod:`triograph.storage.repos` over
:mod:`triograph.storage.tables`, in the Postgres dialect of :mod:`triograph.storage.sql`);
runs also record their owner here. Text columns are in the "C" collation, so they sort as
Python compares strings; ``metadata`` and ``values`` are JSONB, searched and filtered with
the SQL :mod:`triograph.storage.query` compiles (JSONB's own ``@>`` is not the memory
backend's containment: it finds ``["a"]`` in ``["a", "b"]``); ties keep insertion order
(an identity column ``seq``). Foreign keys cascade as the protocol says.

The schema is versioned in ``triograph_migrations``: the :data:`MIGRATIONS` a database lacks
are applied at open in one transaction under an advisory transaction lock, so processes
opening a database at once apply each exactly once. LangGraph's saver and store keep their
own migration tables, which are not safe against concurrent set-ups: their ``setup()`` runs
before ours under a session advisory lock, polled for rather than waited on (a session
waiting for an advisory lock holds a snapshot, which their ``CREATE INDEX CONCURRENTLY``
would wait for in turn: a deadlock).
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar, cast

import psycopg
import trio
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.store.base import IndexConfig
from langgraph.store.postgres import PostgresStore as SyncPostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Assistant, Run, Thread, now
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import AssistantChanged, Cluster, StorageRegistry
from triograph.core.infra.store_config import store_index, store_ttl
from triograph.storage import json_nul, repos
from triograph.storage.pg_cluster import PostgresCluster
from triograph.storage.pg_graph import PostgresCheckpointer, PostgresStore
from triograph.storage.sql import POSTGRES, Counts, migrate
from triograph.storage.tables import Tables

T = TypeVar("T")
_Connection = psycopg.Connection[Any]

#: seconds to connect before the database counts as unreachable
CONNECT_TIMEOUT = 5.0
#: connections of the metadata pool (the graph loop's have as many: ``pg_graph.POOL_SIZE``)
POOL_SIZE = 10
#: seconds to wait for another process's set-up of the same database
SETUP_WAIT = 120.0
#: the set-up's advisory lock, a pair of int4 keys ("trig" and a number, as pg_cluster's
#: leader lock; ``sql.PostgresDialect`` has the migrations' and the assistant versions')
SETUP_LOCK = (0x74726967, 2)

#: the metadata schema: the statements of each version, in order (``triograph_migrations``)
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE assistants (
            assistant_id TEXT COLLATE "C" PRIMARY KEY, graph_id TEXT COLLATE "C" NOT NULL,
            name TEXT COLLATE "C" NOT NULL, name_lower TEXT COLLATE "C" NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
            metadata JSONB NOT NULL, doc JSONB NOT NULL,
            seq BIGINT GENERATED ALWAYS AS IDENTITY)""",
        """CREATE TABLE assistant_versions (
            assistant_id TEXT COLLATE "C" NOT NULL REFERENCES assistants ON DELETE CASCADE,
            version INTEGER NOT NULL, metadata JSONB NOT NULL, doc JSONB NOT NULL,
            seq BIGINT GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (assistant_id, version))""",
        """CREATE TABLE threads (
            thread_id TEXT COLLATE "C" PRIMARY KEY, status TEXT COLLATE "C" NOT NULL,
            created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
            state_updated_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ,
            metadata JSONB NOT NULL, "values" JSONB NOT NULL, doc JSONB NOT NULL,
            seq BIGINT GENERATED ALWAYS AS IDENTITY)""",
        "CREATE INDEX threads_expiry ON threads (expires_at) WHERE expires_at IS NOT NULL",
        """CREATE TABLE runs (
            run_id TEXT COLLATE "C" PRIMARY KEY,
            thread_id TEXT COLLATE "C" NOT NULL REFERENCES threads ON DELETE CASCADE,
            status TEXT COLLATE "C" NOT NULL, created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL, owner TEXT, doc JSONB NOT NULL,
            seq BIGINT GENERATED ALWAYS AS IDENTITY)""",
        "CREATE INDEX runs_by_thread ON runs (thread_id, created_at)",
        "CREATE INDEX runs_by_status ON runs (status, created_at)",
        "CREATE INDEX runs_in_flight ON runs (created_at) WHERE status IN ('pending', 'running')",
        """CREATE TABLE crons (
            cron_id TEXT COLLATE "C" PRIMARY KEY,
            assistant_id TEXT COLLATE "C" NOT NULL REFERENCES assistants ON DELETE CASCADE,
            thread_id TEXT COLLATE "C" REFERENCES threads ON DELETE CASCADE,
            enabled BOOLEAN NOT NULL, next_run_date TIMESTAMPTZ, end_time TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL,
            metadata JSONB NOT NULL, doc JSONB NOT NULL,
            seq BIGINT GENERATED ALWAYS AS IDENTITY)""",
        "CREATE INDEX crons_due ON crons (next_run_date) WHERE enabled",
        "CREATE INDEX crons_by_assistant ON crons (assistant_id)",
        "CREATE INDEX crons_by_thread ON crons (thread_id)",
        """CREATE TABLE workers (
            worker_id TEXT PRIMARY KEY, heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now())""",
        """CREATE TABLE run_events (
            run_id TEXT NOT NULL REFERENCES runs ON DELETE CASCADE, seq INTEGER NOT NULL,
            event TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (run_id, seq))""",
        # LangGraph's tables, set up before these: rollback deletes checkpoints by run, and
        # store TTLs are minutes with fractions, as in the memory store
        "CREATE INDEX triograph_checkpoints_by_run ON checkpoints ((metadata ->> 'run_id'))",
        "ALTER TABLE store ALTER COLUMN ttl_minutes TYPE DOUBLE PRECISION",
    ),
    (
        # the thread-centric protocol's log (pg_cluster): one sequence per thread, shared by
        # every process, and the events it numbered
        """CREATE TABLE thread_event_seqs (
            thread_id TEXT COLLATE "C" PRIMARY KEY REFERENCES threads ON DELETE CASCADE,
            seq BIGINT NOT NULL)""",
        """CREATE TABLE thread_events (
            thread_id TEXT COLLATE "C" NOT NULL REFERENCES threads ON DELETE CASCADE,
            seq BIGINT NOT NULL, run_id TEXT COLLATE "C" NOT NULL, ms BIGINT NOT NULL,
            event TEXT NOT NULL, data BYTEA NOT NULL, PRIMARY KEY (thread_id, seq))""",
        "CREATE INDEX thread_events_by_run ON thread_events (thread_id, run_id, seq)",
    ),
)


# -- connections ------------------------------------------------------------------------------


def _redacted(spec: str) -> str:
    """``spec`` without its password (in ``user:password@`` or a ``password=`` parameter)."""
    spec = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", spec)
    return re.sub(r"(password=)[^&\s]*", r"\1***", spec)


def _conninfo(spec: str) -> str:
    """The connection string of ``spec``, with a connect timeout unless it names one."""
    try:
        params = conninfo_to_dict(spec)
        if "connect_timeout" in params:
            return make_conninfo(spec)
        return make_conninfo(spec, connect_timeout=str(int(CONNECT_TIMEOUT)))
    except psycopg.Error as exc:
        raise ConfigError(f"storage {_redacted(spec)!r}: not a PostgreSQL URL: {exc}") from None


def _configure(conn: _Connection) -> None:
    """Every metadata connection: autocommit (a transaction is explicit), UTC (naive
    datetimes are UTC), JSON read by orjson (NUL characters unescaped:
    :mod:`triograph.storage.json_nul`)."""
    conn.execute("SET TIME ZONE 'UTC'")
    set_json_loads(json_nul.loads, conn)


def _scalar(conn: _Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value ``sql`` selects."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


class PgDatabase:
    """The metadata connections: a sync psycopg pool of autocommit connections, reached
    from Trio in worker threads (the :class:`~triograph.storage.sql.SqlEngine` of the
    repositories). A call is one transaction, unless it is a single statement
    (``single=True``): that one is sent alone, a transaction of its own, one round trip
    instead of three (``BEGIN``, the statement, ``COMMIT``).

    Resource handling: the backend opens the pool before making this and closes it after
    the storage (and its cluster) closed.
    """

    def __init__(
        self, conninfo: str, pool: ConnectionPool[Any], limiter: trio.CapacityLimiter
    ) -> None:
        #: where to open connections of one's own
        self.conninfo = conninfo
        self.pool = pool
        #: admits the worker threads that use the pool's connections (as many as it has)
        self.limiter = limiter
        self.dialect = POSTGRES
        self._counts = Counts.of_process()

    async def run(self, fn: Callable[[_Connection], T], *, single: bool = False) -> T:
        """``fn(connection)`` in a worker thread, in one transaction (rolled back if it
        raises), or with ``single`` alone (``fn`` sends one statement). A Trio cancel waits
        for it to finish."""
        return await trio.to_thread.run_sync(self._transact, fn, single, limiter=self.limiter)

    read = write = run

    def _transact(self, fn: Callable[[_Connection], T], single: bool) -> T:
        with self.pool.connection() as conn:
            if self._counts is not None:
                self._counts.add(calls=1, transactions=int(not single), trips=0 if single else 2)
                conn = cast("_Connection", _Counted(conn, self._counts))
            if single:
                return fn(conn)
            with conn.transaction():  # commits, or rolls back if fn raises
                return fn(conn)


class _Counted:
    """A connection that counts its statements and round trips (``sql.Counts``)."""

    def __init__(self, conn: _Connection, counts: Counts) -> None:
        self._conn = conn
        self._counts = counts

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self._counts.add(statements=1, trips=1)
        return self._conn.execute(query, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


@contextmanager
def _setup_lock(conn: _Connection) -> Iterator[None]:
    """Hold the set-up lock (a session advisory lock), polling for it."""
    deadline = time.monotonic() + SETUP_WAIT
    while not _scalar(conn, "SELECT pg_try_advisory_lock(%s, %s)", SETUP_LOCK):
        if time.monotonic() > deadline:
            raise ConfigError(
                f"another process has been setting the database up for {SETUP_WAIT:g} s"
            )
        time.sleep(0.02)
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # else closing the connection unlocks
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", SETUP_LOCK)


def _set_up(conninfo: str, index: IndexConfig | None) -> None:
    """Create or migrate LangGraph's tables and ours (in a worker thread)."""
    with psycopg.connect(conninfo, autocommit=True) as conn, _setup_lock(conn):
        dicts = cast("psycopg.Connection[DictRow]", conn)  # LangGraph's cursors make dict rows
        PostgresSaver(dicts).setup()
        if index is not None:
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.Error as exc:
                raise ConfigError(
                    "store.index needs the PostgreSQL extension 'vector' (pgvector), which "
                    f"this database cannot create: {exc.diag.message_primary or exc}"
                ) from None
        SyncPostgresStore(dicts, index=cast("PostgresIndexConfig", index)).setup()
        migrate(conn, POSTGRES, MIGRATIONS)


def _open_pool(conninfo: str) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo,
        min_size=1,
        max_size=POOL_SIZE,
        open=False,
        configure=_configure,
        kwargs={"autocommit": True},
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except PoolTimeout:
        pool.close()
        raise
    return pool


# -- runs and their owners --------------------------------------------------------------------

_TABLES = Tables.of(POSTGRES)
_RUNS = _TABLES.runs
_OWNED = [*_RUNS.stored, "owner"]
_CREATE_OWNED = (
    f"INSERT INTO runs ({', '.join(_OWNED)}) VALUES ({_RUNS.values}, %s) "
    "ON CONFLICT (run_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _OWNED)
)
_CLAIM = f"{_RUNS.update}, owner = %s WHERE {_RUNS.match_key}"
#: ``_CREATE_OWNED`` (and a new thread's insert) only if the run's assistant is stored as
#: the copy the run was made from
_CURRENT = "current AS (SELECT FROM assistants WHERE assistant_id = %s AND updated_at = %s)"
_CREATE_IF_CURRENT = (
    f"WITH {_CURRENT} INSERT INTO runs ({', '.join(_OWNED)}) "
    f"SELECT {_RUNS.values}, %s WHERE EXISTS (SELECT FROM current) "
    "ON CONFLICT (run_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in _OWNED)
)
_CREATE_WITH_THREAD_IF_CURRENT = _CREATE_IF_CURRENT.replace(
    f"WITH {_CURRENT}",
    f"WITH {_CURRENT}, thread AS (INSERT INTO threads ({', '.join(_TABLES.threads.stored)}) "
    f"SELECT {_TABLES.threads.values} WHERE EXISTS (SELECT FROM current))",
    1,
)


class _Runs(repos.Runs):
    """Runs also keep their ``owner``: the worker that created or claimed them."""

    def __init__(self, db: PgDatabase, worker_id: str) -> None:
        super().__init__(db, _TABLES)
        self._worker_id = worker_id

    async def create(
        self, run: Run, *, thread: Thread | None = None, assistant: Assistant | None = None
    ) -> None:
        """Store the run as this worker's; a new thread with it, and the check that the
        assistant is unchanged, in the same statement."""
        row = [*_RUNS.row(run), self._worker_id]
        if assistant is None:
            sql = _CREATE_OWNED
            if thread is not None:
                sql = f"WITH thread AS ({_TABLES.threads.insert}) {sql}"
                row = [*_TABLES.threads.row(thread), *row]
            await self._engine.write(lambda conn: conn.execute(sql, row), single=True)
            return
        sql = _CREATE_IF_CURRENT if thread is None else _CREATE_WITH_THREAD_IF_CURRENT
        row = [run.assistant_id, assistant.updated_at, *row]
        if thread is not None:
            row[2:2] = _TABLES.threads.row(thread)
        done = await self._engine.write(lambda conn: conn.execute(sql, row).rowcount, single=True)
        if not done:
            raise AssistantChanged(run.assistant_id)


_ORPHANS = f"""{_RUNS.select} WHERE status IN ('pending', 'running')
    AND (owner IS NULL OR owner NOT IN (
        SELECT worker_id FROM workers WHERE heartbeat_at > now() - make_interval(secs => %s)))
    AND owner IS DISTINCT FROM %s
    ORDER BY created_at, run_id LIMIT %s FOR UPDATE SKIP LOCKED"""


async def claim_orphans(db: PgDatabase, worker_id: str, lease: float, limit: int) -> list[Run]:
    """Take over up to ``limit`` orphaned runs for ``worker_id``, oldest first, in one
    transaction: ``pending`` or ``running`` runs owned by nobody or by a worker without a
    heartbeat in the last ``lease`` seconds. Rows another transaction has locked are skipped,
    so two workers never claim the same run. A ``running`` one goes back to ``pending`` with
    ``attempt`` one higher. Returns the runs as now stored (see ``Cluster.claim``)."""

    def claim(conn: _Connection) -> list[Run]:
        runs = [_RUNS.load(r) for r in conn.execute(_ORPHANS, (lease, worker_id, limit))]
        at = now()
        for run in runs:
            if run.status == "running":
                run.status, run.attempt, run.updated_at = "pending", run.attempt + 1, at
            conn.execute(_CLAIM, [*_RUNS.row(run), worker_id, run.run_id])
        return runs

    return await db.run(claim)


# -- the backend ------------------------------------------------------------------------------


class PostgresStorage:
    """Metadata, checkpoints and store in one PostgreSQL database; see the module docstring."""

    name = "postgres"

    def __init__(
        self,
        db: PgDatabase,
        worker_id: str,
        checkpointer: PostgresCheckpointer,
        store: PostgresStore,
    ) -> None:
        self.db = db
        #: this process among the workers sharing the database; owner of the runs it creates
        self.worker_id = worker_id
        self.assistants = repos.Assistants(db, _TABLES)
        self.threads = repos.Threads(db, _TABLES)
        self.runs = _Runs(db, worker_id)
        self.crons = repos.Crons(db, _TABLES)
        self.cluster: Cluster | None = None
        self._checkpointer = checkpointer
        self._store = store

    @property
    def checkpointer(self) -> PostgresCheckpointer:
        return self._checkpointer

    @property
    def store(self) -> PostgresStore:
        return self._store


@asynccontextmanager
async def open_postgres_storage(spec: str, settings: Settings) -> AsyncIterator[PostgresStorage]:
    """Open (creating and migrating) the database of ``spec`` for the block, its cluster
    running; close every connection after. A database that cannot be reached or set up is a
    ``ConfigError`` naming the spec (without its password) and why."""
    index, ttl = store_index(settings), store_ttl(settings)
    conninfo = _conninfo(spec)
    limiter = trio.CapacityLimiter(POOL_SIZE)
    try:
        await trio.to_thread.run_sync(_set_up, conninfo, index, limiter=limiter)
        pool = await trio.to_thread.run_sync(_open_pool, conninfo, limiter=limiter)
    except psycopg.Error as exc:  # a PoolTimeout too
        raise ConfigError(f"storage {_redacted(spec)!r}: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"storage {_redacted(spec)!r}: {exc.message}") from None
    db = PgDatabase(conninfo, pool, limiter)
    worker_id = uuid.uuid4().hex
    checkpointer = PostgresCheckpointer(conninfo, owner=worker_id)  # fenced: see its docs
    store = PostgresStore(conninfo, index=index, ttl=ttl)
    storage = PostgresStorage(db, worker_id, checkpointer, store)

    def close() -> None:
        checkpointer.close()
        store.close()
        pool.close()

    try:
        claim = functools.partial(claim_orphans, db, storage.worker_id, settings.lease)
        cluster = PostgresCluster(db, storage.worker_id, settings.lease, claim)
        storage.cluster = cluster
        async with cluster.running():
            yield storage
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(close, limiter=limiter)


@hookimpl
def triograph_register_storage(registry: StorageRegistry) -> None:
    registry.add("postgres", open_postgres_storage)
