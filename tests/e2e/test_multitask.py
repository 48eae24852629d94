"""Multitask strategies (contract §7), a third-party one (``examples/latest_wins.py``) and
the ``max_runs`` capacity, through the official SDK. Runs are ``slow`` runs with markers
(see ``tests/concurrency.py``): the thread's ``log`` shows which runs executed, in what
order, and how far each got."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio
from langgraph_sdk.errors import ConflictError

from tests.concurrency import (
    FAST,
    STEP,
    checkpoints,
    exchange,
    log_reaches,
    new_thread,
    quiet,
    run_ends,
    run_reaches,
    run_status,
    slow_input,
    sse,
    start_slow,
    until,
    writers,
)
from tests.conftest import EXAMPLES, example_settings, start_server
from tests.sdk import Server, collect, get
from triograph.core.infra.models import Run

REJECTED = (
    "Thread is already running a task. Wait for it to finish or choose a different "
    "multitask strategy."
)
DONE = ["step1", "step2"]


async def values(server: Server, tid: str) -> Any:
    return (await server.sync(lambda c: c.threads.get(tid)))["values"]


# -- reject -----------------------------------------------------------------------------------


async def test_reject_is_409_for_create_stream_and_wait_and_creates_nothing(
    server: Server,
) -> None:
    running = await new_thread(server)
    first = await start_slow(server, running)
    queued = await start_slow(server, running, FAST)
    await run_reaches(server, running, first, "running")
    delayed = await new_thread(server)  # only a pending run in flight: still "in flight"
    later = await start_slow(server, delayed, FAST, after_seconds=30)

    for tid in (running, delayed):
        with pytest.raises(ConflictError) as created:
            await server.sync(
                lambda c, tid=tid: c.runs.create(
                    tid, "slow", input=slow_input(0), multitask_strategy="reject"
                )
            )
        assert created.value.message == REJECTED
        with pytest.raises(httpx.HTTPStatusError) as waited:
            await server.aio(
                lambda c, tid=tid: c.runs.wait(
                    tid, "slow", input=slow_input(0), multitask_strategy="reject"
                )
            )
        assert waited.value.response.status_code == 409
        assert waited.value.response.json() == {"detail": REJECTED}
        with pytest.raises(ConflictError):
            await server.aio(
                lambda c, tid=tid: collect(
                    c.runs.stream(tid, "slow", input=slow_input(0), multitask_strategy="reject")
                )
            )
    runs = await server.sync(lambda c: c.runs.list(running))
    assert [(r["run_id"], r["status"]) for r in runs] == [(queued, "pending"), (first, "running")]
    assert [r["run_id"] for r in await server.sync(lambda c: c.runs.list(delayed))] == [later]
    assert (await server.sync(lambda c: c.threads.get(running)))["status"] == "busy"
    await server.sync(lambda c: c.runs.cancel_many(status="all"))


# -- interrupt and rollback -------------------------------------------------------------------


async def test_interrupt_keeps_partial_writes_and_the_open_stream_ends_cleanly(
    server: Server,
) -> None:
    tid = await new_thread(server)
    parts: list[Any] = []

    async def stream_first() -> None:
        parts.extend(
            await server.aio(
                lambda c: collect(c.runs.stream(tid, "slow", input=slow_input(STEP, "a")))
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream_first)
        await log_reaches(server, tid, ["a", "step1"])
        second = await server.aio(
            lambda c: c.runs.wait(
                tid, "slow", input=slow_input(FAST, "b"), multitask_strategy="interrupt"
            )
        )
    assert second["log"] == ["a", "step1", "b", *DONE]  # from the interrupted run's writes
    first = parts[0].data["run_id"]
    # the first run's stream ended without an error, after the values it had reached
    assert [p.event for p in parts] == ["metadata", "values", "values"]
    assert parts[-1].data["log"] == ["a", "step1"]
    assert await run_status(server, tid, first) == "interrupted"
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "idle"
    assert thread["error"] is None  # the last run succeeded
    await quiet(server)


async def test_rollback_deletes_the_run_and_its_checkpoints_and_its_stream_ends_cleanly(
    server: Server,
) -> None:
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "slow", input=slow_input(FAST, "p")))
    before = await checkpoints(server, tid)
    first = await start_slow(server, tid, marker="a")
    joined: list[Any] = []

    async def join_first() -> None:
        joined.extend(await server.aio(lambda c: collect(c.runs.join_stream(tid, first))))

    handle = server.core.supervisor.get(first)
    assert handle is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(join_first)
        await until(lambda: handle.stream.subscriber_count == 1)
        await log_reaches(server, tid, ["p", *DONE, "a"])
        second = await server.sync(
            lambda c: c.runs.wait(
                tid, "slow", input=slow_input(FAST, "b"), multitask_strategy="rollback"
            )
        )
    assert second["log"] == ["p", *DONE, "b", *DONE]  # as if the first run never ran
    assert [p.event for p in joined][:1] == ["metadata"]
    assert {p.event for p in joined[1:]} == {"values"}  # and no error event
    assert await run_status(server, tid, first) is None
    history = await checkpoints(server, tid)
    assert first not in writers(history)
    assert history[: len(before)] == before
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "idle"
    await quiet(server)


@pytest.mark.parametrize("strategy", ["interrupt", "rollback"])
async def test_every_run_in_flight_is_cancelled_at_once(server: Server, strategy: str) -> None:
    """A running run, a queued one and a delayed one: all three go (contract §7)."""
    tid = await new_thread(server)
    running = await start_slow(server, tid, marker="a")
    queued = await start_slow(server, tid, FAST, "b")
    delayed = await start_slow(server, tid, FAST, "c", after_seconds=5)
    await log_reaches(server, tid, ["a"])
    created: list[Any] = []
    result = await server.sync(
        lambda c: c.runs.wait(
            tid,
            "slow",
            input=slow_input(FAST, "d"),
            multitask_strategy=strategy,
            on_run_created=created.append,
        )
    )
    expected = "interrupted" if strategy == "interrupt" else None
    for rid in (running, queued, delayed):
        assert await run_ends(server, tid, rid) == expected
    latest = created[0]["run_id"]
    history = await checkpoints(server, tid)
    if strategy == "interrupt":
        assert result["log"] == ["a", "d", *DONE]
        assert writers(history) == [running, latest]  # the waiting runs never started
    else:
        assert result["log"] == ["d", *DONE]
        assert writers(history) == [latest]
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "idle"
    await quiet(server)


async def test_the_next_run_starts_only_once_a_rollback_has_deleted_everything(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow checkpointer (a database) takes a while to delete the rolled back run's
    checkpoints; the new run must not read the thread's head before that is done."""
    rollback = server.core.runs.rollback

    async def slow_rollback(run: Run) -> None:
        await trio.sleep(0.3)
        await rollback(run)

    monkeypatch.setattr(server.core.runs, "rollback", slow_rollback)
    tid = await new_thread(server)
    await start_slow(server, tid, marker="a")
    await log_reaches(server, tid, ["a"])
    result = await server.sync(
        lambda c: c.runs.wait(
            tid, "slow", input=slow_input(FAST, "b"), multitask_strategy="rollback"
        )
    )
    assert result["log"] == ["b", *DONE]
    await quiet(server)


