"""Several servers on one Postgres database (docs/architecture.md): every request works whichever
server it reaches, and one run of a thread executes at a time across them.

Two in-process servers, ``a`` and ``b``, share a fresh database (``tests/pg.py``) with a
short lease. A run executes where it was created; the tests then join, stream, cancel,
delete and queue behind it from the other server, and stop one server abruptly to see the
other take its runs over. Skipped unless ``TRIOGRAPH_TEST_POSTGRES`` names a server.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import pytest
import trio
from langgraph_sdk import get_client, get_sync_client

from tests import pg
from tests.concurrency import (
    checkpoints,
    log_reaches,
    new_thread,
    run_ends,
    run_reaches,
    run_status,
    slow_input,
    sse,
    start_slow,
    thread_settles,
    writers,
)
from tests.conftest import EXAMPLES, example_settings
from tests.nodes import Node, stop, two_servers
from tests.nodes import boot as boot_node
from tests.sdk import Server, poll
from triograph.core.infra.settings import GraphSpec

pytestmark = pytest.mark.skipif(
    pg.ADMIN_DSN is None, reason="needs TRIOGRAPH_TEST_POSTGRES (a server to create databases on)"
)

LEASE = 0.6


class Heartbeat:
    """A worker's heartbeat, paused and resumed (its cluster's ``_beat`` swapped): while
    paused, its next beat waits, so its lease runs out and another worker claims its runs."""

    def __init__(self, node: Node) -> None:
        cluster = node.server.core.storage.cluster
        assert cluster is not None
        self.cluster, self.beat, self.resumed = cluster, cluster._beat, trio.Event()

    def pause(self) -> None:
        async def stalled(*, first: bool = False) -> None:
            await self.resumed.wait()
            await self.beat(first=first)

        self.cluster._beat = stalled

    def resume(self) -> None:
        self.resumed.set()
        self.cluster._beat = self.beat


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = await trio.to_thread.run_sync(pg.fresh_database)
    try:
        yield url
    finally:
        await trio.to_thread.run_sync(pg.drop_database, url)


async def boot(nursery: trio.Nursery, database: str, **overrides: Any) -> Node:
    settings = example_settings(storage=database, lease=LEASE, shutdown_grace=0.5, **overrides)
    return await boot_node(nursery, settings)


@pytest.fixture
async def pair(nursery: trio.Nursery, database: str) -> AsyncIterator[tuple[Server, Server]]:
    settings = example_settings(storage=database, lease=LEASE, shutdown_grace=0.5)
    async with two_servers(nursery, settings) as servers:
        yield servers


def executes_here(server: Server, rid: str) -> bool:
    return server.core.supervisor.get(rid) is not None


async def test_join_and_join_stream_from_another_server(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    rid = await start_slow(a, tid, 0.3)
    assert executes_here(a, rid)
    assert not executes_here(b, rid)
    async with b.http() as http:
        streamed = await http.get(f"/threads/{tid}/runs/{rid}/stream", timeout=30)
    events = sse(streamed.content)
    assert events[0] == ("metadata", {"run_id": rid, "attempt": 1})
    assert events[-1] == ("values", {"delay": 0.3, "log": ["step1", "step2"]})
    joined = await b.sync(lambda c: c.runs.join(tid, rid))
    assert joined == {"delay": 0.3, "log": ["step1", "step2"]}
    assert (await b.sync(lambda c: c.runs.get(tid, rid)))["status"] == "success"


async def test_a_join_on_another_server_returns_the_runs_values_every_time(
    pair: tuple[Server, Server],
) -> None:
    """The thread's state is stored before the run's final status, so a server that sees
    the run finished reads its values (it answered ``{}`` about one time in four)."""
    a, b = pair

    async def scenario(ca: Any) -> list[Any]:
        joined = []
        async with get_client(url=b.url, api_key=None) as cb:
            for i in range(100):
                thread = await ca.threads.create()
                tid = thread["thread_id"]
                run = await ca.runs.create(tid, "agent", input={"topic": f"t{i}"})
                joined.append(await cb.runs.join(tid, run["run_id"]))
        return joined

    results = await a.aio(scenario)
    assert [r.get("joke") for r in results] == [
        f"This is a joke about t{i} and cats" for i in range(100)
    ]


async def test_a_resumable_stream_resumes_on_another_server(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    run = await a.sync(
        lambda c: c.runs.create(
            tid, "slow", input=slow_input(0.2), stream_resumable=True, stream_mode="updates"
        )
    )
    rid = run["run_id"]
    async with a.http() as http:
        first = await http.get(f"/threads/{tid}/runs/{rid}/stream", timeout=30)
    frames = [f for f in first.text.split("\r\n\r\n") if f.startswith("event: updates")]
    first_update_id = frames[0].split("id: ")[1].strip()
    async with b.http() as http:
        rest = await http.get(
            f"/threads/{tid}/runs/{rid}/stream",
            headers={"Last-Event-ID": first_update_id},
            timeout=30,
        )
    assert sse(rest.content) == [("updates", {"step2": {"log": ["step2"]}})]


async def test_a_stateless_run_sees_an_assistant_changed_by_another_server(
    pair: tuple[Server, Server],
) -> None:
    """A server starts stateless runs from its copy of the assistant (no read per run); the
    run's insert checks the copy is current, so the run that follows another server's
    update, restore or deletion of the assistant sees it at once."""
    a, b = pair

    def answer(c: Any, aid: str) -> Any:
        return c.runs.wait(None, aid, input={"question": "q"})["answer"]

    def scenario(ca: Any) -> list[Any]:
        with get_sync_client(url=b.url, api_key=None) as cb:
            aid = ca.assistants.create("ctxgraph", context={"user": "alice"})["assistant_id"]
            seen = [answer(cb, aid), answer(cb, aid)]  # the second from b's copy
            ca.assistants.update(aid, context={"user": "bob"})
            seen += [answer(cb, aid), answer(cb, aid)]
            ca.assistants.set_latest(aid, 1)
            seen.append(answer(cb, aid))
            ca.assistants.delete(aid)
            with pytest.raises(httpx.HTTPStatusError) as refused:
                answer(cb, aid)
            seen.append(refused.value.response.status_code)
            return seen

    assert await a.sync(scenario) == [
        "alice asked q",
        "alice asked q",
        "bob asked q",
        "bob asked q",
        "alice asked q",
        404,
    ]


async def test_cancel_from_another_server(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    rid = await start_slow(a, tid, 30)
    await run_reaches(b, tid, rid, "running")
    async with b.http() as http:
        r = await http.post(f"/threads/{tid}/runs/{rid}/cancel?wait=true", timeout=30)
    assert r.status_code == 200, r.text
    assert await run_status(a, tid, rid) == "interrupted"
    assert (await thread_settles(b, tid))["status"] == "interrupted"  # step1 still to run


async def test_rollback_and_delete_from_another_server(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    rid = await start_slow(a, tid, 0.2)
    await run_ends(a, tid, rid)
    slow = await start_slow(a, tid, 30, marker="x")
    await log_reaches(b, tid, ["step1", "step2", "x"])  # its input is saved
    async with b.http() as http:
        r = await http.delete(f"/threads/{tid}/runs/{slow}", timeout=30)
    assert r.status_code == 204, r.text
    assert await run_status(a, tid, slow) is None
    assert writers(await checkpoints(b, tid)) == [rid]  # what it wrote went with it
    assert (await thread_settles(a, tid))["status"] == "idle"


async def test_runs_of_one_thread_take_turns_across_servers(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    first = await start_slow(a, tid, 0.4, marker="a")
    second = await start_slow(b, tid, 0.05, marker="b", multitask_strategy="enqueue")
    assert executes_here(b, second)
    assert await run_status(b, tid, second) == "pending"
    assert await run_ends(b, tid, second) == "success"
    assert await run_status(a, tid, first) == "success"
    assert writers(await checkpoints(a, tid)) == [first, second]  # one after the other
    log = (await a.sync(lambda c: c.threads.get_state(tid)))["values"]["log"]
    assert log == ["a", "step1", "step2", "b", "step1", "step2"]


async def test_multitask_strategies_across_servers(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    busy = await start_slow(a, tid, 30)
    await run_reaches(a, tid, busy, "running")
    async with b.http() as http:
        rejected = await http.post(
            f"/threads/{tid}/runs",
            json={"assistant_id": "slow", "input": slow_input(0), "multitask_strategy": "reject"},
        )
    assert rejected.status_code == 409, rejected.text
    rollback = await start_slow(b, tid, 0.05, multitask_strategy="rollback")
    assert await run_ends(b, tid, rollback) == "success"
    assert await run_status(a, tid, busy) is None  # rolled back by its owner
    interrupted = await start_slow(a, tid, 30)
    await run_reaches(a, tid, interrupted, "running")
    last = await start_slow(b, tid, 0.05, multitask_strategy="interrupt")
    assert await run_ends(b, tid, last) == "success"
    assert await run_status(a, tid, interrupted) == "interrupted"
    assert (await thread_settles(a, tid))["status"] == "idle"


async def test_a_stopped_servers_runs_are_taken_over(
    nursery: trio.Nursery, database: str, tmp_path: pathlib.Path
) -> None:
    a, b = await boot(nursery, database), await boot(nursery, database)
    gate = tmp_path / "gate"
    tid = await new_thread(a.server)
    body = {"gate": str(gate), "log": []}
    cut = await a.server.sync(lambda c: c.runs.create(tid, "gated", input=body))
    queued = await a.server.sync(lambda c: c.runs.create(tid, "gated", input=body))
    await log_reaches(b.server, tid, ["step1"])
    await a.crash()
    await trio.Path(gate).touch()
    for run in (cut, queued):
        assert await run_ends(b.server, tid, run["run_id"]) == "success"
    assert executes_here(b.server, cut["run_id"])
    stored = await b.server.core.storage.runs.get(cut["run_id"])
    assert stored is not None
    assert stored.attempt == 2
    state = await b.server.sync(lambda c: c.threads.get_state(tid))
    assert state["values"]["log"] == ["step1", "step2", "step1", "step2"]
    assert (await thread_settles(b.server, tid))["status"] == "idle"
    b.server.stop.set()
    with trio.fail_after(20):
        await b.server.stopped.wait()


async def test_a_worker_that_lost_its_lease_does_not_record_the_run(
    nursery: trio.Nursery,
    database: str,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lease fencing (issue 15, item 11): ``a`` is alive but its heartbeat stops for longer
    than a lease while its run executes; ``b`` claims the run and executes it again. When
    ``a``'s execution ends it records nothing (no status, no events, no hooks): the run is
    ``b``'s second attempt, finished once."""
    caplog.set_level(logging.INFO)
    a, b = await boot(nursery, database), await boot(nursery, database)
    heartbeat = Heartbeat(a)

    gate = tmp_path / "gate"
    tid = await new_thread(a.server)
    body = {"gate": str(gate), "log": []}
    rid = (await a.server.sync(lambda c: c.runs.create(tid, "gated", input=body)))["run_id"]
    await log_reaches(b.server, tid, ["step1"])
    handle = a.server.core.supervisor.get(rid)
    assert handle is not None
    heartbeat.pause()
    await poll(lambda: _async(executes_here(b.server, rid)), bool)  # b claimed it
    heartbeat.resume()
    await trio.Path(gate).touch()
    with trio.fail_after(30):
        await handle.done.wait()  # a's execution ended ...
    assert await run_ends(b.server, tid, rid) == "success"  # ... and b's recorded the run
    stored = await b.server.core.storage.runs.get(rid)
    assert stored is not None
    assert stored.attempt == 2
    assert await a.server.core.storage.cluster.owns(rid) is False  # type: ignore[union-attr]
    assert a.server.core.supervisor.get(rid) is None  # a keeps nothing of it to join
    said = [r.getMessage() for r in caplog.records]
    assert sum(f"run {rid}: claimed by another worker" in m for m in said) == 1
    assert sum(m.startswith(f"run {rid} success") for m in said) == 1  # b's hook only
    assert (await thread_settles(a.server, tid))["status"] == "idle"
    await stop(a, b)


