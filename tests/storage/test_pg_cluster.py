"""The Postgres cluster: workers sharing one database (a fresh one per test) see each other's
notifications, exclude each other with thread locks, elect one leader and share run events.

Skipped unless ``TRIOGRAPH_TEST_POSTGRES`` names a server (see ``tests/pg.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import psycopg
import pytest
import trio

from tests.concurrency import until
from tests.pg import ADMIN_DSN, drop_database, fresh_database
from tests.sdk import poll
from triograph.core.infra.models import Run
from triograph.storage.pg_cluster import LEADER_LOCK, PostgresCluster
from triograph.storage.postgres import POOL_SIZE, PgDatabase, _conninfo, _open_pool, _set_up

pytestmark = pytest.mark.skipif(ADMIN_DSN is None, reason="TRIOGRAPH_TEST_POSTGRES is not set")

#: a short lease: heartbeats every 0.2 s
LEASE = 0.6


async def sql(db: PgDatabase, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """``query`` on a connection of the test's own, outside the pool."""

    def work() -> list[tuple[Any, ...]]:
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    return await trio.to_thread.run_sync(work)


@pytest.fixture
async def db() -> AsyncIterator[PgDatabase]:
    """The backend's database, migrated, on a fresh database; a thread ``t`` in it."""
    url = await trio.to_thread.run_sync(fresh_database)
    conninfo = _conninfo(url)
    try:
        await trio.to_thread.run_sync(_set_up, conninfo, None)
        pool = await trio.to_thread.run_sync(_open_pool, conninfo)
        try:
            database = PgDatabase(conninfo, pool, trio.CapacityLimiter(POOL_SIZE))
            await sql(
                database,
                """INSERT INTO threads (thread_id, status, created_at, updated_at,
                    state_updated_at, metadata, "values", doc)
                VALUES ('t', 'idle', now(), now(), now(), '{}', '{}', '{}')""",
            )
            yield database
        finally:
            await trio.to_thread.run_sync(pool.close)
    finally:
        await trio.to_thread.run_sync(drop_database, url)


async def add_run(
    db: PgDatabase,
    run_id: str,
    status: str = "running",
    updated_at: dt.datetime | None = None,
    owner: str | None = "a",
) -> None:
    await sql(
        db,
        """INSERT INTO runs (run_id, thread_id, status, created_at, updated_at, doc, owner)
        VALUES (%s, 't', %s, now(), %s, '{}', %s)""",
        (run_id, status, updated_at or dt.datetime.now(dt.UTC), owner),
    )


async def no_claims(limit: int) -> list[Run]:
    return []


def cluster(
    db: PgDatabase, worker_id: str, claim: Callable[[int], Awaitable[list[Run]]] = no_claims
) -> PostgresCluster:
    return PostgresCluster(db, worker_id, LEASE, claim)


@asynccontextmanager
async def running(db: PgDatabase, *worker_ids: str) -> AsyncIterator[list[PostgresCluster]]:
    clusters = [cluster(db, w) for w in worker_ids]
    async with AsyncExitStack() as stack:
        for c in clusters:
            await stack.enter_async_context(c.running())
        yield clusters


