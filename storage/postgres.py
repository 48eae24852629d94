"""The Postgres backend: one database that any number of processes share.

``--storage postgresql://...`` (or ``postgres://``; any libpq URL) keeps everything in one
PostgreSQL database:

* the metadata (assistants and their versions, threads, runs, crons), reached from Trio
  through a sync psycopg pool in worker threads (:class:`PgDatabase`: ``trio.to_thread``
  under this backend's own ``CapacityLimiter``, as large as the pool), one transaction a call;
* checkpoints in LangGraph's ``AsyncPostgresSaver`` (:class:`PostgresCheckpointer`) and the
  store in its ``AsyncPostgresStore`` (:class:`PostgresStore`), each with an asyncio pool of
  its own, made on the graph loop at first use and closed there when the storage closes;
* what the processes sharing the database coordinate with: the owner of each run (and its
  ``updated_at``), worker heartbeats and stored stream events, which
  :mod:`triograph.storage.pg_cluster` uses, and :func:`claim_orphans`, which takes over the
  runs of workers that are gone.

A record is one row: its JSONB document, plus the fields searches filter and sort on as
columns (text ones in the "C" collation, so they sort as Python compares strings).
``metadata`` and a thread's ``values`` are JSONB columns, searched and filtered by the SQL
that :mod:`triograph.storage.query` compiles to ``jsonb``, the memory backend's semantics
exactly (JSONB's own ``@>`` is not: it finds ``["a"]`` in ``["a", "b"]``); ties keep
insertion order (an identity column), NULLs sort first ascending. Foreign keys cascade as
the protocol says.

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
import datetime as dt
import functools
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Generic, TypeVar, cast

import attrs
import orjson
import psycopg
import trio
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
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
from langgraph.store.postgres import AsyncPostgresStore
from langgraph.store.postgres import PostgresStore as SyncPostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig, _namespace_to_text
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from triograph.core.infra import encoding
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import detached
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
from triograph.storage.file import _untimed, _version_of
from triograph.storage.pg_cluster import PostgresCluster
from triograph.storage.query import POSTGRES_JSON, Filters, Where

R = TypeVar("R", Assistant, AssistantVersion, Thread, Run, Cron)
T = TypeVar("T")
#: SQL and its parameters
_Sql = tuple[str, list[Any]]
_Connection = psycopg.Connection[Any]

#: seconds to connect before the database counts as unreachable
CONNECT_TIMEOUT = 5.0
#: connections of each pool (metadata; checkpoints; store); each starts with one
POOL_SIZE = 10
#: seconds to wait for another process's set-up of the same database
SETUP_WAIT = 120.0
#: seconds closing a graph-loop pool may take
CLOSE_TIMEOUT = 5.0
#: advisory locks, pairs of int4 keys (apart from pg_cluster's thread locks, one int8 each):
#: set-up and migrations ("trig" and a number, as pg_cluster's leader lock), and the lock
#: numbering an assistant's versions ("triv" and a hash of its id)
SETUP_LOCK = (0x74726967, 2)
MIGRATION_LOCK = (0x74726967, 3)
VERSION_LOCKS = 0x74726976

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
)


# -- JSON conditions ---------------------------------------------------------------------------
#
# SQL over a JSONB column that matches as the memory backend's Python does, built from the
# JSON at a path (``column #> path``): ``_matches`` is the comparison of LangGraph's memory
# store (``_compare_values``) that store filters use. The type checks sit in CASE, as SQL
# does not promise to evaluate AND in order.


def _at(column: str, path: Sequence[str]) -> _Sql:
    return f"({column} #> %s::text[])", [list(path)]


def _all(conditions: Iterable[_Sql]) -> _Sql:
    parts = list(conditions)
    if not parts:
        return "TRUE", []
    return "(" + " AND ".join(sql for sql, _ in parts) + ")", [p for _, ps in parts for p in ps]


def _typed(column: str, path: Sequence[str], kind: str, then: _Sql | None = None) -> _Sql:
    """The JSON at ``path`` is of ``kind`` (object, array, ...), and ``then`` holds."""
    at, params = _at(column, path)
    if then is None:
        return f"jsonb_typeof({at}) = '{kind}'", params
    return (
        f"CASE WHEN jsonb_typeof({at}) = '{kind}' THEN {then[0]} ELSE FALSE END",
        [*params, *then[1]],
    )


def _has(column: str, path: Sequence[str], key: str) -> _Sql:
    at, params = _at(column, path)
    return f"{at} ? %s", [*params, key]


def _spellings(want: Any) -> list[str]:
    """The JSON of the values Python finds equal to the scalar ``want``: ``True == 1``."""
    text = orjson.dumps(want).decode()
    if isinstance(want, bool | int | float) and want in (0, 1):
        return [text, "true" if want else "false", "1" if want else "0"]
    return [text]


def _sized(column: str, path: Sequence[str], want: dict[str, Any] | list[Any]) -> _Sql:
    """The JSON at ``path`` is an object (dict ``want``) or array (list) of its size."""
    at, params = _at(column, path)
    if isinstance(want, dict):
        size = f"(SELECT count(*) FROM jsonb_object_keys({at})) = %s"
        return _typed(column, path, "object", (size, [*params, len(want)]))
    return _typed(column, path, "array", (f"jsonb_array_length({at}) = %s", [*params, len(want)]))


def _equal(column: str, path: Sequence[str], want: Any) -> _Sql:
    """The JSON at ``path`` ``== want`` as Python compares (absent is None)."""
    if isinstance(want, dict):
        keys = [_has(column, path, k) for k in want]
        values = [_equal(column, (*path, k), v) for k, v in want.items()]
        return _all([_sized(column, path, want), *keys, *values])
    if isinstance(want, list):
        items = [_equal(column, (*path, str(i)), v) for i, v in enumerate(want)]
        return _all([_sized(column, path, want), *items])
    at, params = _at(column, path)
    if want is None:
        return f"COALESCE({at}, 'null') = 'null'", params
    return f"{at} = ANY(%s::jsonb[])", [*params, _spellings(want)]


_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
#: the strings Python's ``float()`` reads that Postgres reads alike (not "nan", not "1_0")
_FLOAT_TEXT = r"^\s*[+-]?((\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf|infinity)\s*$"


def _operator(column: str, path: Sequence[str], op: str, value: Any) -> _Sql:
    """A store filter operator; the ordering ones compare what ``float()`` makes of the
    value, as the memory store does (numbers, booleans, numeric strings)."""
    if op == "$eq":
        return _equal(column, path, value)
    if op == "$ne":
        sql, params = _equal(column, path, value)
        return f"NOT COALESCE({sql}, FALSE)", params
    if op not in _COMPARISONS:
        raise ValueError(f"Unsupported operator: {op}")
    try:
        bound = float(value)
    except (TypeError, ValueError):  # the memory store's float() fails on every item
        return "FALSE", []
    at, params = _at(column, path)
    text = f"({at} #>> '{{}}')"
    as_float = (
        f"CASE jsonb_typeof({at}) WHEN 'number' THEN {text}::float8 "
        f"WHEN 'boolean' THEN ({at} = 'true')::int::float8 "
        f"WHEN 'string' THEN CASE WHEN {text} ~* %s THEN {text}::float8 END END"
    )
    return (
        f"COALESCE({as_float} {_COMPARISONS[op]} %s, FALSE)",
        [*params, *params, *params, *params, _FLOAT_TEXT, *params, bound],
    )


def _matches(column: str, path: Sequence[str], want: Any) -> _Sql:
    """The store filter ``want`` holds for the JSON at ``path``."""
    if isinstance(want, dict):
        if any(k.startswith("$") for k in want):
            return _all(_operator(column, path, op, v) for op, v in want.items())
        fields = [_matches(column, (*path, k), v) for k, v in want.items()]
        return _all([_typed(column, path, "object"), *fields])
    if isinstance(want, list | tuple):
        items = [_matches(column, (*path, str(i)), v) for i, v in enumerate(want)]
        return _all([_sized(column, path, list(want)), *items])
    return _equal(column, path, want)


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
    """Every metadata connection: UTC (naive datetimes are UTC), JSON read by orjson."""
    conn.execute("SET TIME ZONE 'UTC'")
    conn.commit()
    set_json_loads(orjson.loads, conn)


async def _configure_graph(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every graph-loop connection: store items carry UTC timestamps."""
    await conn.execute("SET TIME ZONE 'UTC'")