LOOPING = GraphSpec(graph_id="looping", path=f"{EXAMPLES / 'graphs' / 'looping.py'}:graph")


def traced(trace: pathlib.Path, attempt: int) -> int:
    """How many steps the run's ``attempt`` has executed (``looping`` traces each)."""
    lines = trace.read_text().split() if trace.exists() else []
    return lines.count(str(attempt))


async def test_a_worker_that_lost_its_lease_stops_and_its_checkpoints_are_dropped(
    nursery: trio.Nursery,
    database: str,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lease fencing of the execution (issue 15, item 11): ``a``'s heartbeat stops for
    longer than a lease while its run steps on, writing a checkpoint per step; ``b`` claims
    the run and executes it again (attempt 2) from the last checkpoint ``a`` wrote while it
    owned the run. What ``a`` checkpoints after the claim is dropped, and once its heartbeat
    comes back it finds the run taken and stops executing it, recording nothing: the run
    ends once, with ``b``'s result, and its thread is left idle."""
    caplog.set_level(logging.INFO)
    settings = example_settings(storage=database, lease=LEASE, shutdown_grace=0.5)
    settings = attrs.evolve(settings, graphs=(*settings.graphs, LOOPING))
    a, b = await boot_node(nursery, settings), await boot_node(nursery, settings)
    heartbeat = Heartbeat(a)

    gate, trace = tmp_path / "gate", tmp_path / "trace"
    tid = await new_thread(a.server)
    body = {"gate": str(gate), "trace": str(trace), "steps": []}
    run = await a.server.sync(
        lambda c: c.runs.create(tid, "looping", input=body, config={"recursion_limit": 100_000})
    )
    rid = run["run_id"]
    await poll(lambda: _async(traced(trace, 1)), lambda n: n >= 2)  # checkpointing here
    handle = a.server.core.supervisor.get(rid)
    assert handle is not None
    heartbeat.pause()
    await poll(lambda: _async(executes_here(b.server, rid)), bool)  # b claimed it
    before = await checkpoints(b.server, tid)  # a's, from while it owned the run
    stepped = traced(trace, 1)
    await poll(lambda: _async(traced(trace, 1)), lambda n: n >= stepped + 3)  # a steps on
    assert not handle.done.is_set()
    heartbeat.resume()
    with trio.fail_after(10):  # the gate is still closed: a stopped because it lost the run
        await handle.done.wait()
    stopped = traced(trace, 1)
    await poll(lambda: _async(traced(trace, 2)), lambda n: n >= 3)  # b steps on
    await trio.Path(gate).touch()
    assert await run_ends(b.server, tid, rid) == "success"
    assert traced(trace, 1) == stopped  # a executed nothing more
    history = await checkpoints(b.server, tid)
    mine = [c["checkpoint_id"] for c in before if c["metadata"]["run_attempt"] == 1]
    assert [c["checkpoint_id"] for c in history if c["metadata"]["run_attempt"] == 1] == mine
    assert {c["metadata"]["run_attempt"] for c in history[len(mine) :]} == {2}
    state = await b.server.sync(lambda c: c.threads.get_state(tid))
    steps = state["values"]["steps"]
    assert steps == sorted(steps)  # b's steps after a's, none of a's after b's
    assert steps.count(1) <= stepped < stopped  # a's steps after the claim are not kept
    assert steps.count(2) >= 3
    stored = await b.server.core.storage.runs.get(rid)
    assert stored is not None
    assert (stored.status, stored.attempt) == ("success", 2)
    joined = await a.server.sync(lambda c: c.runs.join(tid, rid))
    assert joined["steps"] == steps
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith(f"run {rid}: another worker took it over") for m in said) == 1
    assert sum(f"run {rid}: claimed by another worker" in m for m in said) == 1
    assert sum(m.startswith(f"run {rid} success") for m in said) == 1  # b's hook only
    assert (await thread_settles(a.server, tid))["status"] == "idle"
    await stop(a, b)


