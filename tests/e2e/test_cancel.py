"""Every way of stopping a run (contract §5.7, §5.8, §6.7, §3.7; §13.3 and §13.23): the
cancel endpoint, bulk cancel, client disconnects, run deletion, shutdown; runs stopped
while running, queued behind another run, delayed, or waiting for a ``max_runs`` slot,
and a cancel that arrives while the outcome is being recorded. After each, the run is
terminal (or gone), the thread status is what §3.7 says, and nothing is left behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import trio
from langgraph_sdk.errors import ConflictError, NotFoundError

from tests.concurrency import (
    FAST,
    SLOW,
    STEP,
    checkpoints,
    exchange,
    log_reaches,
    new_thread,
    quiet,
    run_ends,
    run_id_of,
    run_reaches,
    run_status,
    slow_input,
    sse,
    start_slow,
    thread_settles,
    until,
    writers,
)
from tests.conftest import example_settings, start_server
from tests.sdk import Server, poll, stored
from triograph.core.engine import supervisor
from triograph.core.infra import graph_bridge
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Run

DONE = ["step1", "step2"]
DISCONNECTED = "client disconnected from the run stream (on_disconnect=cancel)"


def user_interrupt(message: str) -> dict[str, str]:
    return {"error": "UserInterrupt", "message": message}


async def thread(server: Server, tid: str) -> dict[str, Any]:
    return await server.sync(lambda c: c.threads.get(tid))  # type: ignore[no-any-return]


# -- the cancel endpoint ----------------------------------------------------------------------


async def test_rolling_back_a_background_run_leaves_the_thread_idle(server: Server) -> None:
    """§13.3: the official server leaves the thread ``busy`` forever when a background run
    nobody streams is rolled back. Here without and with ``wait``."""
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "slow", input=slow_input(FAST, "p")))
    before = await checkpoints(server, tid)
    for marker, wait in (("a", "0"), ("b", "1")):
        rid = await start_slow(server, tid, marker=marker)
        await log_reaches(server, tid, ["p", *DONE, marker])
        async with server.http() as h:
            r = await h.post(
                f"/threads/{tid}/runs/{rid}/cancel", params={"wait": wait, "action": "rollback"}
            )
            if wait == "1":  # answered once rolled back, with the last values it reached
                assert r.status_code == 200
                assert r.headers["location"] == f"/threads/{tid}/runs/{rid}/join"
                assert r.json()["log"] == ["p", *DONE, marker]
            else:
                assert r.status_code == 202
            assert await run_ends(server, tid, rid) is None
            assert (await h.get(f"/threads/{tid}/runs/{rid}/join")).status_code == 404
        after = await thread_settles(server, tid)
        assert after["status"] == "idle"
        assert after["values"]["log"] == ["p", *DONE]
        assert await checkpoints(server, tid) == before
    await quiet(server)


async def test_cancelling_a_queued_run_keeps_the_thread_busy_while_another_runs(
    server: Server,
) -> None:
    """§13.23: the official server marks the thread ``idle`` while the first run runs."""
    tid = await new_thread(server)
    running = await start_slow(server, tid, 1.0, "a")
    queued = await start_slow(server, tid, FAST, "b")
    await run_reaches(server, tid, running, "running")
    await server.sync(lambda c: c.runs.cancel(tid, queued))
    assert await run_ends(server, tid, queued) == "interrupted"
    assert await run_status(server, tid, running) == "running"
    assert (await thread(server, tid))["status"] == "busy"
    assert await run_ends(server, tid, running) == "success"
    after = await thread_settles(server, tid)
    assert after["status"] == "idle"
    assert after["error"] is None  # the run that ended last succeeded
    assert writers(await checkpoints(server, tid)) == [running]
    await quiet(server)


async def test_a_delayed_run_cancelled_never_starts(server: Server) -> None:
    tid = await new_thread(server)
    rid = await start_slow(server, tid, FAST, "a", after_seconds=1)
    assert (await thread(server, tid))["status"] == "busy"
    await server.aio(lambda c: c.runs.cancel(tid, rid))
    assert await run_ends(server, tid, rid) == "interrupted"
    after = await thread_settles(server, tid)
    assert after["status"] == "idle"  # no checkpoint at all
    assert after["error"] == user_interrupt(
        f"interrupt requested via POST /threads/{tid}/runs/{rid}/cancel"
    )
    await quiet(server)  # its task is gone: nothing is left to start it later
    assert await checkpoints(server, tid) == []


async def test_rolling_back_a_run_that_never_started_restores_the_status_before_it(
    server: Server,
) -> None:
    tid = await new_thread(server)
    first = await start_slow(server, tid, marker="a")
    await log_reaches(server, tid, ["a"])
    await server.sync(lambda c: c.runs.cancel(tid, first))
    interrupted = await thread_settles(server, tid)
    assert interrupted["status"] == "interrupted"  # step1 is still to run
    later = await start_slow(server, tid, FAST, "b", after_seconds=30)
    assert (await thread(server, tid))["status"] == "busy"
    await server.sync(lambda c: c.runs.cancel(tid, later, action="rollback"))
    assert await run_ends(server, tid, later) is None
    after = await thread_settles(server, tid)
    assert {k: after[k] for k in ("status", "values", "error")} == {
        k: interrupted[k] for k in ("status", "values", "error")
    }
    await quiet(server)


async def test_cancel_many_by_status_then_by_ids(server: Server) -> None:
    first, second = await new_thread(server), await new_thread(server)
    running = await start_slow(server, first, marker="a")
    queued = await start_slow(server, first, FAST, "b")
    delayed = await start_slow(server, second, FAST, "c", after_seconds=30)
    await log_reaches(server, first, ["a"])

    await server.sync(lambda c: c.runs.cancel_many(status="pending", action="rollback"))
    assert await run_ends(server, first, queued) is None
    assert await run_ends(server, second, delayed) is None
    assert await run_status(server, first, running) == "running"
    assert (await thread_settles(server, second))["status"] == "idle"

    await server.aio(
        lambda c: c.runs.cancel_many(thread_id=first, run_ids=[running, queued])
    )  # the rolled back one is simply not found
    assert await run_ends(server, first, running) == "interrupted"
    after = await thread_settles(server, first)
    assert after["status"] == "interrupted"
    assert after["error"] == user_interrupt("cancelled via POST /runs/cancel")
    with pytest.raises(NotFoundError) as nothing:
        await server.sync(lambda c: c.runs.cancel_many(status="all"))
    assert nothing.value.message == "No runs found to cancel."
    await quiet(server)


# -- a cancel that comes too late -------------------------------------------------------------


class CancelWhileRecording:
    """Cancels (with rollback) each run from inside ``triograph_run_finished``: the run's
    outcome is decided and written, its task is still recording."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answers: list[int] = []

    @hookimpl
    async def triograph_run_finished(self, run: Run) -> None:
        async with self.server.http() as h:
            path = f"/threads/{run.thread_id}/runs/{run.run_id}/cancel"
            r = await h.post(path, params={"action": "rollback"})
        self.answers.append(r.status_code)


