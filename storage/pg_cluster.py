"""How triograph processes sharing one Postgres database coordinate: :class:`PostgresCluster`,
the Postgres backend's :class:`~triograph.core.infra.storage.Cluster`.

While :meth:`PostgresCluster.running` is open, a worker keeps two connections of its own,
outside the backend's pool, so a pool busy with long requests can neither delay a heartbeat
past the lease nor hold up a notification:

* the *control* connection writes the worker's heartbeat (``workers`` row) every
  ``lease / 3`` seconds, learning in the same statement which of the runs it executes
  another worker has claimed meanwhile (:meth:`PostgresCluster.watch`), and holds the
  cluster leadership: a session advisory lock, taken with ``pg_try_advisory_lock`` at each
  heartbeat until it is, and held until the session ends. A heartbeat that fails means the
  session (and with it the leadership) may be gone: the connection is closed and opened
  again at the next heartbeat.
* the *listener* connection ``LISTEN``\\ s on :data:`CHANNEL` and hands what other workers
  send to the subscribed callbacks, in Trio. It waits with ``trio.lowlevel.wait_readable`` on
  the connection's socket and reads what came in a worker thread (never blocking there), so
  no thread is ever inside the connection when the listener is cancelled and closes it. A
  broken listener connection is reopened; what was sent meanwhile is lost (callers poll too).

The thread locks are session advisory locks as well, on a connection checked out of the
pool for the block. Their keys are ``hashtextextended(thread_id, 0)`` in Postgres' 64-bit key
space; the leader lock is a pair of 32-bit keys (:data:`LEADER_LOCK`), a key space that never
overlaps it. A connection goes back to the pool only once its lock is released; one whose
release failed is closed instead, which releases it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson
import psycopg
import trio
from psycopg.pq import ConnStatus

from triograph.core.engine.event_log import LOG_BYTES, LOG_CAP
from triograph.core.infra.storage import ThreadAppend
from triograph.storage.sql import POSTGRES, Counts
from triograph.storage.tables import Tables

if TYPE_CHECKING:
    import datetime as dt

    from psycopg_pool import ConnectionPool

    from triograph.core.infra.models import Run
    from triograph.core.infra.storage import StoredEvent, ThreadEvent

T = TypeVar("T")
_Connection = psycopg.Connection[Any]

log = logging.getLogger("triograph.cluster.postgres")

#: the ``LISTEN/NOTIFY`` channel of every worker
CHANNEL = "triograph"
#: the leadership's advisory lock: a pair of int4 keys ("trig", 1), apart from thread locks
LEADER_LOCK = (0x74726967, 1)
#: Postgres refuses a ``NOTIFY`` payload of this many bytes or more
MAX_NOTIFICATION = 8000
#: seconds shutdown may spend retiring the worker before it gives up on the database
CLEANUP_TIMEOUT = 5.0
#: seconds between two attempts at reopening a broken listener connection
RECONNECT_DELAY = 1.0
#: seconds between the first two attempts at a contended thread lock, and at most
LOCK_POLL_MIN, LOCK_POLL_MAX = 0.002, 0.05

#: the heartbeat, which also answers which of the runs this worker executes another worker
#: has claimed (lease fencing: this one's heartbeat stopped for a lease meanwhile)
_HEARTBEAT = """WITH beat AS (
        INSERT INTO workers (worker_id) VALUES (%(worker)s)
        ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now())
    SELECT run_id FROM runs WHERE run_id = ANY(%(runs)s::text[]) AND owner <> %(worker)s"""
#: events are stored only while the run is this worker's (lease fencing): the row is locked
#: for share meanwhile, so a claim (``FOR UPDATE SKIP LOCKED``) waits for the next sweep and
#: then reads these events before the claimant numbers its own after them. The protocol
#: events of the batch go to the thread's log too, numbered by the thread's row in
#: ``thread_event_seqs`` (the upsert locks it: storers of one thread number in turn), and the
#: log's events past ``LOG_CAP`` go
_APPEND = """WITH owned AS (
        SELECT run_id, thread_id FROM runs
        WHERE run_id = %(run_id)s AND owner = %(owner)s FOR SHARE),
    batch AS (
        SELECT e.seq, e.event, e.data
        FROM unnest(%(seqs)s::integer[], %(names)s::text[], %(data)s::bytea[])
            AS e(seq, event, data)),
    stored AS (
        INSERT INTO run_events (run_id, seq, event, data)
        SELECT owned.run_id, b.seq, b.event, b.data FROM owned, batch b
        RETURNING 1),
    protocol AS (
        SELECT b.event, b.data, row_number() OVER (ORDER BY b.seq) AS n
        FROM batch b WHERE starts_with(b.event, 'protocol|')),
    counted AS (SELECT count(*) AS n FROM protocol),
    head AS (
        INSERT INTO thread_event_seqs AS h (thread_id, seq)
        SELECT owned.thread_id, counted.n FROM owned, counted WHERE counted.n > 0
        ON CONFLICT (thread_id) DO UPDATE SET seq = h.seq + EXCLUDED.seq
        RETURNING h.thread_id, h.seq),
    logged AS (
        INSERT INTO thread_events (thread_id, seq, run_id, ms, event, data)
        SELECT head.thread_id, head.seq - counted.n + p.n, owned.run_id, %(ms)s, p.event, p.data
        FROM head, counted, owned, protocol p
        RETURNING 1),
    trimmed AS (
        DELETE FROM thread_events e USING head
        WHERE e.thread_id = head.thread_id AND e.seq <= head.seq - %(cap)s
        RETURNING 1)
    SELECT s.n, head.thread_id, head.seq, counted.n,
        CASE WHEN s.n > 0 THEN pg_notify(%(channel)s, CASE WHEN head.seq IS NULL
            THEN %(notice)s::text
            ELSE jsonb_set(%(notice)s::text::jsonb, '{payload}',
                (%(notice)s::text::jsonb -> 'payload')
                || jsonb_build_object('thread_id', head.thread_id, 'thread_seq', head.seq))::text
            END) END
    FROM (SELECT count(*) AS n FROM stored) s CROSS JOIN counted LEFT JOIN head ON true"""
_THREAD_EVENTS = """SELECT seq, ms, event, data FROM thread_events
    WHERE thread_id = %s AND seq > %s AND seq <= %s ORDER BY seq"""
_THREAD_RUN_START = """SELECT coalesce(
    (SELECT min(e.seq) - 1 FROM thread_events e
        WHERE e.thread_id = %(t)s AND e.run_id = (
            SELECT run_id FROM runs WHERE thread_id = %(t)s
            ORDER BY created_at DESC, seq DESC LIMIT 1)),
    (SELECT seq FROM thread_event_seqs WHERE thread_id = %(t)s),
    0)"""
#: a thread's protocol log keeps its newest events up to ``LOG_BYTES`` of data
_TRIM_BYTES = """DELETE FROM thread_events e USING (
        SELECT thread_id, seq FROM (
            SELECT thread_id, seq,
                sum(length(data)) OVER (PARTITION BY thread_id ORDER BY seq DESC) AS kept
            FROM thread_events) newest
        WHERE kept > %s) old
    WHERE e.thread_id = old.thread_id AND e.seq = old.seq"""
_RUNS = Tables.of(POSTGRES).runs
#: a run's final record, written only while the run is this worker's (lease fencing); the
#: SELECT sees the rows as they were before the UPDATE: True if it was updated, or is gone
_RECORD = f"""WITH updated AS ({_RUNS.update} WHERE run_id = %s AND owner = %s RETURNING 1)
    SELECT EXISTS (SELECT FROM updated) OR NOT EXISTS (SELECT FROM runs WHERE run_id = %s)"""
# fenced as _RECORD: the run's delete re-checks its owner on the row's latest version; the
# thread (whose delete would take the run too) goes only with it, or if it is gone already
_DISCARD = """WITH run AS (DELETE FROM runs WHERE run_id = %(run)s AND owner = %(owner)s
        RETURNING 1),
    mine AS (SELECT EXISTS (SELECT FROM run)
        OR NOT EXISTS (SELECT FROM runs WHERE run_id = %(run)s) AS yes),
    thread AS (DELETE FROM threads WHERE thread_id = %(thread)s AND (SELECT yes FROM mine)
        RETURNING 1)
    SELECT (SELECT yes FROM mine), EXISTS (SELECT FROM thread)"""
_PRUNE = """WITH gone AS (
        DELETE FROM run_events e USING runs r
        WHERE e.run_id = r.run_id AND r.status NOT IN ('pending', 'running')
            AND r.updated_at < %s
        RETURNING e.run_id)
    SELECT count(DISTINCT run_id) FROM gone"""


class Database(Protocol):
    """What the cluster needs of the Postgres backend's database (``PgDatabase``)."""

    @property
    def pool(self) -> ConnectionPool[Any]: ...

    @property
    def limiter(self) -> trio.CapacityLimiter:
        """Admits the worker threads that use pool connections."""
        ...

    @property
    def conninfo(self) -> str:
        """Where the cluster opens its own connections."""
        ...

    async def run(self, fn: Callable[[_Connection], T], *, single: bool = False) -> T:
        """``fn(connection)`` in a worker thread, in one transaction (``single``: alone, one
        statement)."""
        ...


