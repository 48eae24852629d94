"""The file backend's LangGraph parts: SQLite checkpoints and store, on the graph loop.

``PATH-checkpoints`` holds LangGraph's ``AsyncSqliteSaver`` (:class:`FileCheckpointer`),
``PATH-store`` its ``AsyncSqliteStore`` (:class:`FileStore`), each on one sqlite3 connection
that :mod:`triograph.storage.file` opens and closes, wrapped for aiosqlite at first use
(:class:`Link`). The store's tables are made at open (:func:`migrate_store`).
"""

from __future__ import annotations

import array
import datetime as dt
import math
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.store.base import (
    IndexConfig,
    PutOp,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.sqlite.aio import AsyncSqliteStore
from langgraph.store.sqlite.base import NS_MATCH_FUNCTION, _namespace_match

from triograph.core.infra import encoding
from triograph.core.infra.graph_bridge import detached, shielded
from triograph.core.infra.models import now
from triograph.storage.store_expiry import ExpiringStore, Statement, prefix


def _json(value: Any) -> str:
    return encoding.dumps(value).decode()


def wal(conn: sqlite3.Connection, timeout: float = 30.0) -> None:
    """Put the file in WAL mode (which the file keeps), before any transaction. Switching
    needs the file to itself, and SQLite answers "database is locked" at once rather than
    waiting out the busy timeout while another connection opens it: retried until
    ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def migrate_store(conn: sqlite3.Connection, vectors: bool) -> None:
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

    wal(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        apply(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- checkpoints and store, on the graph loop -------------------------------------------------
#
# Both are asyncio objects of the graph loop, which this backend is not handed. Each is built
# here without what needs the running loop (an asyncio lock; the store's batching queue and
# task) and finishes construction at its first use, which is on the graph loop (the bridge is
# the only way in). Their sqlite3 connections are opened at open, from Trio, and wrapped in an
# aiosqlite connection at first use (:class:`Link`).


class Link:
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


async def _transact(conn: aiosqlite.Connection, statements: Sequence[Statement]) -> None:
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

    def __init__(self, link: Link) -> None:
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

    async def _write(self, *statements: Statement) -> None:
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


class FileStore(ExpiringStore, AsyncSqliteStore):
    """``AsyncSqliteStore`` with the memory store's TTL semantics, on its ``clock``
    (:class:`~triograph.storage.store_expiry.ExpiringStore`); items are stamped too (to the
    microsecond, with their time zone) on ``clock`` rather than on SQLite's clock.

    Every operation passes :meth:`_ensure_task` first; the first call finishes construction.
    """

    supports_ttl = True  # BaseStore's False comes first in AsyncSqliteStore's MRO

    def __init__(
        self,
        link: Link,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], dt.datetime] = now,
    ) -> None:
        self.link = link
        self.is_setup = False
        self._unopened(index, ttl, clock)

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

    async def _ready(self) -> None:
        await self.setup()

    def _time(self, at: dt.datetime) -> str:
        return _stamp(at)

    def _stored(self, op: PutOp, at: dt.datetime) -> Statement:
        """Stamp the item on ``clock``, with its expiry."""
        expires = None if op.ttl is None else _stamp(at + dt.timedelta(minutes=op.ttl))
        return (
            "UPDATE store SET created_at = ?1, updated_at = ?1, expires_at = ?2, "
            "ttl_minutes = ?3 WHERE prefix = ?4 AND key = ?5",
            (_stamp(at), expires, op.ttl, prefix(op.namespace), op.key),
        )

    def _refresh(self, namespace: tuple[str, ...], key: str, at: dt.datetime) -> Statement:
        return (
            "UPDATE store SET expires_at = strftime('%Y-%m-%d %H:%M:%f', ?, "
            "'+' || (ttl_minutes * 60) || ' seconds') || '000+00:00' "
            "WHERE prefix = ? AND key = ? AND ttl_minutes IS NOT NULL",
            (_stamp(at), prefix(namespace), key),
        )

    def _everything(self, op: SearchOp) -> SearchOp:
        return op._replace(query=None, offset=0, limit=-1)

    async def _indexed(self, items: list[SearchItem]) -> set[tuple[str, str]]:
        async with self.lock:
            indexed = await self.conn.execute_fetchall("SELECT prefix, key FROM store_vectors")
        return {(p, key) for p, key in indexed}

    def _get_filter_condition(self, key: str, op: str, value: Any) -> tuple[str, list[Any]]:
        """As in the memory store, an item lacking ``key`` is not equal to ``value``."""
        condition, params = super()._get_filter_condition(key, op, value)
        if op == "$ne" and value is not None:
            return f"(json_extract(value, '$.{key}') IS NULL OR {condition})", params
        return condition, params

    async def _execute(self, statements: list[Statement]) -> None:
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
