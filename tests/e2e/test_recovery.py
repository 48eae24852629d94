"""Crash recovery in one process (docs/architecture.md): runs a server left in flight when it
stopped are taken over by the next server on the same storage.

The memory backend loses everything at exit, so each test keeps one ``MemoryStorage`` (its
checkpointer included) and serves it from server after server, through the app's storage
registry. A crash is simulated honestly for what storage sees: ``Node.crash`` makes the
supervisor's final-outcome writes a no-op and then cancels the server's whole task tree,
so every run task stops where it is and nothing is written after that instant (no final
status, no thread status, no shutdown interrupt), exactly what a ``kill -9`` leaves on
disk. ``test_crash.py`` does the real thing with a subprocess and the file backend.

Runs use the ``gated`` example graph: ``step2`` waits until the file named by the run's
``gate`` exists, so a run stays mid-run for as long as the test needs (no timing), and the
test opens the gate when the server that takes over should let it finish.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.concurrency import (
    checkpoints,
    log_reaches,
    new_thread,
    quiet,
    run_ends,
    run_reaches,
    run_status,
    thread_settles,
    until,
    writers,
)
from tests.conftest import example_settings
from tests.nodes import Node
from tests.nodes import boot as boot_node
from tests.sdk import Server, collect, get
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.models import Thread, new_id
from triograph.core.infra.settings import load_settings
from triograph.core.resources.runs import RUN_FIELDS
from triograph.storage.memory import MemoryStorage


def _kept(storage: MemoryStorage) -> Callable[[str, Any], Any]:
    """A storage factory that serves ``storage`` and leaves it as it is when the app ends."""

    @asynccontextmanager
    async def factory(spec: str, settings: Any) -> AsyncIterator[MemoryStorage]:
        yield storage

    return factory


async def boot(nursery: trio.Nursery, storage: MemoryStorage, **overrides: Any) -> Node:
    """A server (the examples and ``gated``) on ``storage``; recovery has run once it
    answers."""
    settings = example_settings(shutdown_grace=0.5, storage="memory", **overrides)
    return await boot_node(
        nursery,
        settings,
        prepare=lambda core: core.storages.add("memory", _kept(storage), replace=True),
    )


async def start_gated(
    server: Server, tid: str | None, gate: pathlib.Path, marker: str | None = None, **kw: Any
) -> dict[str, Any]:
    """A background ``gated`` run; returns it as created."""
    body = {"gate": str(gate), "log": [marker] if marker else []}
    run: dict[str, Any] = await server.sync(lambda c: c.runs.create(tid, "gated", input=body, **kw))
    return run


async def join(server: Server, run: dict[str, Any]) -> Any:
    return await server.sync(lambda c: c.runs.join(run["thread_id"], run["run_id"]))


async def stored_attempt(server: Server, run_id: str) -> int | None:
    run = await server.core.storage.runs.get(run_id)
    return None if run is None else run.attempt


# -- tests ------------------------------------------------------------------------------------


async def test_runs_in_flight_at_a_crash_are_taken_over_by_the_next_server(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    storage, gate, opened = MemoryStorage(), tmp_path / "gate", tmp_path / "opened"
    await trio.Path(opened).touch()
    node = await boot(nursery, storage)
    a = node.server
    t1, t2, t3, t4 = [await new_thread(a) for _ in range(4)]
    await join(a, await start_gated(a, t4, opened))
    jump = {"update": {"gate": str(gate), "log": ["jump"]}, "goto": "step1"}
    commanded: dict[str, Any] = await a.sync(
        lambda c: c.runs.create(t4, "gated", command=jump)  # type: ignore[arg-type]
    )
    first = await start_gated(a, t1, gate)
    second = await start_gated(a, t1, gate, "second")
    third = await start_gated(a, t1, gate, "third")
    unsaved = await start_gated(a, t2, gate, durability="exit")
    later = await start_gated(a, t3, gate, after_seconds=600)
    stateless = await start_gated(a, None, gate)
    kept = await start_gated(a, None, gate, on_completion="keep")
    await log_reaches(a, t1, ["step1"])  # ``first`` waits in step2, step1 checkpointed
    await log_reaches(a, kept["thread_id"], ["step1"])
    await log_reaches(a, t4, ["step1", "step2", "jump", "step1"])
    for run in (unsaved, stateless):
        await run_reaches(a, run["thread_id"], run["run_id"], "running")
    await node.crash()

    in_flight = await storage.runs.search(statuses=["pending", "running"])
    left = {r.run_id: r.status for r in in_flight}
    assert left == {
        first["run_id"]: "running",
        second["run_id"]: "pending",
        third["run_id"]: "pending",
        unsaved["run_id"]: "running",
        later["run_id"]: "pending",
        stateless["run_id"]: "running",
        kept["run_id"]: "running",
        commanded["run_id"]: "running",
    }
    assert (await storage.threads.search(status="busy", limit=0))[1] == 6

    node = await boot(nursery, storage)
    b = node.server
    handle = b.core.supervisor.get(first["run_id"])
    assert handle is not None
    parts: list[Any] = []
    async with trio.open_nursery() as joining:

        async def join_stream() -> None:
            parts.extend(await b.aio(lambda c: collect(c.runs.join_stream(t1, first["run_id"]))))

        joining.start_soon(join_stream)
        await until(lambda: handle.stream.subscriber_count == 1)
        await trio.Path(gate).touch()  # only now may the retried attempt finish: live events

    assert parts[0].event == "metadata"
    assert parts[0].data == {"run_id": first["run_id"], "attempt": 2}
    assert parts[-1].data["log"] == ["step1", "step2"]  # step2 continued, step1 not redone
    for run in (first, second, third, unsaved, kept, commanded):
        assert await run_ends(b, run["thread_id"], run["run_id"]) == "success"
    # the retry continued after the command's step1; it did not apply the command again
    assert (await join(b, commanded))["log"] == ["step1", "step2", "jump", "step1", "step2"]
    values = await join(b, third)
    steps = ["step1", "step2"]
    assert values["log"] == [*steps, "second", *steps, "third", *steps]  # queued ones, in order
    assert writers(await checkpoints(b, t1)) == [r["run_id"] for r in (first, second, third)]
    for run in (unsaved, kept, stateless):  # stateless: its temporary thread is gone by now
        assert (await join(b, run))["log"] == steps
    assert await run_status(b, stateless["thread_id"], stateless["run_id"]) is None
    attempts = {r["run_id"]: 2 for r in (first, unsaved, kept, commanded)} | {
        r["run_id"]: 1 for r in (second, third, later)
    }
    assert {rid: await stored_attempt(b, rid) for rid in attempts} == attempts

    # ``later`` kept its schedule: still waiting its 600 s, its thread busy until it ends
    assert await run_status(b, t3, later["run_id"]) == "pending"
    stored = await storage.runs.get(later["run_id"])
    assert stored is not None
    assert stored.created_at.isoformat() == later["created_at"]
    assert (await b.sync(lambda c: c.threads.get(t3)))["status"] == "busy"
    await b.sync(lambda c: c.runs.cancel(t3, later["run_id"]))
    assert (await thread_settles(b, t3))["status"] == "idle"

    assert await b.sync(lambda c: c.threads.search(status="busy")) == []
    code, wire = await get(b, f"/threads/{t1}/runs/{first['run_id']}")
    assert code == 200
    assert set(wire) == set(RUN_FIELDS)  # the attempt is not part of the Run object
    await quiet(b)
    await b.shutdown()


async def test_a_run_cut_off_max_attempts_times_fails_with_a_clear_error(
    nursery: trio.Nursery, tmp_path: pathlib.Path
) -> None:
    storage, gate = MemoryStorage(), tmp_path / "gate"
    node = await boot(nursery, storage, max_attempts=2)
    tid = await new_thread(node.server)
    rid = (await start_gated(node.server, tid, gate))["run_id"]
    await log_reaches(node.server, tid, ["step1"])
    await node.crash()

    node = await boot(nursery, storage, max_attempts=2)  # attempt 2 waits in step2 again
    await run_reaches(node.server, tid, rid, "running")
    assert await stored_attempt(node.server, rid) == 2
    await node.crash()

    node = await boot(nursery, storage, max_attempts=2)
    server = node.server
    assert await run_ends(server, tid, rid) == "error"
    error = {
        "error": "WorkerCrashed",
        "message": "the server stopped 2 times while running this run; giving up (max_attempts=2)",
    }
    assert await server.sync(lambda c: c.runs.join(tid, rid)) == {"__error__": error}
    thread = await server.sync(lambda c: c.threads.get(tid))
    assert thread["status"] == "error"
    assert thread["error"] == error
    assert thread["values"]["log"] == ["step1"]  # what the attempts checkpointed stays
    assert await stored_attempt(server, rid) == 3  # the third attempt was refused
    await server.shutdown()


async def test_a_thread_left_busy_without_runs_is_recomputed(nursery: trio.Nursery) -> None:
    storage = MemoryStorage()
    thread = Thread(thread_id=new_id(), status="busy")  # the crash came before its run was stored
    await storage.threads.create(thread)
    server = (await boot(nursery, storage)).server
    assert (await server.sync(lambda c: c.threads.get(thread.thread_id)))["status"] == "idle"
    await server.shutdown()


@pytest.mark.parametrize("value", [0, -2, "3", True, 2.5, None])
def test_max_attempts_in_langgraph_json_must_be_a_positive_integer(
    tmp_path: pathlib.Path, value: Any
) -> None:
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {}, "triograph": {"max_attempts": value}}))
    with pytest.raises(ConfigError, match=r"'triograph.max_attempts' must be an integer, 1 or"):
        load_settings(config)


def test_max_attempts_in_langgraph_json(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "langgraph.json"
    config.write_text(json.dumps({"graphs": {}}))
    assert load_settings(config).max_attempts == 3
    config.write_text(json.dumps({"graphs": {}, "triograph": {"max_attempts": 1}}))
    assert load_settings(config).max_attempts == 1