class PostgresCluster:
    """See the module docstring and :class:`~triograph.core.infra.storage.Cluster`.

    Args:
        db: the backend's database; its pool and limiter serve the thread locks and the
            queries, :attr:`Database.conninfo` the cluster's own two connections.
        worker_id: this process's id in the ``workers`` table and in notifications.
        lease: seconds a heartbeat counts for; heartbeats go every ``lease / 3`` seconds.
        claim: the backend's :meth:`~triograph.core.infra.storage.Cluster.claim` (``limit`` ->
            the runs claimed).

    Resource handling: the connections and tasks exist only inside :meth:`running`, which
    the backend opens for the storage's lifetime. The thread locks and queries use the pool,
    which the backend closes after :meth:`running`.
    """

    def __init__(
        self,
        db: Database,
        worker_id: str,
        lease: float,
        claim: Callable[[int], Awaitable[list[Run]]],
    ) -> None:
        self.worker_id = worker_id
        self._db = db
        self._lease = lease
        self._claim = claim
        self._leader = False
        self._leading_until = -math.inf
        self._control: _Connection | None = None
        self._callbacks: list[Callable[[str, dict[str, Any]], None]] = []
        self._executing: Callable[[], Collection[str]] = tuple
        self._lost: Callable[[list[str]], None] | None = None
        self._local_locks: dict[str, tuple[trio.Lock, int]] = {}
        # Thread locks hold a pool connection each, and their blocks need another one for
        # their queries: half the pool at most, so those queries always find one.
        self._lock_slots = trio.CapacityLimiter(max(1, db.pool.max_size // 2))
        # A release must start even when every token of the database's limiter is taken: one
        # that could not would leave the lock held on a pooled connection.
        self._release_limiter = trio.CapacityLimiter(math.inf)

    # -- the worker's lifetime ----------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Be a live worker for the block: heartbeat, leadership, notifications.

        The first heartbeat (and attempt at leadership) is written, and the listener is
        listening, before the block starts; a database that cannot be reached then raises.
        Later failures are logged and retried, never raised into the block. At exit, under a
        shielded scope bounded by :data:`CLEANUP_TIMEOUT`, the worker's row is deleted (its
        runs are orphans at once, for others to claim) and the control connection closed,
        which ends the leadership.
        """
        try:
            async with trio.open_nursery() as nursery:
                await self._beat(first=True)
                await nursery.start(self._listen)
                nursery.start_soon(self._heartbeats)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._leader = False
            control, self._control = self._control, None
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
                # Abandoned at the deadline, the thread still closes the connection it owns.
                await trio.to_thread.run_sync(
                    _retire,
                    control,
                    self._db.conninfo,
                    self.worker_id,
                    self._lease,
                    abandon_on_cancel=True,
                )

    @property
    def leader(self) -> bool:
        """Also False once the last heartbeat that found this worker leading is a lease old:
        one whose database calls hang stops leading by itself."""
        return self._leader and trio.current_time() < self._leading_until

    async def _heartbeats(self) -> None:
        deadline = trio.current_time()
        while True:
            deadline += self._lease / 3
            await trio.sleep_until(deadline)
            await self._beat()

    def watch(
        self, executing: Callable[[], Collection[str]], lost: Callable[[list[str]], None]
    ) -> None:
        self._executing, self._lost = executing, lost

    async def _beat(self, *, first: bool = False) -> None:
        """Write the heartbeat on the control connection (opening it if needed), then take
        the leadership if this worker has not got it; hand the watcher the runs it executes
        that another worker has claimed (:meth:`watch`). A failure but the first is logged,
        and drops the connection, and with it the leadership, until the next heartbeat."""
        began = trio.current_time()
        try:
            if self._control is None:
                self._control = await trio.to_thread.run_sync(
                    _connect, self._db.conninfo, "control", self.worker_id, self._lease
                )
            executing = list(self._executing())
            self._leader, lost = await trio.to_thread.run_sync(
                _heartbeat, self._control, self.worker_id, self._leader, executing
            )
            self._leading_until = began + self._lease
        except psycopg.Error as exc:
            self._leader = False
            control, self._control = self._control, None
            if control is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(control.close)
            if first:
                raise
            log.warning("worker %s: heartbeat failed (%s); retrying", self.worker_id, exc)
            return
        if lost and self._lost is not None:
            try:
                self._lost(lost)
            except Exception:
                log.exception("worker %s: handing over the runs it lost failed", self.worker_id)

    # -- notifications ------------------------------------------------------------------------

    async def notify(self, topic: str, payload: dict[str, Any]) -> None:
        """Send ``payload`` to the other workers, through the pool: it arrives once this
        returns, after what this worker sent before.

        Raises:
            ValueError: the notification is over Postgres' limit (:data:`MAX_NOTIFICATION`
                bytes): send ids, and let the receivers read the rest from the database.
        """
        notice = self._notice(topic, payload)
        await self._db.run(
            lambda conn: conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, notice)), single=True
        )

    def subscribe(self, callback: Callable[[str, dict[str, Any]], None]) -> None:
        self._callbacks.append(callback)

    def _notice(self, topic: str, payload: dict[str, Any]) -> str:
        notice = orjson.dumps({"from": self.worker_id, "topic": topic, "payload": payload})
        if len(notice) >= MAX_NOTIFICATION:
            raise ValueError(
                f"notification {topic!r} is {len(notice)} bytes, Postgres carries fewer than "
                f"{MAX_NOTIFICATION}: send ids, not data"
            )
        return notice.decode()

    async def _listen(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a listener connection open (reopening a broken one) and dispatch what it
        receives. Started once the first connection listens; until then, failures raise."""
        started = False
        while True:
            try:
                conn = await trio.to_thread.run_sync(
                    _listener, self._db.conninfo, self.worker_id, self._lease
                )
            except psycopg.Error as exc:
                if not started:
                    raise
                log.warning("worker %s: cannot listen (%s); retrying", self.worker_id, exc)
                await trio.sleep(RECONNECT_DELAY)
                continue
            if not started:
                task_status.started()
                started = True
            try:
                while True:
                    for notice in await trio.to_thread.run_sync(_drain, conn):
                        self._dispatch(notice)
                    await trio.lowlevel.wait_readable(conn.fileno())
            except psycopg.Error as exc:
                log.warning("worker %s: listener lost (%s); reopening", self.worker_id, exc)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close)

    def _dispatch(self, notice: str) -> None:
        try:
            message = orjson.loads(notice)
            sender, topic, payload = message["from"], message["topic"], message["payload"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("worker %s: ignored a malformed notification %r", self.worker_id, notice)
            return
        if sender == self.worker_id:
            return
        for callback in list(self._callbacks):
            try:
                callback(topic, payload)
            except Exception:
                log.exception("notification callback %r failed on %s", callback, topic)

    # -- thread locks -------------------------------------------------------------------------

    @asynccontextmanager
    async def thread_lock(self, thread_id: str) -> AsyncIterator[None]:
        """Hold ``thread_id``'s advisory lock for the block.

        Tasks of this process queue on a Trio lock first, so one of them at a time waits for
        the advisory lock. It waits by polling ``pg_try_advisory_lock`` (backing off from
        :data:`LOCK_POLL_MIN` to :data:`LOCK_POLL_MAX` seconds) with ``trio.sleep`` between
        tries: cancellable at once, and no worker thread or limiter token is taken while
        another worker holds the lock. The release is shielded and bounded, and returns the
        connection to the pool whatever happened.
        """
        async with self._local_lock(thread_id), self._lock_slots:
            conn = await trio.to_thread.run_sync(self._db.pool.getconn, limiter=self._db.limiter)
            locked = False
            try:
                delay = LOCK_POLL_MIN
                while not await self._on(conn, _try_lock, thread_id):
                    await trio.sleep(delay)
                    delay = min(2 * delay, LOCK_POLL_MAX)
                locked = True
                yield
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLEANUP_TIMEOUT
                    await trio.to_thread.run_sync(
                        _release,
                        self._db.pool,
                        conn,
                        thread_id if locked else None,
                        limiter=self._release_limiter,
                        abandon_on_cancel=True,
                    )

    @asynccontextmanager
    async def _local_lock(self, thread_id: str) -> AsyncIterator[None]:
        """This process's Trio lock of a thread, kept while a task holds or waits for it."""
        lock, users = self._local_locks.get(thread_id, (trio.Lock(), 0))
        self._local_locks[thread_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._local_locks[thread_id]
            if users == 1:
                del self._local_locks[thread_id]
            else:
                self._local_locks[thread_id] = (lock, users - 1)

    async def _on(self, conn: _Connection, fn: Callable[[_Connection, str], T], arg: str) -> T:
        return await trio.to_thread.run_sync(fn, conn, arg, limiter=self._db.limiter)

    # -- runs ---------------------------------------------------------------------------------

    async def claim(self, *, limit: int = 100) -> list[Run]:
        return await self._claim(limit)

    async def owns(self, run_id: str) -> bool:
        sql = "SELECT owner FROM runs WHERE run_id = %s"
        row = await self._db.run(lambda conn: conn.execute(sql, (run_id,)).fetchone(), single=True)
        return row is None or row[0] == self.worker_id

    async def record(self, run: Run) -> bool:
        params = [*_RUNS.row(run), run.run_id, self.worker_id, run.run_id]
        row = await self._db.run(lambda conn: conn.execute(_RECORD, params).fetchone(), single=True)
        return bool(row and row[0])

    async def discard(self, run: Run) -> bool | None:
        params = {"run": run.run_id, "owner": self.worker_id, "thread": run.thread_id}
        row = await self._db.run(
            lambda conn: conn.execute(_DISCARD, params).fetchone(), single=True
        )
        mine, deleted = row or (False, False)  # one row, always
        return bool(deleted) if mine else None

    async def append_events(
        self, run_id: str, events: Sequence[StoredEvent]
    ) -> ThreadAppend | None:
        """One statement stores the events (the protocol ones in the thread's log too) and
        notifies, if the run is still this worker's; those of a run deleted or claimed by
        another worker meanwhile are dropped."""
        if not events:
            return None
        seqs, names, data = (list(column) for column in zip(*events, strict=True))
        ms = int(time.time() * 1000)
        params = {
            "run_id": run_id,
            "owner": self.worker_id,
            "seqs": seqs,
            "names": names,
            "data": data,
            "ms": ms,
            "cap": LOG_CAP,
            "channel": CHANNEL,
            "notice": self._notice("events", {"run_id": run_id, "seq": events[-1][0]}),
        }
        row = await self._db.run(lambda conn: conn.execute(_APPEND, params).fetchone(), single=True)
        if not row or not row[0]:
            log.debug("events of run %s dropped: the run is gone or another worker's", run_id)
            return None
        _, thread_id, last, count, _ = row
        if thread_id is None:
            return None
        return ThreadAppend(thread_id=thread_id, last=last, count=count, ms=ms)

    async def events(self, run_id: str, *, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        sql = """SELECT seq, event, data FROM run_events
            WHERE run_id = %s AND seq > %s ORDER BY seq LIMIT %s"""
        rows = await self._db.run(
            lambda conn: conn.execute(sql, (run_id, after, limit)).fetchall(), single=True
        )
        return [(seq, event, data) for seq, event, data in rows]

    async def thread_events(self, thread_id: str, *, after: int) -> tuple[int, list[ThreadEvent]]:
        def read(conn: _Connection) -> tuple[int, list[ThreadEvent]]:
            head_sql = "SELECT seq FROM thread_event_seqs WHERE thread_id = %s"
            row = conn.execute(head_sql, (thread_id,)).fetchone()
            head = row[0] if row else 0
            rows = conn.execute(_THREAD_EVENTS, (thread_id, after, head)).fetchall()
            return head, [(seq, ms, event, data) for seq, ms, event, data in rows]

        return await self._db.run(read)

    async def thread_heads(self, thread_ids: Sequence[str]) -> dict[str, int]:
        if not thread_ids:
            return {}
        sql = "SELECT thread_id, seq FROM thread_event_seqs WHERE thread_id = ANY(%s)"
        ids = list(thread_ids)
        rows = await self._db.run(lambda conn: conn.execute(sql, (ids,)).fetchall(), single=True)
        return dict(rows)

    async def thread_run_start(self, thread_id: str) -> int:
        params = {"t": thread_id}
        row = await self._db.run(
            lambda conn: conn.execute(_THREAD_RUN_START, params).fetchone(), single=True
        )
        assert row is not None
        return int(row[0])

    async def prune_events(self, before: dt.datetime) -> int:
        def prune(conn: _Connection) -> int:
            row = conn.execute(_PRUNE, (before,)).fetchone()
            conn.execute(_TRIM_BYTES, (LOG_BYTES,))
            assert row is not None
            return int(row[0])

        return await self._db.run(prune)


# -- in worker threads ------------------------------------------------------------------------


def _connect(conninfo: str, role: str, worker_id: str, lease: float) -> _Connection:
    """One of the cluster's own connections, named in ``pg_stat_activity``. TCP keepalives
    and a TCP user timeout (Linux) turn a server or network gone silent into an error within
    about a lease: a heartbeat never waits longer on one, and a listener is reopened."""
    probe = max(1, math.ceil(lease / 3))
    return psycopg.connect(
        conninfo,
        autocommit=True,
        application_name=f"triograph {role} {worker_id}"[:63],
        keepalives=1,
        keepalives_idle=probe,
        keepalives_interval=probe,
        keepalives_count=3,
        tcp_user_timeout=math.ceil(lease * 1000),
    )


def _listener(conninfo: str, worker_id: str, lease: float) -> _Connection:
    conn = _connect(conninfo, "listener", worker_id, lease)
    try:
        conn.execute(f"LISTEN {CHANNEL}")
    except psycopg.Error:
        conn.close()
        raise
    return conn


def _drain(conn: _Connection) -> list[str]:
    """The payloads that arrived, without waiting; raises if the connection is gone."""
    notices = [n.payload for n in conn.notifies(timeout=0)]
    if conn.pgconn.status != ConnStatus.OK:
        raise psycopg.OperationalError("the listener connection was closed")
    return notices


def _heartbeat(
    conn: _Connection, worker_id: str, leader: bool, executing: list[str]
) -> tuple[bool, list[str]]:
    """Write the heartbeat; returns whether this session holds the leadership now (a
    heartbeat through the session that took it proves it still does), and which runs among
    ``executing`` another worker owns."""
    lost = [row[0] for row in conn.execute(_HEARTBEAT, {"worker": worker_id, "runs": executing})]
    if leader:
        return True, lost
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK).fetchone()
    return bool(row and row[0]), lost


def _retire(control: _Connection | None, conninfo: str, worker_id: str, lease: float) -> None:
    """Delete the worker's row and close the control connection (ending the leadership)."""
    if control is not None and control.broken:
        control.close()
        control = None
    try:
        if control is None:
            control = _connect(conninfo, "control", worker_id, lease)
        control.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))
    except psycopg.Error as exc:
        log.warning("worker %s: could not delete its row (%s)", worker_id, exc)
    finally:
        if control is not None:
            control.close()


def _count() -> None:
    """A statement on a pool connection outside ``PgDatabase``: counted with its own."""
    if (counts := Counts.of_process()) is not None:
        counts.add(calls=1, statements=1, trips=1)


def _try_lock(conn: _Connection, thread_id: str) -> bool:
    _count()
    row = conn.execute(
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (thread_id,)
    ).fetchone()
    conn.commit()  # ends the transaction a non-autocommit connection began; the lock stays
    return bool(row and row[0])


def _release(pool: ConnectionPool[Any], conn: _Connection, thread_id: str | None) -> None:
    """Unlock ``thread_id`` (None: not locked) and return ``conn`` to the pool, closed if
    the lock might still be held on it."""
    try:
        if thread_id is not None:
            _count()
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (thread_id,))
            conn.commit()
    except psycopg.Error as exc:
        log.warning("thread lock %s not released (%s); closing its connection", thread_id, exc)
        conn.close()
    finally:
        pool.putconn(conn)
