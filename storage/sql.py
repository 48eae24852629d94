"""The SQL backends' common ground: the engine a repository runs on, and the dialects.

The repositories (:mod:`triograph.storage.repos`) and tables
(:mod:`triograph.storage.tables`) are written once over two small things:

* an :class:`SqlEngine`, which runs a plain function on a DB-API connection (stdlib
  ``sqlite3``, psycopg 3: both have ``conn.execute(sql, params)`` returning a cursor) in a
  worker thread, in one transaction: :meth:`~SqlEngine.read` for reads (a snapshot),
  :meth:`~SqlEngine.write` for writes; a single statement (``single=True``) is its own
  transaction. Each backend keeps its connections and pooling;
* a :class:`Dialect`: what differs between SQLite and Postgres in what the layer says:
  placeholders, JSON (:class:`triograph.storage.query.JsonDialect`), how a column is stored
  and read back, NULL ordering, insertion order, substring search, the lock that numbers an
  assistant's versions, and how the schema's version is kept and locked while migrating.

Migrations (:func:`migrate`) are tuples of statements per version, applied in one
transaction under the dialect's lock, so processes opening one database at once apply each
exactly once.
"""

from __future__ import annotations

import datetime as dt
import mmap
import os
import pathlib
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from triograph.core.infra.errors import ConfigError
from triograph.storage import json_nul
from triograph.storage.query import POSTGRES_JSON, SQLITE_JSON, JsonDialect

T = TypeVar("T")
#: the statements of each schema version, in order
Migrations = tuple[tuple[str, ...], ...]
#: benchmark instrumentation: a directory where each process's SQL engine counts what it
#: sends (:class:`Counts`); unset, nothing is counted
COUNTS_ENV = "TRIOGRAPH_SQL_COUNTS"


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the layer uses of a DB-API connection."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...


class SqlEngine(Protocol):
    """Runs ``fn(connection)`` in a worker thread, in one transaction (rolled back if it
    raises); a Trio cancel waits for it to finish. With ``single=True``, ``fn`` sends one
    statement, which is a transaction of its own: the engine need not begin and commit one
    around it (on Postgres each is a round trip)."""

    @property
    def dialect(self) -> Dialect: ...

    async def read(self, fn: Callable[[Any], T], *, single: bool = False) -> T: ...

    async def write(self, fn: Callable[[Any], T], *, single: bool = False) -> T: ...


class Dialect:
    """What SQLite and Postgres spell differently; see the module docstring."""

    name: str
    json: JsonDialect
    #: a parameter; a JSON document as a parameter
    mark = "?"
    json_mark = "?"
    #: the column that keeps insertion order
    insertion = "rowid"

    def column(self, value: Any) -> Any:
        """A Python value as stored in (and compared with) a column."""
        return self.json.value(value)

    def document(self, value: Any) -> Any:
        """A JSON column's value, decoded."""
        return value

    def dumps(self, value: Any) -> str:
        """A JSON column's value, encoded (NUL characters escaped: ``json_nul``)."""
        return json_nul.dumps(value)

    def order(self, column: str, descending: bool) -> str:
        """``ORDER BY`` one column: NULLs first ascending, last descending."""
        return f'"{column}" {"DESC" if descending else "ASC"}'

    def has_substring(self, column: str) -> str:
        """``column`` holds the parameter's text."""
        return f"instr({column}, {self.mark}) > 0"

    def lock_versions(self, conn: Connection, assistant_id: str) -> None:
        """Numbering the assistant's versions waits for any other transaction doing it."""

    @contextmanager
    def migrating(self, conn: Connection) -> Iterator[int]:
        """A transaction under the migration lock; yields the schema's version."""
        raise NotImplementedError
        yield 0

    def migrated(self, conn: Connection, version: int) -> None:
        """Record that the schema is at ``version`` now (in the migration's transaction)."""
        raise NotImplementedError


