"""A randomized workload of runs, cancels, disconnects and delays, then the invariants
of the issue: every run ends in a terminal status (or is gone with its checkpoints when
rolled back), every thread returns to the right status, nothing leaks, nothing is lost.

Size: ``THREADS`` threads x ``RUNS_PER_THREAD`` runs of the ``slow`` graph (0-20 ms per
node), each with a random multitask strategy among the four built-ins, a random client
(background create, create + stream, create + wait; a streaming or waiting client leaves
early a third of the time, with ``on_disconnect`` ``cancel`` or ``continue``) and
sometimes an ``after_seconds`` delay; meanwhile ``CANCELS`` cancels (single with
``interrupt`` or ``rollback``, with or without ``wait``, or bulk by thread and run ids)
hit random runs, and a watcher of each thread's stream leaves after a few events. Storage
calls yield to other tasks at random, as a database's would.
About 4 s on an idle 2-core machine.

The workload comes from a seed, printed on failure (and in the failure's notes); set
``TRIOGRAPH_STRESS_SEED`` to replay it. Timing is real, so a replay repeats the workload,
not necessarily every interleaving.
"""

from __future__ import annotations

import os
import random
from typing import Any

import attrs
import orjson
import trio

from tests.concurrency import (
    Exchange,
    checkpoints,
    exchange,
    make_storage_yield,
    quiet,
    run_id_of,
    slow_input,
    sse,
)
from tests.sdk import Server, get

THREADS = 10
RUNS_PER_THREAD = 15
CANCELS = 50
STRATEGIES = ("enqueue", "enqueue", "reject", "interrupt", "rollback")
DELAYS = (0.0, 0.005, 0.02)
AFTER = (0, 0, 0, 0, 0, 0.05, 0.1)
CLIENTS = ("background", "stream", "wait")
#: seconds the whole workload may take before the test fails
BUDGET = 60
DONE = ["step1", "step2"]


@attrs.define
class Request:
    """One run creation the workload sent, and what its client saw."""

    tid: str
    marker: str
    strategy: str
    client: str
    leave_after: int | None  # frames read before the client leaves; None: reads to the end
    on_disconnect: str
    response: Exchange | None = None

    @property
    def run_id(self) -> str | None:
        if self.response is None or self.response.status != 200:
            return None
        if self.client == "background":
            return orjson.loads(self.response.body)["run_id"]  # type: ignore[no-any-return]
        return run_id_of(self.response)


class Workload:
    def __init__(self, server: Server, rng: random.Random, threads: list[str]) -> None:
        self.server = server
        self.rng = rng
        self.threads = threads
        self.requests: list[Request] = []

    async def drive(self, tid: str, index: int, nursery: trio.Nursery) -> None:
        """Send this thread's runs, a few milliseconds apart, each by its own client."""
        rng = self.rng
        for k in range(RUNS_PER_THREAD):
            client = rng.choice(CLIENTS)
            leaves = client != "background" and rng.random() < 1 / 3
            # a stream is left after a few frames, a wait (no frames) once its headers came
            frames = rng.randint(0, 3) if client == "stream" else 0
            request = Request(
                tid=tid,
                marker=f"t{index}-{k}",
                strategy=rng.choice(STRATEGIES),
                client=client,
                leave_after=frames if leaves else None,
                on_disconnect=rng.choice(("cancel", "continue")),
            )
            self.requests.append(request)
            body = {
                "assistant_id": "slow",
                "input": slow_input(rng.choice(DELAYS), request.marker),
                "multitask_strategy": request.strategy,
                "after_seconds": rng.choice(AFTER),
            }
            nursery.start_soon(self.send, request, body)
            await trio.sleep(rng.uniform(0, 0.03))

    async def send(self, request: Request, body: dict[str, Any]) -> None:
        path = f"/threads/{request.tid}/runs"
        if request.client != "background":
            path += f"/{request.client}"
            body["on_disconnect"] = request.on_disconnect
        leave_after = request.leave_after
        leave = None
        if leave_after is not None:

            def leave(seen: bytes) -> bool:
                return seen.count(b"\r\n\r\n") >= leave_after

        request.response = await exchange(self.server, "POST", path, body, leave=leave)

    async def watch(self, tid: str) -> None:
        """Watch the thread stream, leaving after a few events (or when the workload ends)."""
        frames = self.rng.randint(1, 40)
        await exchange(
            self.server,
            "GET",
            f"/threads/{tid}/stream",
            leave=lambda seen: seen.count(b"\r\n\r\n") >= frames,
        )

    async def cancel(self) -> None:
        """Cancel random runs created so far, in every way the API offers."""
        rng = self.rng
        for _ in range(CANCELS):
            await trio.sleep(rng.uniform(0, 0.05))
            created = [r for r in self.requests if r.run_id is not None]
            if not created:
                continue
            target = rng.choice(created)
            action = rng.choice(("interrupt", "rollback"))
            if rng.random() < 0.25:
                ids = [r.run_id for r in created if r.tid == target.tid]
                body = {"thread_id": target.tid, "run_ids": ids}
                r = await exchange(self.server, "POST", f"/runs/cancel?action={action}", body)
                assert r.status in (204, 404), r
            else:
                wait = rng.choice(("0", "1"))
                path = f"/threads/{target.tid}/runs/{target.run_id}/cancel"
                r = await exchange(self.server, "POST", f"{path}?action={action}&wait={wait}")
                assert r.status in (200, 202, 404), r