def inbox(c: PostgresCluster) -> list[tuple[str, dict[str, Any]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    c.subscribe(lambda topic, payload: received.append((topic, payload)))
    return received


async def terminate(db: PgDatabase, role: str, worker_id: str) -> None:
    """End the server session of one of the worker's own connections."""
    rows = await sql(
        db,
        """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = %s AND datname = current_database()""",
        (f"triograph {role} {worker_id}",),
    )
    assert rows == [(True,)]


async def thread_locks(db: PgDatabase) -> int:
    """Advisory locks on 64-bit keys (thread locks) held in the database."""
    rows = await sql(
        db,
        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1
            AND granted AND database = (SELECT oid FROM pg_database
                                        WHERE datname = current_database())""",
    )
    return int(rows[0][0])


def pool_idle(db: PgDatabase) -> bool:
    stats = db.pool.get_stats()
    return stats["pool_available"] == stats["pool_size"]


# -- notifications ----------------------------------------------------------------------------


async def test_workers_see_each_others_notifications_in_order_and_not_their_own(
    db: PgDatabase,
) -> None:
    async with running(db, "a", "b") as (a, b):
        to_a, to_b = inbox(a), inbox(b)
        for n in range(20):
            await a.notify("cancel", {"run_id": f"r{n}"})
        await b.notify("done", {"run_id": "last"})
        # a's own notifications were committed before b's, so they would have come first
        await until(lambda: len(to_a) == 1 and len(to_b) == 20)
        assert to_a == [("done", {"run_id": "last"})]
        assert to_b == [("cancel", {"run_id": f"r{n}"}) for n in range(20)]


async def test_a_notification_over_the_postgres_limit_is_refused(db: PgDatabase) -> None:
    async with running(db, "a", "b") as (a, b):
        to_b = inbox(b)
        with pytest.raises(ValueError, match="send ids"):
            await a.notify("cancel", {"reason": "x" * 8000})
        await a.notify("cancel", {"reason": "short"})
        await until(lambda: len(to_b) == 1)
        assert to_b == [("cancel", {"reason": "short"})]


async def test_a_broken_listener_is_reopened_and_a_failing_callback_is_survived(
    db: PgDatabase,
) -> None:
    async with running(db, "a", "b") as (a, b):
        to_b = inbox(b)

        def fail(topic: str, payload: dict[str, Any]) -> None:
            raise RuntimeError("a subscriber bug")

        b.subscribe(fail)
        await terminate(db, "listener", "b")
        n = 0
        with trio.fail_after(10):
            while not to_b:  # what is sent while b reconnects is lost
                n += 1
                await a.notify("ping", {"n": n})
                await trio.sleep(0.05)
        await a.notify("ping", {"n": "after"})
        await until(lambda: to_b[-1] == ("ping", {"n": "after"}))


# -- thread locks -----------------------------------------------------------------------------


async def test_a_thread_lock_excludes_other_workers_until_released(db: PgDatabase) -> None:
    async with running(db, "a", "b") as (a, b):
        entered = trio.Event()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery, a.thread_lock("t1"):

                async def take() -> None:
                    async with b.thread_lock("t1"):
                        entered.set()

                nursery.start_soon(take)
                async with b.thread_lock("t2"):  # another thread's lock is free
                    pass
                with trio.move_on_after(0.3):
                    await entered.wait()
                assert not entered.is_set()
        assert entered.is_set()
    assert await thread_locks(db) == 0
    assert pool_idle(db)


async def test_a_cancelled_waiter_leaves_no_lock_behind(db: PgDatabase) -> None:
    async with running(db, "a", "b") as (a, b):
        async with a.thread_lock("t1"):
            with trio.move_on_after(0.1) as waiting:
                async with b.thread_lock("t1"):
                    pytest.fail("b got a lock a holds")
            assert waiting.cancelled_caught
        assert await thread_locks(db) == 0
        with trio.fail_after(5):
            async with b.thread_lock("t1"):
                assert await thread_locks(db) == 1
    assert await thread_locks(db) == 0
    assert pool_idle(db)


async def test_a_cancelled_holder_releases(db: PgDatabase) -> None:
    async with running(db, "a", "b") as (a, b):
        with trio.CancelScope() as scope:
            async with a.thread_lock("t1"):
                scope.cancel()
                await trio.sleep_forever()
        with trio.fail_after(5):
            async with b.thread_lock("t1"):
                pass
    assert await thread_locks(db) == 0
    assert pool_idle(db)


async def test_tasks_of_one_worker_take_a_thread_lock_in_turn(db: PgDatabase) -> None:
    async with running(db, "a") as (a,):
        inside: list[int] = []
        overlaps: list[int] = []

        async def critical(n: int) -> None:
            async with a.thread_lock("t1"):
                overlaps.extend(inside)
                inside.append(n)
                await trio.sleep(0.01)
                inside.remove(n)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for n in range(6):
                    nursery.start_soon(critical, n)
        assert overlaps == []
        assert a._local_locks == {}
    assert await thread_locks(db) == 0


# -- leadership and heartbeats ----------------------------------------------------------------


async def serve(c: PostgresCluster, stop: trio.Event, *, task_status: Any) -> None:
    async with c.running():
        task_status.started()
        await stop.wait()


async def test_one_leader_and_a_successor_when_it_stops(db: PgDatabase) -> None:
    clusters = [cluster(db, w) for w in ("a", "b", "c")]
    stops = {c.worker_id: trio.Event() for c in clusters}
    async with trio.open_nursery() as nursery:
        for c in clusters:
            await nursery.start(serve, c, stops[c.worker_id])
        await until(lambda: sum(c.leader for c in clusters) == 1)
        leaders = [c for c in clusters if c.leader]
        stops[leaders[0].worker_id].set()
        await until(lambda: not leaders[0].leader and sum(c.leader for c in clusters) == 1)
        for stop in stops.values():
            stop.set()


async def test_leadership_is_lost_with_its_connection_and_taken_again(db: PgDatabase) -> None:
    async with running(db, "a") as (a,):
        await until(lambda: a.leader)
        rival = await trio.to_thread.run_sync(lambda: psycopg.connect(db.conninfo, autocommit=True))
        try:
            await terminate(db, "control", "a")
            # the rival waits for the terminated session to let the lock go, then holds it
            await trio.to_thread.run_sync(
                lambda: rival.execute("SELECT pg_advisory_lock(%s, %s)", LEADER_LOCK)
            )
            await until(lambda: not a.leader)
        finally:
            await trio.to_thread.run_sync(rival.close)
        await until(lambda: a.leader)


async def test_the_heartbeat_is_kept_while_running_and_deleted_at_exit(db: PgDatabase) -> None:
    query = "SELECT heartbeat_at FROM workers WHERE worker_id = %s"
    async with running(db, "a"):
        [(first,)] = await sql(db, query, ("a",))
        await poll(lambda: sql(db, query, ("a",)), lambda rows: rows != [(first,)])
    assert await sql(db, query, ("a",)) == []


async def test_claims_are_the_backends(db: PgDatabase) -> None:
    limits: list[int] = []

    async def claim(limit: int) -> list[Run]:
        limits.append(limit)
        return []

    c = cluster(db, "a", claim)
    assert await c.claim(limit=7) == []
    assert await c.claim() == []
    assert limits == [7, 100]


# -- run events -------------------------------------------------------------------------------


async def test_events_are_stored_read_after_a_seq_and_announced(db: PgDatabase) -> None:
    await add_run(db, "r1")
    async with running(db, "a", "b") as (a, b):
        to_b = inbox(b)
        await a.append_events("r1", [])
        await a.append_events("r1", [(1, "metadata", b'{"run_id":"r1"}'), (2, "values", b"{}")])
        await a.append_events("r1", [(3, "end", b"null")])
        await until(lambda: len(to_b) == 2)
        assert to_b == [
            ("events", {"run_id": "r1", "seq": 2}),
            ("events", {"run_id": "r1", "seq": 3}),
        ]
        assert await b.events("r1") == [
            (1, "metadata", b'{"run_id":"r1"}'),
            (2, "values", b"{}"),
            (3, "end", b"null"),
        ]
        assert await b.events("r1", after=1, limit=1) == [(2, "values", b"{}")]
        assert await b.events("r1", after=3) == []
        with pytest.raises(psycopg.errors.UniqueViolation):
            await a.append_events("r1", [(3, "end", b"null")])
        await sql(db, "DELETE FROM runs WHERE run_id = 'r1'")
        assert await b.events("r1") == []
        await a.append_events("r1", [(4, "late", b"null")])  # the run is gone: dropped
        assert await sql(db, "SELECT count(*) FROM run_events") == [(0,)]


async def test_only_the_runs_owner_stores_its_events_and_owns_it(db: PgDatabase) -> None:
    """Lease fencing: once another worker claimed a run, the worker that lost it neither
    stores its events nor owns it (a run no longer stored is nobody's to fence)."""
    await add_run(db, "r1", owner="a")
    async with running(db, "a", "b") as (a, b):
        assert await a.owns("r1")
        assert not await b.owns("r1")
        await a.append_events("r1", [(1, "values", b"{}")])
        await sql(db, "UPDATE runs SET owner = 'b' WHERE run_id = 'r1'")  # b claimed it
        assert not await a.owns("r1")
        await a.append_events("r1", [(2, "values", b"{}")])  # dropped: a lost the run
        await b.append_events("r1", [(2, "end", b"null")])  # the claimant numbers after
        assert await b.events("r1") == [(1, "values", b"{}"), (2, "end", b"null")]
        assert await a.owns("gone")


async def test_a_runs_final_record_is_written_only_by_its_owner(db: PgDatabase) -> None:
    """Lease fencing in the final write itself: the owner's record is stored, a worker that
    lost the run stores nothing and is told so; a run no longer stored is nobody's to fence.
    """
    await add_run(db, "r1", owner="a")
    done = Run(run_id="r1", thread_id="t", assistant_id="x", status="success")
    async with running(db, "a", "b") as (a, b):
        assert not await b.record(done)
        assert await sql(db, "SELECT status FROM runs WHERE run_id = 'r1'") == [("running",)]
        assert await a.record(done)
        assert await sql(db, "SELECT status FROM runs WHERE run_id = 'r1'") == [("success",)]
        assert await a.record(attrs.evolve(done, run_id="gone"))
        assert await sql(db, "SELECT count(*) FROM runs WHERE run_id = 'gone'") == [(0,)]


async def test_a_temporary_runs_end_deletes_it_with_its_thread_only_by_its_owner(
    db: PgDatabase,
) -> None:
    """Lease fencing in a temporary run's last write, which deletes it with its thread: a
    worker that lost the run deletes nothing and is told so (None); the owner deletes both
    (True); a thread gone already is told apart (False), and a run no longer stored is
    nobody's to fence."""
    await add_run(db, "r1", owner="a")
    done = Run(run_id="r1", thread_id="t", assistant_id="x", status="success")
    async with running(db, "a", "b") as (a, b):
        assert await b.discard(done) is None
        assert await sql(db, "SELECT count(*) FROM threads") == [(1,)]
        assert await sql(db, "SELECT owner, status FROM runs") == [("a", "running")]
        assert await a.discard(done) is True
        assert await sql(db, "SELECT count(*) FROM threads") == [(0,)]
        assert await sql(db, "SELECT count(*) FROM runs") == [(0,)]
        assert await a.discard(done) is False
        assert await b.discard(done) is False


async def test_a_heartbeat_hands_over_the_runs_another_worker_claimed(db: PgDatabase) -> None:
    """Lease fencing of the execution: at each heartbeat the watcher hears which of the runs
    it executes are another worker's now (not its own, not one no longer stored)."""
    await add_run(db, "r1", owner="a")
    await add_run(db, "r2", owner="a")
    lost: list[list[str]] = []
    async with running(db, "a") as (a,):
        a.watch(lambda: ["r1", "r2", "gone"], lost.append)
        await trio.sleep(LEASE)  # heartbeats: nothing lost
        assert lost == []
        await sql(db, "UPDATE runs SET owner = 'b' WHERE run_id = 'r2'")  # b claimed it
        await until(lambda: bool(lost))
        assert lost[0] == ["r2"]


async def test_prune_drops_the_events_of_runs_finished_before_a_time(db: PgDatabase) -> None:
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    await add_run(db, "old-success", "success", old)
    await add_run(db, "old-error", "error", old)
    await add_run(db, "old-running", "running", old)
    await add_run(db, "old-pending", "pending", old)
    await add_run(db, "new-success", "success")
    c = cluster(db, "a")
    for run_id in ("old-success", "old-error", "old-running", "old-pending", "new-success"):
        await c.append_events(run_id, [(1, "values", b"{}"), (2, "end", b"null")])
    assert await c.prune_events(old + dt.timedelta(days=1)) == 2
    left = await sql(db, "SELECT DISTINCT run_id FROM run_events ORDER BY run_id")
    assert left == [("new-success",), ("old-pending",), ("old-running",)]
    assert await c.prune_events(old + dt.timedelta(days=1)) == 0


# -- the protocol's thread log ----------------------------------------------------------------


async def test_protocol_events_are_numbered_per_thread_by_whoever_stores_them(
    db: PgDatabase,
) -> None:
    """The protocol events of a batch go to the thread's log too, in the same statement,
    numbered after the thread's last whatever worker stores them; the notice says so."""
    await add_run(db, "r1", owner="a")
    await add_run(db, "r2", owner="b")
    async with running(db, "a", "b") as (a, b):
        to_b = inbox(b)
        assert await b.thread_events("t", after=0) == (0, [])
        assert await a.thread_run_start("t") == 0
        stored = await a.append_events(
            "r1",
            [
                (1, "metadata", b"{}"),
                (2, "protocol|lifecycle", b'{"a":1}'),
                (3, "values", b"{}"),
                (4, "protocol|values|sub:1", b'{"a":2}'),
            ],
        )
        assert stored is not None
        assert (stored.thread_id, stored.last, stored.count) == ("t", 2, 2)
        assert await a.append_events("r1", [(5, "values", b"{}")]) is None
        stored = await b.append_events("r2", [(1, "protocol|lifecycle", b'{"a":3}')])
        assert stored is not None
        assert stored.last == 3
        head, events = await b.thread_events("t", after=1)
        assert head == 3
        assert [(seq, name, data) for seq, _, name, data in events] == [
            (2, "protocol|values|sub:1", b'{"a":2}'),
            (3, "protocol|lifecycle", b'{"a":3}'),
        ]
        assert await a.thread_heads(["t", "unknown"]) == {"t": 3}
        assert await a.thread_run_start("t") == 2  # r2 is the latest run: from its first
        await until(lambda: len(to_b) == 2)
        assert to_b[0] == (
            "events",
            {"run_id": "r1", "seq": 4, "thread_id": "t", "thread_seq": 2},
        )
        assert to_b[1] == ("events", {"run_id": "r1", "seq": 5})
        # a worker that lost the run stores nothing, in either log
        assert await a.append_events("r2", [(2, "protocol|values", b"{}")]) is None
        assert await b.thread_heads(["t"]) == {"t": 3}
        await add_run(db, "r3", owner="a")  # created last, nothing stored yet
        assert await a.thread_run_start("t") == 3
        await sql(db, "DELETE FROM threads WHERE thread_id = 't'")
        assert await b.thread_events("t", after=0) == (0, [])


async def test_a_thread_log_keeps_its_newest_events(
    db: PgDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    from triograph.storage import pg_cluster

    monkeypatch.setattr(pg_cluster, "LOG_CAP", 3)
    monkeypatch.setattr(pg_cluster, "LOG_BYTES", 5)
    await add_run(db, "r1", owner="a")
    c = cluster(db, "a")
    for seq in range(1, 6):
        await c.append_events("r1", [(seq, "protocol|values", b"12")])
    head, events = await c.thread_events("t", after=0)
    assert (head, [e[0] for e in events]) == (5, [3, 4, 5])
    await c.prune_events(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    head, events = await c.thread_events("t", after=0)
    assert (head, [e[0] for e in events]) == (5, [4, 5])