class SqliteDialect(Dialect):
    """SQLite: datetimes as UTC epoch microseconds (so they sort as they compare), JSON as
    text; the version in ``PRAGMA user_version``, the lock of ``BEGIN IMMEDIATE`` (one writer
    at a time, which also serializes version numbering)."""

    name = "sqlite"
    json = SQLITE_JSON

    def document(self, value: Any) -> Any:
        return json_nul.loads(value)

    @contextmanager
    def migrating(self, conn: Connection) -> Iterator[int]:
        conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: set before any transaction
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def migrated(self, conn: Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")


class PostgresDialect(Dialect):
    """Postgres: ``timestamptz`` and ``jsonb`` (decoded by psycopg; NUL characters escaped
    by :mod:`triograph.storage.json_nul`), an identity column ``seq`` for insertion order;
    the version in ``triograph_migrations``, advisory locks."""

    name = "postgres"
    json = POSTGRES_JSON
    mark = "%s"
    json_mark = "%s::jsonb"
    insertion = "seq"
    #: advisory locks, pairs of int4 keys: migrations ("trig", 3, as pg_cluster's leader
    #: lock is ("trig", 1)) and the lock numbering an assistant's versions ("triv", a hash)
    MIGRATION_LOCK = (0x74726967, 3)
    VERSION_LOCKS = 0x74726976

    def column(self, value: Any) -> Any:
        return value

    def order(self, column: str, descending: bool) -> str:
        return f'"{column}" {"DESC NULLS LAST" if descending else "ASC NULLS FIRST"}'

    def has_substring(self, column: str) -> str:
        return f"strpos({column}, %s) > 0"

    def lock_versions(self, conn: Connection, assistant_id: str) -> None:
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (self.VERSION_LOCKS, assistant_id)
        )

    @contextmanager
    def migrating(self, conn: Connection) -> Iterator[int]:
        with conn.transaction():  # type: ignore[attr-defined]
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", self.MIGRATION_LOCK)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS triograph_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            found = conn.execute("SELECT COALESCE(MAX(version), 0) FROM triograph_migrations")
            yield found.fetchone()[0]

    def migrated(self, conn: Connection, version: int) -> None:
        conn.execute("INSERT INTO triograph_migrations (version) VALUES (%s)", (version,))


SQLITE = SqliteDialect()
POSTGRES = PostgresDialect()


def migrate(conn: Connection, dialect: Dialect, migrations: Migrations) -> None:
    """Bring the schema to the latest of ``migrations``, all in one transaction under the
    dialect's lock; ``ConfigError`` for a schema newer than these."""
    with dialect.migrating(conn) as version:
        if version > len(migrations):
            raise ConfigError(
                f"schema version {version} is newer than this triograph's ({len(migrations)})"
            )
        for number, statements in enumerate(migrations[version:], start=version + 1):
            for sql in statements:
                conn.execute(sql)
            dialect.migrated(conn, number)


def epoch_microseconds(text: str | None) -> int | None:
    """An ISO datetime (as JSON documents keep them) in SQLite's column form."""
    return None if text is None else SQLITE.column(dt.datetime.fromisoformat(text))


class Counts:
    """What this process's SQL engine did, for ``bench/`` (``TRIOGRAPH_SQL_COUNTS``): worker
    thread hops (``calls``), ``transactions``, ``statements`` and, on Postgres,
    ``round_trips`` to the server (a statement is one, and so are a transaction's ``BEGIN``
    and ``COMMIT``). Kept in a file of the directory named after the process id,
    memory-mapped, so a reader sees them as they change; every engine of the process adds
    to one :class:`Counts`."""

    FIELDS = ("calls", "transactions", "statements", "round_trips")
    _FORMAT = "4q"
    _instance: Counts | None = None
    _looked = False

    def __init__(self, path: pathlib.Path) -> None:
        size = struct.calcsize(self._FORMAT)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._values = [0] * len(self.FIELDS)
        self._lock = threading.Lock()  # worker threads add to them

    @classmethod
    def of_process(cls) -> Counts | None:
        """The process's counts if ``TRIOGRAPH_SQL_COUNTS`` names a directory, else None."""
        if not cls._looked:
            cls._looked = True
            if folder := os.environ.get(COUNTS_ENV):
                cls._instance = cls(pathlib.Path(folder) / str(os.getpid()))
        return cls._instance

    def add(
        self, calls: int = 0, transactions: int = 0, statements: int = 0, trips: int = 0
    ) -> None:
        with self._lock:
            for i, n in enumerate((calls, transactions, statements, trips)):
                self._values[i] += n
            struct.pack_into(self._FORMAT, self._map, 0, *self._values)

    @classmethod
    def read(cls, folder: pathlib.Path) -> dict[int, dict[str, int]]:
        """The counts of each process (by id) that counted into ``folder``."""
        size = struct.calcsize(cls._FORMAT)
        return {
            int(path.name): dict(
                zip(cls.FIELDS, struct.unpack(cls._FORMAT, path.read_bytes()[:size]), strict=True)
            )
            for path in folder.iterdir()
        }
