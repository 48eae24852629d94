"""Lifecycle hooks fire at the moments ``core/infra/hookspecs.py`` documents, with the documented
arguments: a recording plugin (async implementations mixed with plain ones) is registered
before the server starts, and the sequence it sees is asserted for a successful, failed,
interrupted, rolled back, enqueued, never started and stateless run, and for start-up and
shutdown. A plugin that raises everywhere is logged by name and changes nothing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from tests.concurrency import (
    FAST,
    log_reaches,
    new_thread,
    quiet,
    run_ends,
    slow_input,
    start_slow,
)
from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.infra.context import Core
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Run, Thread
from triograph.core.infra.plugin_manager import PluginServices
from triograph.core.infra.settings import Settings

BOOM = {"error": "ValueError", "message": "boom from node"}


class Recorder:
    """Every lifecycle hook call, with what the hookspec promises was true at that moment:
    the stored run status (created: ``pending``; started: ``running``; finished: final, or
    None once rolled back, or for a stateless run deleted on completion) and the stored thread
    status when a run finished."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.calls: list[tuple[Any, ...]] = []
        #: marker (see ``slow_input``) -> an event ``triograph_run_started`` of a run with
        #: that marker waits for: the graph starts after the hook returned
        self.hold: dict[str, trio.Event] = {}

    async def _stored(self, run: Run) -> str | None:
        stored = await self.core.storage.runs.get(run.run_id)
        return stored.status if stored is not None else None

    @hookimpl
    def triograph_server_startup(self, settings: Settings, services: PluginServices) -> None:
        assert services.storage is self.core.storage
        self.calls.append(("server_startup",))

    @hookimpl
    async def triograph_server_shutdown(self, settings: Settings) -> None:
        await trio.lowlevel.checkpoint()
        self.calls.append(("server_shutdown",))

    @hookimpl
    def triograph_thread_created(self, thread: Thread) -> None:
        self.calls.append(("thread_created", thread.thread_id, thread.status))

    @hookimpl
    async def triograph_thread_deleted(self, thread_id: str) -> None:
        exists = await self.core.storage.threads.get(thread_id) is not None
        self.calls.append(("thread_deleted", thread_id, exists))

    @hookimpl
    async def triograph_run_created(self, run: Run) -> None:
        self.calls.append(("run_created", run.run_id, run.status, await self._stored(run)))

    @hookimpl
    async def triograph_run_started(self, run: Run) -> None:
        self.calls.append(("run_started", run.run_id, run.status, await self._stored(run)))
        marker = ((run.kwargs["input"] or {}).get("log") or [None])[0]
        if marker in self.hold:
            await self.hold[marker].wait()

    @hookimpl
    def triograph_run_event(self, run: Run, event: str, data: Any) -> None:
        self.calls.append(("run_event", run.run_id, event))

    @hookimpl
    async def triograph_run_finished(
        self, run: Run, outcome: str, error: dict[str, str] | None
    ) -> None:
        thread = await self.core.storage.threads.get(run.thread_id)
        self.calls.append(
            (
                "run_finished",
                run.run_id,
                run.status,
                outcome,
                error,
                await self._stored(run),
                thread.status if thread is not None else None,
            )
        )

    def of(self, run_id: str) -> list[tuple[Any, ...]]:
        """The calls about one run, without its id; consecutive events of one name once."""
        out: list[tuple[Any, ...]] = []
        for call in self.calls:
            if len(call) > 1 and call[1] == run_id:
                short = (call[0], *call[2:])
                if not (short[0] == "run_event" and out and out[-1] == short):
                    out.append(short)
        return out

    def index(self, *call: Any) -> int:
        return next(i for i, c in enumerate(self.calls) if c[: len(call)] == call)


class Exploding:
    """Raises in every lifecycle hook, plain and async ones."""

    @hookimpl
    def triograph_thread_created(self, thread: Thread) -> None:
        raise RuntimeError("thread_created")

    @hookimpl
    async def triograph_run_created(self, run: Run) -> None:
        raise RuntimeError("run_created")

    @hookimpl
    def triograph_run_started(self, run: Run) -> None:
        raise RuntimeError("run_started")

    @hookimpl
    async def triograph_run_event(self, run: Run, event: str, data: Any) -> None:
        raise RuntimeError("run_event")

    @hookimpl
    def triograph_run_finished(self, run: Run) -> None:
        raise RuntimeError("run_finished")


@pytest.fixture
async def recorded(nursery: trio.Nursery) -> AsyncIterator[tuple[Server, Recorder]]:
    """A server whose recorder was registered before start-up, so it sees that too."""
    recorders: list[Recorder] = []

    def register(core: Core) -> None:
        recorders.append(Recorder(core))
        core.pm.register(recorders[0], name="recorder")

    settings = example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    async for server in start_server(nursery, settings, prepare=register):
        yield server, recorders[0]


async def test_successful_run(recorded: tuple[Server, Recorder]) -> None:
    server, recorder = recorded
    tid = await new_thread(server)
    rid = await start_slow(server, tid, FAST, "a")
    # run_created fires before the response to the create request is sent
    assert recorder.of(rid)[:1] == [("run_created", "pending", "pending")]
    assert await run_ends(server, tid, rid) == "success"
    await quiet(server)
    assert recorder.of(rid) == [
        ("run_created", "pending", "pending"),
        ("run_started", "running", "running"),
        ("run_event", "metadata"),
        ("run_event", "values"),
        ("run_finished", "success", "success", None, "success", "idle"),
    ]
    assert recorder.calls[0] == ("server_startup",)
    assert recorder.of(tid) == [("thread_created", "idle")]