async def test_a_cancel_arriving_while_the_outcome_is_recorded_is_404(server: Server) -> None:
    plugin = CancelWhileRecording(server)
    server.core.pm.register(plugin, name="cancel-while-recording")
    try:
        tid = await new_thread(server)
        result = await server.sync(lambda c: c.runs.wait(tid, "slow", input=slow_input(FAST, "a")))
    finally:
        server.core.pm.unregister(plugin)
    assert plugin.answers == [404]  # not a 202 for a rollback that never happens
    assert result["log"] == ["a", *DONE]
    [run] = await server.sync(lambda c: c.runs.list(tid))
    assert run["status"] == "success"
    assert (await thread(server, tid))["status"] == "idle"
    await quiet(server)


# -- client disconnects -----------------------------------------------------------------------


@pytest.mark.parametrize("on_disconnect", ["cancel", "continue"])
async def test_a_client_leaving_a_wait(server: Server, on_disconnect: str) -> None:
    tid = await new_thread(server)
    body = {"assistant_id": "slow", "input": slow_input(0.3, "a"), "on_disconnect": on_disconnect}
    left = await exchange(server, "POST", f"/threads/{tid}/runs/wait", body, leave=lambda _: True)
    assert left.status == 200
    assert not left.complete
    rid = run_id_of(left)
    if on_disconnect == "cancel":
        assert await run_ends(server, tid, rid) == "interrupted"
        assert (await thread_settles(server, tid))["error"] == user_interrupt(DISCONNECTED)
    else:
        assert await run_ends(server, tid, rid) == "success"
    await quiet(server)


