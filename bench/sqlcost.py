"""What the SQL layer costs on the hot path: our own thin layer against SQLAlchemy Core.

The statements a run costs the metadata store (``storage/repos.py``): the run created,
read, updated twice (running, then its outcome), its thread read and updated twice (busy,
then idle). Each is timed on its own, ``--n`` times, through

* ``ours``: ``storage/tables.py`` statements (built once per table) on the DB-API
  connection, in one transaction each, as the backends run them;
* ``sqlalchemy``: the same statements as SQLAlchemy Core constructs (``insert ... on
  conflict do update``, ``update``, ``select``) on an ``Engine`` of the same database, one
  ``engine.begin()`` each, compiled-statement cache on (its default).

Both encode records with the same code (``Table.row`` / ``Table.load``), so the figures
differ only by the layer: building and binding the statement, and the connection handling.
Each is on SQLite (a new file, WAL mode, as the file backend opens it) and, with
``--postgres URL`` (an empty database), on Postgres. It also times importing each layer in a
fresh interpreter. SQLAlchemy is not a dependency of triograph: ``pip install sqlalchemy``
into the environment first.

    .venv/bin/python bench/sqlcost.py [--n 2000] [--repeat 5] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from triograph.core.infra.models import Run, Thread
from triograph.storage.file import MIGRATIONS as SQLITE_MIGRATIONS
from triograph.storage.file import _metadata_connection, _transaction
from triograph.storage.sql import POSTGRES, SQLITE, Dialect, migrate
from triograph.storage.tables import Table, Tables

Op = Callable[[int], None]
#: the statements timed, in the order they run (creates first)
OPS = ("run create", "run update", "run get", "thread get", "thread update")


# -- our layer --------------------------------------------------------------------------------


def ours(dialect: Dialect, transaction: Callable[[Callable[[Any], Any]], Any]) -> dict[str, Op]:
    tables = Tables.of(dialect)
    runs, threads = tables.runs, tables.threads
    thread = Thread(thread_id=str(uuid.uuid4()))
    transaction(lambda conn: threads.insert_new(conn, thread))
    made: list[Run] = []

    def create(i: int) -> None:
        run = Run(run_id=str(uuid.uuid4()), thread_id=thread.thread_id, assistant_id="a")
        made.append(run)
        transaction(lambda conn: runs.put(conn, run))

    def update(i: int) -> None:
        run = attrs.evolve(made[i], status="running")
        transaction(lambda conn: runs.replace(conn, run, runs.where(run.run_id)))

    def get(i: int) -> None:
        transaction(lambda conn: runs.get(conn, made[i].run_id))

    def thread_get(i: int) -> None:
        transaction(lambda conn: threads.get(conn, thread.thread_id))

    def thread_update(i: int) -> None:
        busy = attrs.evolve(thread, status="busy" if i % 2 else "idle")
        transaction(lambda conn: threads.replace(conn, busy, threads.where(thread.thread_id)))

    return dict(zip(OPS, (create, update, get, thread_get, thread_update), strict=True))


# -- SQLAlchemy Core --------------------------------------------------------------------------


def sqlalchemy(
    dialect: Dialect, url: str, connect: Callable[[], Any] | None, **options: Any
) -> dict[str, Op]:
    import sqlalchemy as sa
    from sqlalchemy.dialects.postgresql import JSONB

    if dialect is SQLITE:
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    tables = Tables.of(dialect)
    kwargs: dict[str, Any] = {"creator": connect} if connect else {}
    engine = sa.create_engine(url, **kwargs, **options)
    meta = sa.MetaData()

    def table(t: Table[Any]) -> sa.Table:
        return sa.Table(t.name, meta, *(sa.Column(c) for c in (*t.columns, *t.json, "doc")))

    def assignments(t: Table[Any]) -> dict[str, Any]:
        """Each column from a parameter ``v_<column>``; JSON cast to jsonb on Postgres (the
        text ``Table.row`` made, bound as our layer binds it)."""
        out: dict[str, Any] = {}
        for c in (*t.columns, *t.json, "doc"):
            bound: Any = sa.bindparam(f"v_{c}")
            if dialect is POSTGRES and c in (*t.json, "doc"):
                bound = sa.cast(bound, JSONB)
            out[c] = bound
        return out

    def values(t: Table[Any], record: Any) -> dict[str, Any]:
        names = [f"v_{c}" for c in (*t.columns, *t.json, "doc")]
        return dict(zip(names, t.row(record), strict=True))

    runs_t, threads_t = table(tables.runs), table(tables.threads)
    upsert = insert(runs_t).values(assignments(tables.runs))
    upsert = upsert.on_conflict_do_update(
        index_elements=["run_id"], set_={c.name: upsert.excluded[c.name] for c in runs_t.c}
    )
    run_update = (
        runs_t.update()
        .where(runs_t.c.run_id == sa.bindparam("key"))
        .values(assignments(tables.runs))
    )
    thread_update_stmt = (
        threads_t.update()
        .where(threads_t.c.thread_id == sa.bindparam("key"))
        .values(assignments(tables.threads))
    )
    loaded = [runs_t.c[c] for c in (*tables.runs.json, "doc")]
    run_select = sa.select(*loaded).where(runs_t.c.run_id == sa.bindparam("key"))
    thread_loaded = [threads_t.c[c] for c in (*tables.threads.json, "doc")]
    thread_select = sa.select(*thread_loaded).where(threads_t.c.thread_id == sa.bindparam("key"))
    thread_insert = sa.insert(threads_t).values(assignments(tables.threads))

    thread = Thread(thread_id=str(uuid.uuid4()))
    with engine.begin() as conn:
        conn.execute(thread_insert, values(tables.threads, thread))
    made: list[Run] = []

    def create(i: int) -> None:
        run = Run(run_id=str(uuid.uuid4()), thread_id=thread.thread_id, assistant_id="a")
        made.append(run)
        with engine.begin() as conn:
            conn.execute(upsert, values(tables.runs, run))

    def update(i: int) -> None:
        run = attrs.evolve(made[i], status="running")
        with engine.begin() as conn:
            conn.execute(run_update, {**values(tables.runs, run), "key": run.run_id})

    def get(i: int) -> None:
        with engine.begin() as conn:
            row = conn.execute(run_select, {"key": made[i].run_id}).one()
        tables.runs.load(row)

    def thread_get(i: int) -> None:
        with engine.begin() as conn:
            row = conn.execute(thread_select, {"key": thread.thread_id}).one()
        tables.threads.load(row)

    def thread_update(i: int) -> None:
        busy = attrs.evolve(thread, status="busy" if i % 2 else "idle")
        with engine.begin() as conn:
            params = {**values(tables.threads, busy), "key": thread.thread_id}
            conn.execute(thread_update_stmt, params)

    return dict(zip(OPS, (create, update, get, thread_get, thread_update), strict=True))


# -- the databases ----------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_database() -> Iterator[tuple[str, Callable[[], sqlite3.Connection]]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.sqlite"
        conn = _metadata_connection(path)
        migrate(conn, SQLITE, SQLITE_MIGRATIONS)
        conn.close()
        yield path, lambda: _metadata_connection(path)


def sqlite_transaction(conn: sqlite3.Connection) -> Callable[[Callable[[Any], Any]], Any]:
    return lambda fn: _transaction(conn, fn, "BEGIN IMMEDIATE")  # as storage.file writes


def timed(make: Callable[[], dict[str, Op]], n: int, repeat: int) -> dict[str, float]:
    """Microseconds per call of each op, the median of ``repeat`` rounds on fresh rows after
    one to warm up (the order matters: creates first)."""
    rounds: dict[str, list[float]] = {}
    for r in range(repeat + 1):  # the first warms up (connections, caches) and is not kept
        for name, op in make().items():
            start = time.perf_counter()
            for i in range(n):
                op(i)
            if r:
                rounds.setdefault(name, []).append((time.perf_counter() - start) / n * 1e6)
    out = {name: statistics.median(figures) for name, figures in rounds.items()}
    # a run's statements: create, get, update x2, thread get, thread update x2
    out["per run"] = (
        out["run create"]
        + out["run get"]
        + 2 * out["run update"]
        + out["thread get"]
        + 2 * out["thread update"]
    )
    return out


def import_cost(modules: str, repeat: int = 5) -> float:
    """Milliseconds a fresh interpreter takes to import ``modules`` beyond what the layer's
    records need anyway (``triograph.core.infra.models``): the median of ``repeat``."""
    code = (
        "import time, triograph.core.infra.models; t = time.perf_counter(); "
        f"import {modules}; print(time.perf_counter() - t)"
    )
    times = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(repeat)
    ]
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="calls of each statement")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (the median is kept)")
    parser.add_argument("--postgres", help="an empty postgresql:// database")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with sqlite_database() as (path, connect):
        conn = connect()
        ops = functools.partial(ours, SQLITE, sqlite_transaction(conn))
        results["sqlite ours"] = timed(ops, args.n, args.repeat)
        conn.close()
        ops = functools.partial(sqlalchemy, SQLITE, "sqlite://", lambda: _sqlalchemy_sqlite(path))
        results["sqlite sqlalchemy"] = timed(ops, args.n, args.repeat)
    if args.postgres:
        results |= postgres(args.postgres, args.n, args.repeat)
    results["import ms"] = {
        "ours": import_cost("triograph.storage.repos"),
        "sqlalchemy": import_cost(
            "sqlalchemy, sqlalchemy.dialects.sqlite, sqlalchemy.dialects.postgresql"
        ),
    }
    print_table(results)
    print(json.dumps(results))


def _sqlalchemy_sqlite(path: str) -> sqlite3.Connection:
    # SQLAlchemy's pysqlite dialect runs its own BEGIN (DEFERRED) when a transaction starts:
    # a connection in the stdlib's default transaction mode, with this backend's pragmas
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def postgres(url: str, n: int, repeat: int) -> dict[str, Any]:
    import psycopg
    from psycopg_pool import ConnectionPool

    from triograph.storage.postgres import _configure, _conninfo, _set_up

    conninfo = _conninfo(url)
    _set_up(conninfo, None)
    pool: ConnectionPool[Any] = ConnectionPool(
        conninfo, min_size=1, max_size=2, configure=_configure, open=True
    )

    def transaction(fn: Callable[[Any], Any]) -> Any:  # as storage.postgres runs a call
        with pool.connection() as conn:
            return fn(conn)

    out = {"postgres ours": timed(functools.partial(ours, POSTGRES, transaction), n, repeat)}
    pool.close()

    def connect() -> Any:
        conn = psycopg.connect(conninfo)
        _configure(conn)
        return conn

    ops = functools.partial(sqlalchemy, POSTGRES, "postgresql+psycopg://", connect)
    out["postgres sqlalchemy"] = timed(ops, n, repeat)
    # its pool rolls a connection back when it returns (a round trip psycopg_pool saves)
    ops = functools.partial(ops, pool_reset_on_return=None)
    out["postgres sqlalchemy, no reset"] = timed(ops, n, repeat)
    return out


def print_table(results: dict[str, Any]) -> None:
    ops = ["run create", "run get", "run update", "thread get", "thread update", "per run"]
    print(f"{'µs per call':<32}" + "".join(f"{op:>14}" for op in ops))
    for name, figures in results.items():
        if name != "import ms":
            print(f"{name:<32}" + "".join(f"{figures[op]:>14.1f}" for op in ops))
    imports = results["import ms"]
    print(f"import (ms): ours {imports['ours']:.1f}, sqlalchemy {imports['sqlalchemy']:.1f}")


if __name__ == "__main__":
    main()