async def test_a_run_claimed_before_it_started_is_not_started_by_the_worker_that_lost_it(
    nursery: trio.Nursery,
    database: str,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lease fencing of a run's start: ``a``'s heartbeat stops while its second run of a
    thread waits behind the first; ``b`` claims both. Once the first ends, ``a`` would start
    the second: its ``running`` record is fenced as the final one, so ``a`` neither writes it
    over ``b``'s nor executes the run, and ``b`` records the run once."""
    caplog.set_level(logging.INFO)
    a, b = await boot(nursery, database), await boot(nursery, database)
    heartbeat = Heartbeat(a)

    first_gate, second_gate = tmp_path / "first", tmp_path / "second"
    tid = await new_thread(a.server)

    async def create(gate: pathlib.Path, **kwargs: Any) -> str:
        body = {"gate": str(gate), "log": []}
        run = await a.server.sync(lambda c: c.runs.create(tid, "gated", input=body, **kwargs))
        return str(run["run_id"])

    first = await create(first_gate)
    await log_reaches(b.server, tid, ["step1"])
    second = await create(second_gate, multitask_strategy="enqueue")
    waiting = a.server.core.supervisor.get(second)
    assert waiting is not None
    heartbeat.pause()
    await poll(lambda: _async(executes_here(b.server, second)), bool)  # b claimed both
    await trio.Path(first_gate).touch()
    with trio.fail_after(10):  # its gate is still closed: a did not execute it
        await waiting.done.wait()
    assert waiting.dispatcher is None  # it never streamed
    assert await run_ends(b.server, tid, first) == "success"
    await trio.Path(second_gate).touch()
    assert await run_ends(b.server, tid, second) == "success"
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith(f"run {second} success") for m in said) == 1  # b's hook only
    assert sum(m.startswith(f"run {second} running") for m in said) == 1  # b's start only
    assert (await thread_settles(a.server, tid))["status"] == "idle"
    heartbeat.resume()
    await stop(a, b)