async def test_a_client_leaving_a_wait_before_its_headers(server: Server) -> None:
    """A wait holds its headers back for a moment (a quick result goes out as one plain
    response): a client that leaves in that moment still cancels with on_disconnect=cancel."""
    tid = await new_thread(server)
    body = orjson.dumps(
        {"assistant_id": "slow", "input": slow_input(SLOW, "a"), "on_disconnect": "cancel"}
    )
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        head = f"POST /threads/{tid}/runs/wait HTTP/1.1\r\nHost: {host}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        await stream.send_all(head.encode() + body)
        runs = await poll(lambda: server.sync(lambda c: c.runs.list(tid)), bool)
    assert await run_ends(server, tid, runs[0]["run_id"]) == "interrupted"
    assert (await thread_settles(server, tid))["error"] == user_interrupt(DISCONNECTED)


async def test_a_wait_answers_a_quick_result_in_one_plain_response(server: Server) -> None:
    tid = await new_thread(server)
    async with server.http() as http:
        quick = await http.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "slow", "input": slow_input(FAST)}
        )
        slow = await http.post(
            f"/threads/{tid}/runs/wait", json={"assistant_id": "slow", "input": slow_input(1.0)}
        )
    for response in (quick, slow):
        assert response.status_code == 200
        assert response.headers["content-location"].startswith(f"/threads/{tid}/runs/")
        assert "delay" in response.json()
    assert int(quick.headers["content-length"]) == len(quick.content)
    assert slow.headers.get("transfer-encoding") == "chunked"  # its headers went out at once


async def test_a_client_leaving_a_join_or_join_stream_with_cancel_on_disconnect(
    server: Server,
) -> None:
    tid = await new_thread(server)
    streamed = await start_slow(server, tid, 0.3, "a")
    joined = await start_slow(server, tid, FAST, "b", after_seconds=30)
    kept = await start_slow(server, tid, FAST, "c")
    base = f"/threads/{tid}/runs"
    await exchange(
        server,
        "GET",
        f"{base}/{streamed}/stream?cancel_on_disconnect=true",
        leave=lambda body: b"event: metadata" in body,
    )
    assert await run_ends(server, tid, streamed) == "interrupted"
    await exchange(
        server, "GET", f"{base}/{joined}/join?cancel_on_disconnect=1", leave=lambda _: True
    )
    assert await run_ends(server, tid, joined) == "interrupted"  # before its scheduled start
    await exchange(server, "GET", f"{base}/{kept}/stream", leave=lambda _: True)
    assert await run_ends(server, tid, kept) == "success"
    ran = writers(await checkpoints(server, tid))
    assert ran[-1] == kept
    assert joined not in ran
    await quiet(server)


# -- deleting a run ---------------------------------------------------------------------------