def _graph_pool(conninfo: str) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
    """An asyncio pool as LangGraph's Postgres classes use them, opened by its owner."""
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=POOL_SIZE,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        configure=_configure_graph,
    )


def _scalar(conn: _Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    """The one value ``sql`` selects."""
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _close_on(loop: Any, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``close()`` on the graph loop ``loop`` and wait for it, at most
    :data:`CLOSE_TIMEOUT` seconds (from a worker thread). A closed loop took its tasks and
    their connections with it: nothing to do."""
    done = threading.Event()

    def start() -> None:
        loop.create_task(close()).add_done_callback(lambda _: done.set())

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop is closed
        return
    done.wait(CLOSE_TIMEOUT)


class PgDatabase:
    """The metadata connections: a sync psycopg pool, reached from Trio in worker threads.

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

    async def run(self, fn: Callable[[_Connection], T]) -> T:
        """``fn(connection)`` in a worker thread, in one transaction (rolled back if it
        raises). A Trio cancel waits for it to finish."""
        return await trio.to_thread.run_sync(self._transact, fn, limiter=self.limiter)

    def _transact(self, fn: Callable[[_Connection], T]) -> T:
        with self.pool.connection() as conn:  # commits, or rolls back if fn raises
            return fn(conn)


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


def _migrate(conn: _Connection) -> None:
    """Bring the schema to the latest :data:`MIGRATIONS`, all in one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS triograph_migrations ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = _scalar(conn, "SELECT COALESCE(MAX(version), 0) FROM triograph_migrations")
        if version > len(MIGRATIONS):
            raise ConfigError(
                f"schema version {version} is newer than this triograph's ({len(MIGRATIONS)})"
            )
        for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO triograph_migrations (version) VALUES (%s)", (number,))


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
        _migrate(conn)


def _open_pool(conninfo: str) -> ConnectionPool[Any]:
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo, min_size=1, max_size=POOL_SIZE, open=False, configure=_configure
    )
    try:
        pool.open(wait=True, timeout=CONNECT_TIMEOUT)
    except PoolTimeout:
        pool.close()
        raise
    return pool


# -- records as rows --------------------------------------------------------------------------


def _json(value: Any) -> str:
    return encoding.dumps(value).decode()


class _Table(Generic[R]):
    """How records of ``cls`` are rows of ``name``: ``columns`` (fields searched and sorted
    on, or computed by ``derived``), ``json`` (fields matched by containment, kept out of the
    document) and ``doc``. Every table has an identity column ``seq``: insertion order."""

    def __init__(
        self,
        name: str,
        cls: type[R],
        key: tuple[str, ...],
        columns: tuple[str, ...],
        json: tuple[str, ...] = (),
        derived: dict[str, Callable[[R], Any]] | None = None,
    ) -> None:
        self.name = name
        self.cls: type[R] = cls
        self.key = key
        self.columns = columns
        self.json = json
        self.derived: dict[str, Callable[[R], Any]] = derived or {}
        self.stored = [f'"{c}"' for c in (*columns, *json, "doc")]
        placeholders = ["%s"] * len(columns) + ["%s::jsonb"] * (len(json) + 1)
        self.values = ", ".join(placeholders)
        self.match_key = " AND ".join(f'"{k}" = %s' for k in key)
        self.insert = f"INSERT INTO {name} ({', '.join(self.stored)}) VALUES ({self.values})"
        self.upsert = f"{self.insert} ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
            f"{c} = EXCLUDED.{c}" for c in self.stored
        )
        self.update = f"UPDATE {name} SET " + ", ".join(
            f"{c} = {p}" for c, p in zip(self.stored, placeholders, strict=True)
        )
        #: what :meth:`load` takes: the JSON columns, then the document
        self.loaded = ", ".join(self.stored[len(columns) :])
        self.select = f"SELECT {self.loaded} FROM {name}"

    def row(self, record: R) -> list[Any]:
        fields = attrs.asdict(record, recurse=False)
        values: list[Any] = [self.column(record, c) for c in self.columns]
        values += [_json(fields.pop(c)) for c in self.json]
        return [*values, _json(fields)]

    def column(self, record: R, name: str) -> Any:
        derive = self.derived.get(name)
        return getattr(record, name) if derive is None else derive(record)

    def load(self, row: Sequence[Any]) -> R:
        """The record of a row selected by :attr:`select`."""
        data = row[-1]
        data.update(zip(self.json, row, strict=False))
        record: R = converter.structure(data, self.cls)
        return record

    def key_of(self, record: R) -> list[Any]:
        return [getattr(record, k) for k in self.key]

    def get(self, conn: _Connection, *key: Any) -> R | None:
        row = conn.execute(f"{self.select} WHERE {self.match_key}", key).fetchone()
        return None if row is None else self.load(row)

    def where(self, key: Any) -> Where:
        """The row of ``key`` (a one-column key)."""
        return Where(POSTGRES_JSON).eq(self.key[0], key)

    def insert_new(self, conn: _Connection, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        return conn.execute(f"{self.insert} ON CONFLICT DO NOTHING", self.row(record)).rowcount > 0

    def put(self, conn: _Connection, record: R) -> None:
        """Insert or replace in place (the row keeps its place in insertion order)."""
        conn.execute(self.upsert, self.row(record))

    def replace(self, conn: _Connection, record: R, where: Where) -> None:
        """Update the row ``where`` selects, if there is one."""
        conn.execute(f"{self.update} WHERE {where}", [*self.row(record), *where.params])

    def delete(self, conn: _Connection, where: Where) -> bool:
        return conn.execute(f"DELETE FROM {self.name} WHERE {where}", where.params).rowcount > 0

    def page(
        self,
        conn: _Connection,
        where: Where,
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
    ) -> tuple[list[R], int]:
        """One sorted page of matches and their number, as ``storage.memory.page`` sorts."""
        if sort_by not in self.columns:
            raise ValueError(f"cannot sort {self.name} by {sort_by!r}")
        order = "DESC NULLS LAST" if sort_order == "desc" else "ASC NULLS FIRST"
        rows = []
        if limit:
            rows = conn.execute(
                f"SELECT {self.loaded}, COUNT(*) OVER () FROM {self.name} WHERE {where} "
                f'ORDER BY "{sort_by}" {order}, seq LIMIT %s OFFSET %s',
                [*where.params, limit, offset],
            ).fetchall()
        if rows:
            return [self.load(r[:-1]) for r in rows], rows[0][-1]
        return [], _scalar(conn, f"SELECT COUNT(*) FROM {self.name} WHERE {where}", where.params)

    def rows(self, conn: _Connection, where: Where, tail: str, *params: Any) -> list[R]:
        found = conn.execute(f"{self.select} WHERE {where} {tail}", [*where.params, *params])
        return [self.load(r) for r in found]


class _ThreadTable(_Table[Thread]):
    def load(self, row: Sequence[Any]) -> Thread:
        thread = super().load(row)
        if thread.ttl and isinstance(thread.ttl.get("expires_at"), str):  # JSON has no datetime
            thread.ttl["expires_at"] = dt.datetime.fromisoformat(thread.ttl["expires_at"])
        return thread


class _RunTable(_Table[Run]):
    """Runs also keep their ``owner``: the worker that created or claimed them."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        owned = [*self.stored, "owner"]
        self.create_owned = (
            f"INSERT INTO runs ({', '.join(owned)}) VALUES ({self.values}, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in owned)
        )
        self.claim_owned = f"{self.update}, owner = %s WHERE {self.match_key}"

    def create(self, conn: _Connection, run: Run, owner: str) -> None:
        conn.execute(self.create_owned, [*self.row(run), owner])

    def claim(self, conn: _Connection, run: Run, owner: str) -> None:
        conn.execute(self.claim_owned, [*self.row(run), owner, run.run_id])


_ASSISTANTS = _Table(
    "assistants",
    Assistant,
    ("assistant_id",),
    ("assistant_id", "graph_id", "name", "name_lower", "created_at", "updated_at"),
    ("metadata",),
    {"name_lower": lambda a: a.name.lower()},
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
    {"expires_at": lambda t: (t.ttl or {}).get("expires_at")},
)
_RUNS = _RunTable(
    "runs", Run, ("run_id",), ("run_id", "thread_id", "status", "created_at", "updated_at")
)
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

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        """``where``, and ``filters`` on the record's metadata."""
        return where.allowed('"metadata"', filters)

    async def get(self, key: str, *, filters: Filters | None = None) -> R | None:
        if not filters:
            return await self._db.run(lambda conn: self.table.get(conn, key))
        found = await self._rows(self._scoped(self.table.where(key), filters), "")
        return found[0] if found else None

    async def update(self, record: R, *, filters: Filters | None = None) -> None:
        where = self._scoped(self.table.where(getattr(record, self.table.key[0])), filters)
        await self._db.run(lambda conn: self.table.replace(conn, record, where))

    async def delete(self, key: str, *, filters: Filters | None = None) -> bool:
        where = self._scoped(self.table.where(key), filters)
        return await self._db.run(lambda conn: self.table.delete(conn, where))

    async def _insert(self, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        return await self._db.run(lambda conn: self.table.insert_new(conn, record))

    async def _put(self, record: R) -> None:
        await self._db.run(lambda conn: self.table.put(conn, record))

    async def _page(
        self, where: Where, sort_by: str, sort_order: str, limit: int, offset: int
    ) -> tuple[list[R], int]:
        return await self._db.run(
            lambda conn: self.table.page(conn, where, sort_by, sort_order, limit, offset)
        )

    async def _rows(self, where: Where, tail: str, *params: Any) -> list[R]:
        return await self._db.run(lambda conn: self.table.rows(conn, where, tail, *params))


class _Assistants(_Repo[Assistant]):
    table = _ASSISTANTS

    async def create(self, assistant: Assistant) -> bool:
        def insert(conn: _Connection) -> bool:
            created = _ASSISTANTS.insert_new(conn, assistant)
            if created:
                _VERSIONS.put(conn, _version_of(assistant))
            return created

        return await self._db.run(insert)

    async def new_version(self, assistant: Assistant) -> Assistant:
        def store(conn: _Connection) -> Assistant:
            # the assistant's versions are numbered one at a time (it may not exist yet)
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (VERSION_LOCKS, assistant.assistant_id),
            )
            stored = attrs.evolve(assistant)
            stored.version = _scalar(
                conn,
                "SELECT COALESCE(MAX(version), 0) + 1 FROM assistant_versions "
                "WHERE assistant_id = %s",
                (assistant.assistant_id,),
            )
            _ASSISTANTS.put(conn, stored)
            _VERSIONS.put(conn, _version_of(stored))
            return stored

        return await self._db.run(store)

    async def get_version(self, assistant_id: str, version: int) -> AssistantVersion | None:
        return await self._db.run(lambda conn: _VERSIONS.get(conn, assistant_id, version))

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[AssistantVersion]:
        where = Where(POSTGRES_JSON).eq("assistant_id", assistant_id).contains("metadata", metadata)
        page = await self._db.run(
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
        where = Where(POSTGRES_JSON).within("graph_id", graph_ids).contains("metadata", metadata)
        self._scoped(where, filters)
        if name:  # lowered by Python, as the memory backend compares
            where.add("strpos(name_lower, %s) > 0", name.lower())
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
        where = Where(POSTGRES_JSON).within("thread_id", ids).eq("status", status)
        where.contains("metadata", metadata).contains("values", values)
        self._scoped(where, filters)
        return await self._page(where, sort_by, sort_order, limit, offset)

    async def expired(self, at: dt.datetime, *, limit: int = 100) -> list[Thread]:
        where = Where(POSTGRES_JSON).add("expires_at <= %s", at)
        return await self._rows(where, "ORDER BY expires_at, seq LIMIT %s", limit)


class _Runs(_Repo[Run]):
    """Runs are filtered by their thread's metadata (they are authorized on it)."""

    table = _RUNS

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        if not filters:
            return where
        inner = Where(POSTGRES_JSON).allowed("threads.metadata", filters)
        return where.add(
            f"thread_id IN (SELECT thread_id FROM threads WHERE {inner})", *inner.params
        )

    def __init__(self, db: PgDatabase, worker_id: str) -> None:
        super().__init__(db)
        self._worker_id = worker_id

    async def create(self, run: Run) -> None:
        """Store the run as this worker's."""
        await self._db.run(lambda conn: _RUNS.create(conn, run, self._worker_id))

    async def for_thread(
        self, thread_id: str, *, status: str | None = None, limit: int = 10, offset: int = 0
    ) -> list[Run]:
        where = Where(POSTGRES_JSON).eq("thread_id", thread_id).eq("status", status)
        return await self._rows(
            where, "ORDER BY created_at DESC, run_id DESC LIMIT %s OFFSET %s", limit, offset
        )

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Run]:
        where = Where(POSTGRES_JSON).within("status", statuses).eq("thread_id", thread_id)
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
        where = Where(POSTGRES_JSON).eq("assistant_id", assistant_id).eq("thread_id", thread_id)
        where.eq("enabled", enabled).contains("metadata", metadata)
        self._scoped(where, filters)
        return await self._page(where, sort_by, sort_order, limit, offset)

    async def due(self, at: dt.datetime, *, limit: int = 100) -> list[Cron]:
        where = Where(POSTGRES_JSON).add("enabled").add("next_run_date <= %s", at)
        return await self._rows(where, "ORDER BY next_run_date, seq LIMIT %s", limit)


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
            _RUNS.claim(conn, run, worker_id)
        return runs

    return await db.run(claim)


# -- checkpoints and store, on the graph loop -------------------------------------------------
#
# Both are asyncio objects of the graph loop, which this backend is not handed. Each is built
# here without what needs the running loop (its asyncio lock and pool; the store's batching
# queue and task) and finishes construction at its first use, which is on the graph loop (the
# bridge is the only way in). Their tables were set up at open.

_DELETE_FOR_RUNS = """
WITH gone AS (
    DELETE FROM checkpoints WHERE metadata ->> 'run_id' = ANY(%(runs)s::text[])
    RETURNING thread_id, checkpoint_ns, checkpoint_id, checkpoint -> 'channel_versions' AS v
), writes AS (
    DELETE FROM checkpoint_writes w USING gone g
    WHERE w.thread_id = g.thread_id AND w.checkpoint_ns = g.checkpoint_ns
        AND w.checkpoint_id = g.checkpoint_id
), freed AS (
    SELECT DISTINCT g.thread_id, g.checkpoint_ns, v.key AS channel, v.value AS version
    FROM gone g CROSS JOIN LATERAL jsonb_each_text(g.v) AS v
)
DELETE FROM checkpoint_blobs b USING freed f
WHERE b.thread_id = f.thread_id AND b.checkpoint_ns = f.checkpoint_ns
    AND b.channel = f.channel AND b.version = f.version
    AND NOT EXISTS (
        SELECT 1 FROM checkpoints c
        WHERE c.thread_id = f.thread_id AND c.checkpoint_ns = f.checkpoint_ns
            AND c.checkpoint -> 'channel_versions' ->> f.channel = f.version
            AND (c.metadata ->> 'run_id' = ANY(%(runs)s::text[])) IS NOT TRUE)
"""

_COPY_THREAD = (
    """INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
        type, checkpoint, metadata)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,
        CASE WHEN metadata ? 'thread_id'
            THEN jsonb_set(metadata, '{thread_id}', to_jsonb(%(target)s::text))
            ELSE metadata END
    FROM checkpoints WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
        parent_checkpoint_id = EXCLUDED.parent_checkpoint_id, type = EXCLUDED.type,
        checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata""",
    """INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(target)s, checkpoint_ns, channel, version, type, blob
    FROM checkpoint_blobs WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO UPDATE SET
        type = EXCLUDED.type, blob = EXCLUDED.blob""",
    """INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id,
        task_path, idx, channel, type, blob)
    SELECT %(target)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob
    FROM checkpoint_writes WHERE thread_id = %(source)s
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
        task_path = EXCLUDED.task_path, channel = EXCLUDED.channel, type = EXCLUDED.type,
        blob = EXCLUDED.blob""",
)


class PostgresCheckpointer(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` that can also delete the checkpoints written by given runs and
    copy a thread's checkpoints to another thread, as ``MemoryCheckpointer``.

    Every operation goes through :meth:`_cursor`, which finishes construction at the first
    (making the pool). Unlike its parent's, a cursor takes no lock shared by all: each uses
    a connection of its own from the pool, so runs checkpoint at once.
    """

    def __init__(self, conninfo: str) -> None:
        BaseCheckpointSaver.__init__(self)
        self.conninfo = conninfo
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = None
        self.ready = False

    async def setup(self) -> None:
        """Make and open the pool (the tables were set up when the storage opened)."""
        if self.pool is None:
            self.pool = _graph_pool(self.conninfo)
            AsyncPostgresSaver.__init__(self, self.pool)
        if not self.ready:
            pool = self.pool
            await detached(lambda: self.loop.create_task(pool.open()))  # workers: no job's
            self.ready = True

    @asynccontextmanager
    async def _cursor(
        self, *, pipeline: bool = False
    ) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
        await self.setup()
        assert self.pool is not None
        async with self.pool.connection() as conn:
            if pipeline and self.supports_pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            elif pipeline:
                async with (
                    conn.transaction(),
                    conn.cursor(binary=True, row_factory=dict_row) as cur,
                ):
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Checkpoints whose metadata ``run_id`` is one of ``run_ids``, their writes, and the
        channel values no other checkpoint uses."""
        async with self._cursor() as cur:
            await cur.execute(_DELETE_FOR_RUNS, {"runs": list(run_ids)})

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Every checkpoint, channel value and write of the source under the target's id;
        checkpoint ids are kept, ``thread_id`` in checkpoint metadata is rewritten."""
        ids = {"source": source_thread_id, "target": target_thread_id}
        async with self._cursor() as cur, cur.connection.transaction():
            for sql in _COPY_THREAD:
                await cur.execute(sql, ids)

    def close(self) -> None:
        """Close the pool on the graph loop (from a worker thread)."""
        if self.pool is not None:
            _close_on(self.loop, self.pool.close)


class PostgresStore(AsyncPostgresStore):
    """``AsyncPostgresStore`` with the memory store's semantics: TTL on its ``clock``, and
    filters that compare as the memory store does.

    An expired item is deleted before anything could see it: the item itself before a get,
    every expired item before a search or a namespace listing and every
    ``sweep_interval_minutes``, so no sweeper task runs. Expiries are set and refreshed on
    ``clock`` rather than on the database's clock, so tests move it instead of waiting.

    Every operation passes :meth:`_ensure_task` first; the first call finishes construction.
    """

    supports_ttl = True

    def __init__(
        self,
        conninfo: str,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], dt.datetime] = now,
    ) -> None:
        self.conninfo = conninfo
        self.opened = self.ready = False
        self.ttl_config = ttl
        self.clock = clock
        self._index = index
        self._task = None  # read by the parent's __del__
        self._sweeps = SweepSchedule(ttl)

    def _ensure_task(self) -> None:
        if not self.opened:
            self.opened = True
            index = cast("PostgresIndexConfig | None", self._index)
            AsyncPostgresStore.__init__(
                self, _graph_pool(self.conninfo), index=index, ttl=self.ttl_config
            )
        detached(super()._ensure_task)  # the batch task belongs to no job

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
        return cast("AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]", self.conn)

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops, at = list(ops), self.clock()
        if not self.ready:
            await self.pool.open()  # in the batch task, which belongs to no job
            self.ready = True
        await self._execute(self._expiring(ops, at))
        results = await super().abatch([_as_sql(op) for op in ops])
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
        everything = op._replace(query=None, offset=0, limit=cast("int", None))  # LIMIT NULL
        items = cast("list[SearchItem]", (await super().abatch([_as_sql(everything)]))[0])
        keys = ([_namespace_to_text(i.namespace) for i in items], [i.key for i in items])
        async with self.pool.connection() as conn:
            indexed = await conn.execute(
                "SELECT prefix, key FROM store_vectors WHERE (prefix, key) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                keys,
            )
            vectors = {(row["prefix"], row["key"]) for row in await indexed.fetchall()}
        return [i for i in items if (_namespace_to_text(i.namespace), i.key) not in vectors][:room]

    def _expiring(self, ops: list[Op], at: dt.datetime) -> list[_Sql]:
        if self._sweeps.due(ops, at):
            return [("DELETE FROM store WHERE expires_at <= %s", [at])]
        return [
            (
                "DELETE FROM store WHERE prefix = %s AND key = %s AND expires_at <= %s",
                [_namespace_to_text(op.namespace), op.key, at],
            )
            for op in ops
            if isinstance(op, GetOp)
        ]

    def _settling(self, ops: list[Op], results: list[Result], at: dt.datetime) -> list[_Sql]:
        """Set the expiry of what was put with a TTL, refresh the expiry of what was read."""
        out: list[_Sql] = []
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, PutOp) and op.value is not None and op.ttl is not None:
                out.append(
                    (
                        "UPDATE store SET expires_at = %s, ttl_minutes = %s "
                        "WHERE prefix = %s AND key = %s",
                        [
                            at + dt.timedelta(minutes=op.ttl),
                            op.ttl,
                            _namespace_to_text(op.namespace),
                            op.key,
                        ],
                    )
                )
            elif isinstance(op, GetOp) and op.refresh_ttl and result is not None:
                out.append(_refresh(op.namespace, op.key, at))
            elif isinstance(op, SearchOp) and op.refresh_ttl:
                out.extend(_refresh(i.namespace, i.key, at) for i in result or ())  # type: ignore[union-attr]
        return out

    def _get_filter_condition(self, key: str, op: str, value: Any) -> tuple[str, list[Any]]:
        """Each filter entry, as :func:`_as_sql` spelled it."""
        if op == "$match":
            return _matches("value", (key,), value)
        return _operator("value", (key,), op, value)

    async def _execute(self, statements: list[_Sql]) -> None:
        if statements:
            async with self.pool.connection() as conn, conn.transaction():
                for sql, params in statements:
                    await conn.execute(sql, params)

    def close(self) -> None:
        """Close the pool on the graph loop (from a worker thread)."""
        if self.opened:
            _close_on(self._loop, self.pool.close)


def _as_sql(op: Op) -> Op:
    """``op`` without the TTL work :class:`PostgresStore` does itself, its filter entries
    each an operator for ``_get_filter_condition`` (``$match``: a plain value to match)."""
    op = _untimed(op)
    if isinstance(op, SearchOp) and op.filter:
        spelled = {
            key: want
            if isinstance(want, dict) and any(k.startswith("$") for k in want)
            else {"$match": want}
            for key, want in op.filter.items()
        }
        return op._replace(filter=spelled)
    return op


def _refresh(namespace: tuple[str, ...], key: str, at: dt.datetime) -> _Sql:
    return (
        "UPDATE store SET expires_at = %s + ttl_minutes * interval '1 minute' "
        "WHERE prefix = %s AND key = %s AND ttl_minutes IS NOT NULL",
        [at, _namespace_to_text(namespace), key],
    )


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
        self.assistants = _Assistants(db)
        self.threads = _Threads(db)
        self.runs = _Runs(db, worker_id)
        self.crons = _Crons(db)
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
    checkpointer = PostgresCheckpointer(conninfo)
    store = PostgresStore(conninfo, index=index, ttl=ttl)
    storage = PostgresStorage(db, uuid.uuid4().hex, checkpointer, store)

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