async def _async(value: bool) -> bool:
    return value


async def test_crons_fire_once_across_servers(nursery: trio.Nursery, database: str) -> None:
    nodes = [await boot(nursery, database, cron_interval=0.05) for _ in range(2)]
    a, b = (node.server for node in nodes)
    assert [s.core.cluster.leader for s in (a, b)] in (
        [True, False],
        [False, True],
    )
    tid = await new_thread(a)
    cron = await a.sync(
        lambda c: c.crons.create_for_thread(tid, "slow", schedule="0 0 1 1 *", input=slow_input(0))
    )
    stored = await a.core.storage.crons.get(cron["cron_id"])
    assert stored is not None
    stored.next_run_date = stored.created_at  # due now, for both schedulers
    await a.core.storage.crons.update(stored)
    await poll(lambda: a.sync(lambda c: c.runs.list(tid)), lambda runs: len(runs) == 1)
    await trio.sleep(0.5)  # ten more polls of each scheduler
    assert len(await b.sync(lambda c: c.runs.list(tid))) == 1
    await stop(*nodes)


async def test_stored_events_follow_the_run(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    rid = await start_slow(a, tid, 0)
    await run_ends(a, tid, rid)
    cluster = b.core.storage.cluster
    assert cluster is not None
    events = await cluster.events(rid, after=-1)
    assert [name for _, name, _ in events][:1] == ["metadata"]
    assert [seq for seq, _, _ in events] == list(range(len(events)))
    await a.sync(lambda c: c.threads.delete(tid))
    assert await cluster.events(rid, after=-1) == []
    await poll(lambda: run_status(b, tid, rid), lambda s: s is None)


async def test_state_writes_wait_for_no_run_of_another_server(pair: tuple[Server, Server]) -> None:
    a, b = pair
    tid = await new_thread(a)
    rid = await start_slow(a, tid, 30, marker="x")
    await log_reaches(b, tid, ["x"])
    async with b.http() as http:
        r = await http.post(f"/threads/{tid}/state", json={"values": {"log": ["y"]}})
        assert r.status_code == 409, r.text
        assert rid in r.json()["detail"]
        await http.post(f"/threads/{tid}/runs/{rid}/cancel?wait=1&action=rollback", timeout=30)
        r = await http.post(f"/threads/{tid}/state", json={"values": {"log": ["y"]}})
        assert r.status_code == 200, r.text
    state = await a.sync(lambda c: c.threads.get_state(tid))
    assert state["values"]["log"] == ["y"]