async def test_a_run_admitted_while_the_previous_one_finishes_keeps_the_thread_busy(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run is admitted, then storing it takes until the first run has finished
    and is recording its outcome (the thread status among it): that status must count the
    second run (``busy``), whichever of the two writes comes first."""
    storage = server.core.storage
    create = storage.runs.create
    first_finishing = trio.Event()

    async def slow_create(run: Run) -> None:
        if run.kwargs["input"]["log"] == ["b"]:
            await first_finishing.wait()
        await create(run)

    monkeypatch.setattr(storage.runs, "create", slow_create)
    tid = await new_thread(server)
    first = await start_slow(server, tid, FAST, "a")
    handle = server.core.supervisor.get(first)
    assert handle is not None

    async def watch_first() -> None:
        while not handle.finishing:  # noqa: ASYNC110 - a flag the supervisor sets, no event
            await trio.sleep(0.001)
        first_finishing.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_first)
        second = await start_slow(server, tid, 0.5, "b")
    await handle.done.wait()
    assert await run_status(server, tid, first) == "success"
    assert await run_status(server, tid, second) in ("pending", "running")
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "busy"
    assert await run_ends(server, tid, second) == "success"
    await quiet(server)


# -- enqueue ----------------------------------------------------------------------------------


async def test_enqueued_runs_execute_one_at_a_time_in_submission_order(server: Server) -> None:
    tid = await new_thread(server)
    ids = [await start_slow(server, tid, 0.5, "r0")]  # long enough to find the thread busy
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "busy"
    ids += [await start_slow(server, tid, FAST, f"r{i}") for i in range(1, 5)]
    result = await server.aio(lambda c: c.runs.join(tid, ids[-1]))
    assert result["log"] == [item for i in range(5) for item in (f"r{i}", *DONE)]
    # one at a time: each run's checkpoints are contiguous, in submission order
    history = await checkpoints(server, tid)
    runs_in_order = [s["metadata"]["run_id"] for s in history]
    assert writers(history) == ids
    assert runs_in_order == sorted(runs_in_order, key=ids.index)
    for rid in ids:
        assert await run_status(server, tid, rid) == "success"
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "idle"
    await quiet(server)


async def test_a_delayed_run_takes_its_turn_at_its_scheduled_time(server: Server) -> None:
    """Runs of a thread start in ``created_at`` order, the scheduled start that
    ``after_seconds`` sets (contract §5.1), not in the order they were sent."""
    tid = await new_thread(server)
    late = await start_slow(server, tid, FAST, "late", after_seconds=0.5)
    early = [await start_slow(server, tid, FAST, f"e{i}") for i in range(2)]
    for rid in (late, *early):
        assert await run_ends(server, tid, rid) == "success"
    runs = await server.sync(lambda c: c.runs.list(tid))
    by_schedule = [r["run_id"] for r in sorted(runs, key=lambda r: r["created_at"])]
    assert writers(await checkpoints(server, tid)) == by_schedule
    await quiet(server)


async def test_a_run_still_being_stored_when_a_delayed_run_starts_is_scheduled_after_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that is still reading storage when a delayed run's time comes is
    scheduled after that run, which has taken the thread: its scheduled start is stamped
    when it takes its place on the thread, not when the request arrived."""
    tid = await new_thread(server)
    delayed = await start_slow(server, tid, FAST, "delayed", after_seconds=0.2)
    threads = server.core.storage.threads
    get_thread = threads.get

    async def slow_get(*args: Any, **kwargs: Any) -> Any:
        await trio.sleep(0.6)  # the delayed run's time comes meanwhile
        return await get_thread(*args, **kwargs)

    monkeypatch.setattr(threads, "get", slow_get)
    later = await start_slow(server, tid, FAST, "later")
    monkeypatch.setattr(threads, "get", get_thread)
    for rid in (delayed, later):
        assert await run_ends(server, tid, rid) == "success"
    runs = await server.sync(lambda c: c.runs.list(tid))
    by_schedule = [r["run_id"] for r in sorted(runs, key=lambda r: r["created_at"])]
    assert writers(await checkpoints(server, tid)) == by_schedule == [delayed, later]
    await quiet(server)


# -- a third-party strategy -------------------------------------------------------------------


@pytest.fixture
async def latest_wins_server(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Server]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("TRIOGRAPH_LOAD_PLUGINS", "0")
    settings = example_settings(plugins=("latest_wins",), shutdown_grace=0.5)
    async for server in start_server(nursery, settings):
        yield server


async def test_latest_wins_drops_the_queue_and_keeps_the_running_run(
    latest_wins_server: Server,
) -> None:
    server = latest_wins_server
    tid = await new_thread(server)
    running = await start_slow(server, tid, 1.0, "a")
    queued = [await start_slow(server, tid, FAST, m) for m in ("b", "c")]
    await run_reaches(server, tid, running, "running")
    latest = await start_slow(server, tid, FAST, "d", multitask_strategy="latest_wins")
    for rid in queued:
        assert await run_ends(server, tid, rid) == "interrupted"
    assert await server.aio(lambda c: c.runs.join(tid, latest)) == {
        "delay": FAST,
        "log": ["a", *DONE, "d", *DONE],
    }
    assert await run_status(server, tid, running) == "success"
    assert writers(await checkpoints(server, tid)) == [running, latest]
    assert (await server.sync(lambda c: c.threads.get(tid)))["status"] == "idle"
    await quiet(server)


async def test_unknown_strategy_names_the_registered_ones(latest_wins_server: Server) -> None:
    tid = await new_thread(latest_wins_server)
    async with latest_wins_server.http() as h:
        r = await h.post(
            f"/threads/{tid}/runs",
            json={"assistant_id": "slow", "input": {}, "multitask_strategy": "newest"},
        )
    assert r.status_code == 422
    assert "'newest'" in r.json()["detail"]
    assert "latest_wins" in r.json()["detail"]


# -- capacity ---------------------------------------------------------------------------------


@pytest.fixture
async def one_slot_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    settings = example_settings(max_runs=1, shutdown_grace=0.5, heartbeat_interval=0.2)
    async for server in start_server(nursery, settings):
        yield server


async def test_runs_beyond_max_runs_wait_as_pending_in_order(one_slot_server: Server) -> None:
    server = one_slot_server
    tids = [await new_thread(server) for _ in range(3)]
    first = await start_slow(server, tids[0], 1.0, "a")
    await run_reaches(server, tids[0], first, "running")
    rest = [await start_slow(server, tid, FAST, "b") for tid in tids[1:]]
    for tid, rid in zip(tids[1:], rest, strict=True):
        assert await run_status(server, tid, rid) == "pending"
        assert (await server.sync(lambda c, tid=tid: c.threads.get(tid)))["status"] == "busy"
    for tid, rid in zip(tids, [first, *rest], strict=True):
        assert await run_ends(server, tid, rid) == "success"
    # one at a time, in the order they were sent: no run wrote before the previous ended
    spans = []
    for tid in tids:
        history = await checkpoints(server, tid)
        spans.append((history[0]["created_at"], history[-1]["created_at"]))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    await quiet(server)


async def test_a_run_waiting_for_a_slot_streams_its_metadata_and_heartbeats(
    one_slot_server: Server,
) -> None:
    server = one_slot_server
    busy = await new_thread(server)
    running = await start_slow(server, busy, marker="a")
    await run_reaches(server, busy, running, "running")

    def metadata_and_heartbeat(body: bytes) -> bool:
        return b"event: metadata" in body and b": heartbeat" in body

    body = {"assistant_id": "slow", "input": slow_input(FAST, "b"), "on_disconnect": "continue"}
    waiting = await exchange(server, "POST", "/runs/stream", body, leave=metadata_and_heartbeat)
    assert not waiting.complete
    events = sse(waiting.body)
    assert [name for name, _ in events] == ["metadata"]
    run_id = events[0][1]["run_id"]
    assert (await get(server, f"/runs/{run_id}"))[1]["status"] == "pending"
    await server.sync(lambda c: c.runs.cancel(busy, running))
    await quiet(server)