async def test_deleting_a_run_in_flight_rolls_it_back(server: Server) -> None:
    tid = await new_thread(server)
    running = await start_slow(server, tid, marker="a")
    queued = await start_slow(server, tid, FAST, "b")
    await log_reaches(server, tid, ["a"])
    async with server.http() as h:
        for rid in (queued, running):
            r = await h.delete(f"/threads/{tid}/runs/{rid}")
            assert r.status_code == 204
            again = await h.delete(f"/threads/{tid}/runs/{rid}")
            assert again.status_code == 404
            assert again.json() == {"detail": "Run not found"}
    assert await server.sync(lambda c: c.runs.list(tid)) == []
    assert await checkpoints(server, tid) == []
    assert (await thread(server, tid))["status"] == "idle"
    await quiet(server)


# -- storage failures -------------------------------------------------------------------------


async def test_a_run_that_cannot_be_stored_is_undone(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing_create(run: Run) -> None:
        raise RuntimeError("storage is down")

    tid = await new_thread(server)
    monkeypatch.setattr(server.core.storage.runs, "create", failing_create)
    async with server.http() as h:
        r = await h.post(
            f"/threads/{tid}/runs", json={"assistant_id": "slow", "input": slow_input(FAST)}
        )
    assert r.status_code == 500
    assert (await thread(server, tid))["status"] == "idle"  # not busy for a run that is not
    await quiet(server)


async def test_a_failing_final_write_is_logged_and_the_server_goes_on(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    link = server.core.cluster  # the final write (fenced on a shared backend) is its record
    record = link.record

    async def failing_record(run: Run) -> bool:
        if run.status == "success" and run.kwargs["input"]["log"] == ["a"]:
            raise RuntimeError("storage is down")
        return await record(run)

    monkeypatch.setattr(link, "record", failing_record)
    first, second = await new_thread(server), await new_thread(server)
    failed = await start_slow(server, first, FAST, "a")
    handle = server.core.supervisor.get(failed)
    assert handle is not None
    with trio.fail_after(10):
        await handle.done.wait()
    assert "recording its outcome (success) failed" in caplog.text
    result = await server.sync(lambda c: c.runs.wait(second, "slow", input=slow_input(FAST, "b")))
    assert result["log"] == ["b", *DONE]


@pytest.mark.parametrize("thread_write", ["slow", "hung"])
async def test_the_final_record_has_its_own_time_after_a_late_thread_write(
    server: Server, monkeypatch: pytest.MonkeyPatch, thread_write: str
) -> None:
    """The run's final record gets ``FINAL_WRITE`` seconds however much of the cleanup's
    ``CLEANUP_TIMEOUT`` the thread's write before it took: a write that left less than
    that (``slow``), and one the cleanup's deadline cut off (``hung``). The record itself
    outlasts what is left of the cleanup's time."""
    monkeypatch.setattr(supervisor, "CLEANUP_TIMEOUT", 1.0)
    monkeypatch.setattr(supervisor, "FINAL_WRITE", 0.8)
    threads, link = server.core.threads, server.core.cluster
    after_run, record = threads.after_run, link.record

    def marked(run: Run) -> bool:
        return bool(run.kwargs["input"]["log"] == ["late"])

    async def late_after_run(run: Run, *args: Any, **kwargs: Any) -> Any:
        if marked(run):
            await trio.sleep(0.6 if thread_write == "slow" else 30)
        return await after_run(run, *args, **kwargs)

    async def slow_record(run: Run) -> bool:
        if marked(run) and run.status == "success":
            await trio.sleep(0.5)  # past the cleanup's deadline, within FINAL_WRITE
        return await record(run)

    monkeypatch.setattr(threads, "after_run", late_after_run)
    monkeypatch.setattr(link, "record", slow_record)
    tid = await new_thread(server)
    rid = await start_slow(server, tid, FAST, "late")
    handle = server.core.supervisor.get(rid)
    assert handle is not None
    with trio.fail_after(10):
        await handle.done.wait()
    assert await run_status(server, tid, rid) == "success"


# -- thread status while runs come and go (§3.7) ----------------------------------------------


async def test_update_state_is_409_while_a_run_is_in_flight_and_keeps_interrupted(
    server: Server,
) -> None:
    tid = await new_thread(server)
    rid = await start_slow(server, tid, STEP, marker="a")
    with pytest.raises(ConflictError):
        await server.sync(lambda c: c.threads.update_state(tid, {"log": ["x"]}))
    await log_reaches(server, tid, ["a", "step1"])
    await server.sync(lambda c: c.runs.cancel(tid, rid))
    assert (await thread_settles(server, tid))["status"] == "interrupted"
    await server.sync(lambda c: c.threads.update_state(tid, {"log": ["x"]}))
    after = await thread(server, tid)
    assert after["status"] == "interrupted"  # step2 is still next
    assert after["values"]["log"] == ["a", "step1", "x"]
    await quiet(server)


class _GatedAssistants:
    """``storage.assistants`` whose next ``get`` waits until released: holds a state write
    between its in-flight check and its write."""

    def __init__(self, repo: Any) -> None:
        self._repo = repo
        self.entered, self.release = trio.Event(), trio.Event()
        self.armed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    async def get(self, assistant_id: str) -> Any:
        if self.armed:
            self.armed = False
            self.entered.set()
            await self.release.wait()
        return await self._repo.get(assistant_id)


async def test_a_run_created_during_a_state_write_starts_after_it(
    server: Server, nursery: trio.Nursery
) -> None:
    tid = await new_thread(server)
    await server.sync(lambda c: c.runs.wait(tid, "slow", input=slow_input(FAST, "a")))
    storage: Any = server.core.storage
    gate = storage.assistants = _GatedAssistants(storage.assistants)
    written = trio.Event()

    async def write() -> None:
        await server.sync(lambda c: c.threads.update_state(tid, {"log": ["x"]}))
        written.set()

    nursery.start_soon(write)
    await gate.entered.wait()  # the write checked for runs in flight and is under way
    rid = await start_slow(server, tid, FAST, marker="b")
    gate.release.set()
    await written.wait()
    assert await run_ends(server, tid, rid) == "success"
    values = (await thread(server, tid))["values"]
    assert values["log"] == ["a", *DONE, "x", "b", *DONE]  # the run started from the write
    await quiet(server)


async def test_a_failed_run_leaves_error_unless_a_run_follows(server: Server) -> None:
    tid = await new_thread(server)
    failing = await server.sync(lambda c: c.runs.create(tid, "erroring", input={}))
    following = await start_slow(server, tid, FAST, "a")
    assert await run_ends(server, tid, failing["run_id"]) == "error"
    assert await run_ends(server, tid, following) == "success"
    after = await thread_settles(server, tid)
    assert after["status"] == "idle"
    assert after["error"] is None
    await server.sync(lambda c: c.runs.wait(tid, "erroring", input={}, raise_error=False))
    failed = await thread(server, tid)
    assert failed["status"] == "error"
    assert failed["error"] == {"error": "ValueError", "message": "boom from node"}
    await quiet(server)


# -- capacity ---------------------------------------------------------------------------------


@pytest.fixture
async def one_slot_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    async for server in start_server(nursery, example_settings(max_runs=1, shutdown_grace=0.5)):
        yield server


async def test_a_run_waiting_for_a_slot_can_be_cancelled(one_slot_server: Server) -> None:
    server = one_slot_server
    busy, waiting = await new_thread(server), await new_thread(server)
    running = await start_slow(server, busy, marker="a")
    await run_reaches(server, busy, running, "running")
    queued = await start_slow(server, waiting, FAST, "b")
    assert await run_status(server, waiting, queued) == "pending"
    await server.sync(lambda c: c.runs.cancel(waiting, queued))
    assert await run_ends(server, waiting, queued) == "interrupted"
    assert (await thread_settles(server, waiting))["status"] == "idle"
    assert await checkpoints(server, waiting) == []
    assert await run_status(server, busy, running) == "running"
    await server.sync(lambda c: c.runs.cancel(busy, running))
    await quiet(server)


# -- shutdown ---------------------------------------------------------------------------------


@pytest.fixture
async def patient_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    async for server in start_server(nursery, example_settings(shutdown_grace=20)):
        yield server


async def test_shutdown_lets_running_runs_finish_and_starts_no_queued_run(
    patient_server: Server,
) -> None:
    server = patient_server
    first, second = await new_thread(server), await new_thread(server)
    running = await start_slow(server, first, 0.5, "a")
    queued = await start_slow(server, first, FAST, "b")
    delayed = await start_slow(server, second, FAST, "c", after_seconds=30)
    await run_reaches(server, first, running, "running")

    server.stop.set()  # as SIGTERM: runs in flight get their grace period
    await until(lambda: not server.core.supervisor.accepting)
    async with server.http() as h:
        refused = await h.post(f"/threads/{second}/runs", json={"assistant_id": "slow"})
    assert refused.status_code == 400
    assert refused.json() == {"detail": "the server is shutting down and accepts no new runs"}
    await server.shutdown()  # returns once the server has stopped

    async with stored(server) as storage:
        finished = {rid: await storage.runs.get(rid) for rid in (running, queued, delayed)}
        threads = {tid: await storage.threads.get(tid) for tid in (first, second)}
    # on a storage shared by processes, runs that did not start stay for the other workers
    left = "pending" if server.core.storage.cluster is not None else "interrupted"
    assert {rid: run.status for rid, run in finished.items() if run} == {
        running: "success",
        queued: left,
        delayed: left,
    }
    if server.core.settings.storage == "memory":  # its checkpointer lives on, readable here
        checkpointer = server.core.storage.checkpointer
        written = {c.metadata.get("run_id") for c in checkpointer.list(None)}
        assert written == {running}
    status = "busy" if server.core.storage.cluster is not None else "idle"
    assert {tid: t.status for tid, t in threads.items() if t} == {first: status, second: status}
    assert threads[second] is not None
    if server.core.storage.cluster is None:
        assert threads[second].error == user_interrupt("server shutting down")
    await quiet(server)


async def test_the_run_nursery_closing_records_runs_as_interrupted(server: Server) -> None:
    """A run stopped from outside its own cancel scope (the nursery closing) is recorded
    ``interrupted``, never ``success``."""
    tid = await new_thread(server)
    rid = await start_slow(server, tid, marker="a")
    await run_reaches(server, tid, rid, "running")
    supervisor = server.core.supervisor
    assert supervisor._nursery is not None
    supervisor._nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        await supervisor.handles[rid].done.wait()
    run = await server.core.storage.runs.get(rid)
    assert run is not None
    assert run.status == "interrupted"
    stored = await server.core.storage.threads.get(tid)
    assert stored is not None
    assert stored.status != "busy"
    assert stored.error == user_interrupt("server shutting down")


async def test_a_cancelled_run_nobody_followed_keeps_the_events_it_made(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run nobody streams gets its chunks from the graph loop in bulk (at its end, or
    once someone joins): those made before a cancel still become its events. The sweep that
    looks for joiners is made rare here so that nothing but the cancel hands them over."""
    monkeypatch.setattr(graph_bridge, "LAZY_DELAY", 60.0)
    tid = await new_thread(server)
    rid = await start_slow(server, tid, STEP, stream_mode=["updates"], stream_resumable=True)
    await log_reaches(server, tid, ["step1"])
    await server.sync(lambda c: c.runs.cancel(tid, rid, wait=True))
    async with server.http() as http:
        response = await http.get(
            f"/threads/{tid}/runs/{rid}/stream", headers={"Last-Event-ID": "-"}
        )
    events = sse(response.content)
    assert ("updates", {"step1": {"log": ["step1"]}}) in events
    assert await run_status(server, tid, rid) == "interrupted"