async def test_failed_run(recorded: tuple[Server, Recorder]) -> None:
    server, recorder = recorded
    tid = await new_thread(server)
    run = await server.sync(lambda c: c.runs.create(tid, "erroring", input={}))
    assert await run_ends(server, tid, run["run_id"]) == "error"
    await quiet(server)
    assert recorder.of(run["run_id"]) == [
        ("run_created", "pending", "pending"),
        ("run_started", "running", "running"),
        ("run_event", "metadata"),
        ("run_event", "values"),
        ("run_event", "error"),
        ("run_finished", "error", "error", BOOM, "error", "error"),
    ]


@pytest.mark.parametrize("action", ["interrupt", "rollback"])
async def test_cancelled_run(recorded: tuple[Server, Recorder], action: str) -> None:
    server, recorder = recorded
    tid = await new_thread(server)
    rid = await start_slow(server, tid, marker="a")
    await log_reaches(server, tid, ["a"])
    await server.sync(lambda c: c.runs.cancel(tid, rid, action=action))  # type: ignore[arg-type]
    await run_ends(server, tid, rid)
    await quiet(server)
    error = {
        "error": "UserInterrupt",
        "message": f"interrupt requested via POST /threads/{tid}/runs/{rid}/cancel",
    }
    outcome, stored, thread = {
        "interrupt": ("interrupted", "interrupted", "interrupted"),
        "rollback": ("rolled_back", None, "idle"),
    }[action]
    assert recorder.of(rid) == [
        ("run_created", "pending", "pending"),
        ("run_started", "running", "running"),
        ("run_event", "metadata"),
        ("run_event", "values"),
        ("run_finished", "interrupted", outcome, error, stored, thread),
    ]


async def test_run_cancelled_before_it_started(recorded: tuple[Server, Recorder]) -> None:
    server, recorder = recorded
    tid = await new_thread(server)
    rid = await start_slow(server, tid, FAST, "a", after_seconds=30)
    await server.sync(lambda c: c.runs.cancel(tid, rid))
    await run_ends(server, tid, rid)
    await quiet(server)
    error = {
        "error": "UserInterrupt",
        "message": f"interrupt requested via POST /threads/{tid}/runs/{rid}/cancel",
    }
    assert recorder.of(rid) == [
        ("run_created", "pending", "pending"),
        ("run_finished", "interrupted", "interrupted", error, "interrupted", "idle"),
    ]


async def test_enqueued_run(recorded: tuple[Server, Recorder]) -> None:
    """The second run is created while the first one runs (held in its started hook), and
    starts only once the first has recorded its outcome."""
    server, recorder = recorded
    tid = await new_thread(server)
    recorder.hold["a"] = release = trio.Event()
    first = await start_slow(server, tid, FAST, "a")
    second = await start_slow(server, tid, FAST, "b")
    release.set()
    assert await run_ends(server, tid, second) == "success"
    await quiet(server)
    assert recorder.index("run_created", second) < recorder.index("run_finished", first)
    assert recorder.index("run_finished", first) < recorder.index("run_started", second)
    assert recorder.of(first)[-1] == ("run_finished", "success", "success", None, "success", "busy")
    assert recorder.of(second) == [
        ("run_created", "pending", "pending"),
        ("run_started", "running", "running"),
        ("run_event", "metadata"),
        ("run_event", "values"),
        ("run_finished", "success", "success", None, "success", "idle"),
    ]


async def test_stateless_run(recorded: tuple[Server, Recorder]) -> None:
    server, recorder = recorded
    created: list[Any] = []
    await server.sync(
        lambda c: c.runs.wait(None, "slow", input=slow_input(FAST), on_run_created=created.append)
    )
    await quiet(server)
    rid, tid = created[0]["run_id"], created[0]["thread_id"]
    assert recorder.index("thread_created", tid) < recorder.index("run_created", rid)
    # the run is never stored final: the write that ends it deletes it with its thread;
    # run_finished still comes before the thread's deletion is announced
    assert recorder.of(rid)[-1] == ("run_finished", "success", "success", None, None, None)
    assert recorder.index("run_finished", rid) < recorder.index("thread_deleted", tid)
    assert recorder.of(tid) == [("thread_created", "busy"), ("thread_deleted", False)]


async def test_shutdown_comes_after_the_runs_it_interrupts(
    recorded: tuple[Server, Recorder],
) -> None:
    server, recorder = recorded
    tid = await new_thread(server)
    rid = await start_slow(server, tid, marker="a")
    await log_reaches(server, tid, ["a"])
    await server.shutdown()
    error = {"error": "UserInterrupt", "message": "server shutting down"}
    assert recorder.of(rid)[-1] == (
        "run_finished",
        "interrupted",
        "interrupted",
        error,
        "interrupted",
        "interrupted",
    )
    assert recorder.calls[-1] == ("server_shutdown",)
    assert recorder.calls[0] == ("server_startup",)


# -- a plugin that raises ---------------------------------------------------------------------


async def test_a_raising_plugin_is_logged_by_name_and_breaks_nothing(
    recorded: tuple[Server, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    server, recorder = recorded
    server.core.pm.register(Exploding(), name="exploding")
    caplog.set_level(logging.ERROR, logger="triograph.plugins")
    try:
        result = await server.sync(
            lambda c: c.runs.wait(None, "slow", input=slow_input(FAST, "a"), on_completion="keep")
        )
    finally:
        server.core.pm.unregister(name="exploding")
    assert result["log"] == ["a", "step1", "step2"]
    await quiet(server)
    raised = {r.getMessage() for r in caplog.records if r.exc_info}
    assert raised == {
        f"plugin 'exploding' raised in triograph_{hook}"
        for hook in ("thread_created", "run_created", "run_started", "run_event", "run_finished")
    }
    [finished] = [c for c in recorder.calls if c[0] == "run_finished"]
    assert finished[3] == "success"  # the recorder, next to it, saw everything
