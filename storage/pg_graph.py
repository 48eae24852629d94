"""The Postgres backend's LangGraph parts: checkpoints and store, on the graph loop.

:class:`PostgresCheckpointer` (LangGraph's ``AsyncPostgresSaver``) and
:class:`PostgresStore` (its ``AsyncPostgresStore``) each have an asyncio pool of their own,
made on the graph loop at first use and closed there when the storage closes
(:func:`close_on`). Their tables were set up when the storage opened
(:mod:`triograph.storage.postgres`).

Store filters compare as LangGraph's memory store does (``_compare_values``): their SQL is
built on :data:`triograph.storage.query.POSTGRES_JSON`, the same ``jsonb`` primitives as
the searches', where an absent field counts as null and the ordering operators compare what
``float()`` makes of a value.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, cast

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.store.base import (
    IndexConfig,
    Op,
    PutOp,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.postgres import AsyncPostgresStore
from langgraph.store.postgres.base import PostgresIndexConfig
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from triograph.core.infra.graph_bridge import detached
from triograph.core.infra.models import now
from triograph.storage import json_nul
from triograph.storage.query import POSTGRES_JSON, Sql, all_of, equal, sized
from triograph.storage.store_expiry import ExpiringStore, Statement, prefix, untimed

#: connections of each graph-loop pool (checkpoints; store); each starts with one
POOL_SIZE = 10
#: seconds closing a graph-loop pool may take
CLOSE_TIMEOUT = 5.0


# -- store filters ----------------------------------------------------------------------------

_J = POSTGRES_JSON
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
#: the strings Python's ``float()`` reads that Postgres reads alike (not "nan", not "1_0")
_FLOAT_TEXT = r"^\s*[+-]?((\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?|inf|infinity)\s*$"


def _node(path: Sequence[str]) -> Any:
    """The node of an item's field (``value`` is the store's column of items)."""
    return "value", tuple(path)


def _equal(path: Sequence[str], want: Any) -> Sql:
    """The field at ``path`` ``== want``; absent counts as null."""
    if want is None:
        at, params = _J.at(_node(path))
        return f"COALESCE({at}, 'null') = 'null'", params
    return equal(_J, _node(path), want)


def _operator(path: Sequence[str], op: str, value: Any) -> Sql:
    """A store filter operator; the ordering ones compare what ``float()`` makes of the
    value, as the memory store does (numbers, booleans, numeric strings)."""
    if op == "$eq":
        return _equal(path, value)
    if op == "$ne":
        sql, params = _equal(path, value)
        return f"NOT COALESCE({sql}, FALSE)", params
    if op not in _COMPARISONS:
        raise ValueError(f"Unsupported operator: {op}")
    try:
        bound = float(value)
    except (TypeError, ValueError):  # the memory store's float() fails on every item
        return "FALSE", []
    at, params = _J.at(_node(path))
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


def _matches(path: Sequence[str], want: Any) -> Sql:
    """The store filter ``want`` holds for the field at ``path``."""
    if isinstance(want, dict):
        if any(k.startswith("$") for k in want):
            return all_of(_operator(path, op, v) for op, v in want.items())
        fields = [_matches((*path, k), v) for k, v in want.items()]
        return all_of([_J.kind(_node(path), "object"), *fields])
    if isinstance(want, list | tuple):
        items = [_matches((*path, str(i)), v) for i, v in enumerate(want)]
        return all_of([sized(_J, _node(path), "array", len(want)), *items])
    return _equal(path, want)


# -- pools ------------------------------------------------------------------------------------


async def _configure_graph(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every graph-loop connection: store items carry UTC timestamps; JSON as psycopg
    writes and reads it by default, NUL characters included (``storage/json_nul.py``)."""
    await conn.execute("SET TIME ZONE 'UTC'")
    set_json_dumps(json_nul.dumps_std, conn)
    set_json_loads(json_nul.loads_std, conn)


def graph_pool(conninfo: str) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
    """An asyncio pool as LangGraph's Postgres classes use them, opened by its owner."""
    return AsyncConnectionPool(
        conninfo,
        min_size=1,
        max_size=POOL_SIZE,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        configure=_configure_graph,
    )