async def test_random_runs_cancels_and_disconnects_leave_everything_consistent(
    server: Server,
) -> None:
    seed = int(os.environ.get("TRIOGRAPH_STRESS_SEED", random.randrange(2**32)))
    print(f"stress seed: {seed} (TRIOGRAPH_STRESS_SEED={seed} replays the workload)")
    try:
        await stress(server, random.Random(seed))
    except AssertionError as exc:
        exc.add_note(f"stress seed: {seed}")
        raise


async def stress(server: Server, rng: random.Random) -> None:
    make_storage_yield(server, rng)
    threads = [
        (await server.sync(lambda c: c.threads.create()))["thread_id"] for _ in range(THREADS)
    ]
    workload = Workload(server, rng, threads)
    with trio.fail_after(BUDGET):
        async with trio.open_nursery() as watchers:
            for tid in threads:
                watchers.start_soon(workload.watch, tid)
            async with trio.open_nursery() as nursery:
                for index, tid in enumerate(threads):
                    nursery.start_soon(workload.drive, tid, index, nursery)
                nursery.start_soon(workload.cancel)
            watchers.cancel_scope.cancel()
        await quiet(server)  # waits until every run has recorded its outcome
    for tid in threads:
        await check_thread(server, tid, [r for r in workload.requests if r.tid == tid])


async def check_thread(server: Server, tid: str, requests: list[Request]) -> None:
    _, thread = await get(server, f"/threads/{tid}")
    _, state = await get(server, f"/threads/{tid}/state")
    _, runs = await get(server, f"/threads/{tid}/runs?limit=1000")
    history = await checkpoints(server, tid)
    by_id = {run["run_id"]: run for run in runs}
    by_marker = {run["kwargs"]["input"]["log"][0]: run for run in runs}

    # every run terminal; the missing ones were rolled back and left no checkpoint
    assert {run["status"] for run in runs} <= {"success", "interrupted"}, runs
    created = {r.run_id for r in requests if r.run_id is not None}
    assert set(by_id) <= created
    wrote = {s["metadata"]["run_id"] for s in history}
    assert not (created - set(by_id)) & wrote
    for request in requests:
        assert request.response is not None
        assert request.response.status in (200, 409), request
        if request.response.status == 409:
            assert request.strategy == "reject", request

    # the thread's status and values are those of its head (``slow`` never fails)
    assert thread["status"] == ("interrupted" if state["next"] else "idle"), (thread, state)
    assert thread["values"] == state["values"]
    assert thread["error"] is None or thread["error"]["error"] == "UserInterrupt"

    # one run at a time, in scheduled order; a successful run left its marker and steps
    writers = [s["metadata"]["run_id"] for s in history]
    assert writers == sorted(writers, key=lambda rid: by_id[rid]["created_at"])
    log = (state["values"] or {}).get("log", [])
    markers = [item for item in log if item not in DONE]
    assert set(markers) <= set(by_marker), (markers, runs)
    assert markers == sorted(markers, key=lambda m: by_marker[m]["created_at"])
    for marker, run in by_marker.items():
        if run["status"] == "success":
            at = log.index(marker)
            assert log[at : at + 3] == [marker, *DONE], (marker, log)

    # what complete streams and waits saw agrees with how their run ended
    for request in requests:
        response = request.response
        if response is None or not response.complete or response.status != 200:
            continue
        run = by_id.get(request.run_id or "")
        if request.client == "stream":
            events = sse(response.body)  # nothing at all if the run never started
            assert events[:1] in ([], [("metadata", {"run_id": request.run_id, "attempt": 1})])
            assert all(name in ("metadata", "values") for name, _ in events), events
            if run is not None and run["status"] == "success":
                name, values = events[-1]
                assert name == "values"
                assert values["log"][-3:] == [request.marker, *DONE]
        elif request.client == "wait":
            result = orjson.loads(response.body)
            assert "__error__" not in result
            if run is not None and run["status"] == "success":
                assert result["log"][-3:] == [request.marker, *DONE]