def close_on(loop: Any, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
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


#: Lease fencing of checkpoints (see :class:`PostgresCheckpointer`): each of LangGraph's
#: statements that write a run's checkpoint, channel values or pending writes inserts its row
#: unless the run's row is another worker's; the row is locked for share meanwhile (as when
#: the run's events are stored, ``storage/pg_cluster.py``): a claim (``FOR UPDATE SKIP
#: LOCKED``) waits for the next sweep, and a write after a claim finds the new owner and
#: inserts nothing. (A run id no run row has, a graph invoked outside a run, is not fenced.)
_OWNED = """WITH run AS (SELECT owner FROM runs WHERE run_id = %s FOR SHARE),
    owned AS (SELECT WHERE NOT EXISTS (SELECT FROM run WHERE owner <> %s)) """
_VALUES = re.compile(r"\bVALUES\s*\(([%s,\s]+)\)")


def _fenced(sql: str) -> str:
    """LangGraph's ``INSERT ... VALUES (...) ON CONFLICT ...`` as an insert from ``owned``."""
    fenced, found = _VALUES.subn(r"SELECT \1 FROM owned", sql)
    if found != 1:  # a LangGraph that writes otherwise: fail at start-up, not unfenced
        raise RuntimeError(f"cannot fence this checkpoint statement: {sql}")
    return _OWNED + fenced


_FENCED = {
    sql: _fenced(sql)
    for sql in (
        AsyncPostgresSaver.UPSERT_CHECKPOINT_BLOBS_SQL,
        AsyncPostgresSaver.UPSERT_CHECKPOINTS_SQL,
        AsyncPostgresSaver.UPSERT_CHECKPOINT_WRITES_SQL,
        AsyncPostgresSaver.INSERT_CHECKPOINT_WRITES_SQL,
    )
}
#: ``(run_id, owner)`` of the write in progress in this context (None: not a run's, unfenced)
_FENCE: ContextVar[tuple[str, str] | None] = ContextVar("triograph_fence", default=None)


class _FencedCursor:
    """A cursor whose checkpoint writes are fenced by ``fence`` (``(run_id, owner)``); any
    other write through it is refused rather than let through unfenced."""

    def __init__(self, cursor: psycopg.AsyncCursor[DictRow], fence: tuple[str, str]) -> None:
        self._cursor = cursor
        self._fence = fence

    def _sql(self, sql: Any) -> str:
        fenced = _FENCED.get(sql) if isinstance(sql, str) else None
        if fenced is None:
            raise RuntimeError(f"an unfenced write of a run's checkpoints: {sql}")
        return fenced

    async def execute(self, sql: Any, params: Sequence[Any], **kwargs: Any) -> Any:
        return await self._cursor.execute(self._sql(sql), (*self._fence, *params), **kwargs)

    async def executemany(self, sql: Any, params: Iterable[Sequence[Any]], **kwargs: Any) -> None:
        fenced = self._sql(sql)
        rows = [(*self._fence, *row) for row in params]
        await self._cursor.executemany(fenced, rows, **kwargs)


def _guarded(cursor: psycopg.AsyncCursor[DictRow]) -> psycopg.AsyncCursor[DictRow]:
    """``cursor``, fenced while a run's write is in progress in this context."""
    fence = _FENCE.get()
    return cursor if fence is None else cast("Any", _FencedCursor(cursor, fence))


class PostgresCheckpointer(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` that can also delete the checkpoints written by given runs and
    copy a thread's checkpoints to another thread, as ``MemoryCheckpointer``.

    Every operation goes through :meth:`_cursor`, which finishes construction at the first
    (making the pool). Unlike its parent's, a cursor takes no lock shared by all: each uses
    a connection of its own from the pool, so runs checkpoint at once.

    Lease fencing: with an ``owner`` (this worker's id), what a run writes (its config's
    ``metadata.run_id``: checkpoints, channel values, pending writes) is stored only while
    the run's row is not another worker's, in the same statements (:data:`_OWNED`): the
    writes of a worker that lost the run to another are dropped, as if never made. Writes
    that are no run's (a state update) are not fenced.
    """

    def __init__(self, conninfo: str, owner: str | None = None) -> None:
        BaseCheckpointSaver.__init__(self)
        self.conninfo = conninfo
        #: the worker whose runs' writes are stored (None: no fencing)
        self.owner = owner
        self.pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = None
        self.ready = False

    async def setup(self) -> None:
        """Make and open the pool (the tables were set up when the storage opened)."""
        if self.pool is None:
            self.pool = graph_pool(self.conninfo)
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
                    yield _guarded(cur)
            elif pipeline:
                async with (
                    conn.transaction(),
                    conn.cursor(binary=True, row_factory=dict_row) as cur,
                ):
                    yield _guarded(cur)
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield _guarded(cur)

    def _fence(self, config: RunnableConfig) -> tuple[str, str] | None:
        run_id = (config.get("metadata") or {}).get("run_id")
        return None if self.owner is None or not isinstance(run_id, str) else (run_id, self.owner)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        token = _FENCE.set(self._fence(config))
        try:
            return await super().aput(config, checkpoint, metadata, new_versions)
        finally:
            _FENCE.reset(token)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        token = _FENCE.set(self._fence(config))
        try:
            await super().aput_writes(config, writes, task_id, task_path)
        finally:
            _FENCE.reset(token)

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
            close_on(self.loop, self.pool.close)


class PostgresStore(ExpiringStore, AsyncPostgresStore):
    """``AsyncPostgresStore`` with the memory store's semantics: TTL on its ``clock``
    (:class:`~triograph.storage.store_expiry.ExpiringStore`), and filters that compare as
    the memory store does.

    Every operation passes :meth:`_ensure_task` first; the first call finishes construction.
    """

    supports_ttl = True
    mark = "%s"

    def __init__(
        self,
        conninfo: str,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], dt.datetime] = now,
    ) -> None:
        self.conninfo = conninfo
        self.ready = False
        self._unopened(index, ttl, clock)

    def _ensure_task(self) -> None:
        if not self.opened:
            self.opened = True
            index = cast("PostgresIndexConfig | None", self._index)
            AsyncPostgresStore.__init__(
                self, graph_pool(self.conninfo), index=index, ttl=self.ttl_config
            )
        detached(super()._ensure_task)  # the batch task belongs to no job

    @property
    def pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]:
        return cast("AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]", self.conn)

    async def _ready(self) -> None:
        if not self.ready:
            await self.pool.open()  # in the batch task, which belongs to no job
            self.ready = True

    def _plain(self, op: Op) -> Op:
        """``op`` without the TTL work, its filter entries each an operator for
        :meth:`_get_filter_condition` (``$match``: a plain value to match)."""
        op = untimed(op)
        if isinstance(op, SearchOp) and op.filter:
            spelled = {
                key: want
                if isinstance(want, dict) and any(k.startswith("$") for k in want)
                else {"$match": want}
                for key, want in op.filter.items()
            }
            return op._replace(filter=spelled)
        return op

    def _stored(self, op: PutOp, at: dt.datetime) -> Statement | None:
        if op.ttl is None:
            return None
        return (
            "UPDATE store SET expires_at = %s, ttl_minutes = %s WHERE prefix = %s AND key = %s",
            [at + dt.timedelta(minutes=op.ttl), op.ttl, prefix(op.namespace), op.key],
        )

    def _refresh(self, namespace: tuple[str, ...], key: str, at: dt.datetime) -> Statement:
        return (
            "UPDATE store SET expires_at = %s + ttl_minutes * interval '1 minute' "
            "WHERE prefix = %s AND key = %s AND ttl_minutes IS NOT NULL",
            [at, prefix(namespace), key],
        )

    def _everything(self, op: SearchOp) -> SearchOp:
        return op._replace(query=None, offset=0, limit=cast("int", None))  # LIMIT NULL

    async def _indexed(self, items: list[SearchItem]) -> set[tuple[str, str]]:
        keys = ([prefix(i.namespace) for i in items], [i.key for i in items])
        async with self.pool.connection() as conn:
            indexed = await conn.execute(
                "SELECT prefix, key FROM store_vectors WHERE (prefix, key) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                keys,
            )
            return {(row["prefix"], row["key"]) for row in await indexed.fetchall()}

    def _get_filter_condition(self, key: str, op: str, value: Any) -> tuple[str, list[Any]]:
        """Each filter entry, as :meth:`_plain` spelled it."""
        if op == "$match":
            return _matches((key,), value)
        return _operator((key,), op, value)

    async def _execute(self, statements: list[Statement]) -> None:
        if statements:
            async with self.pool.connection() as conn, conn.transaction():
                for sql, params in statements:
                    await conn.execute(sql, params)

    def close(self) -> None:
        """Close the pool on the graph loop (from a worker thread)."""
        if self.opened:
            close_on(self._loop, self.pool.close)
