"""The run supervisor: owns every run task, in one nursery.

Request handlers never spawn tasks. They call :meth:`RunSupervisor.submit`, which stores
nothing itself (the run is already stored as ``pending``) but starts the run's task with
``await nursery.start(...)``, so the task exists, and ``triograph_run_created`` has fired,
before the HTTP response goes out.

A run task: sleeps until its scheduled start (``after_seconds``), waits for its turn on its
thread (runs of one thread execute one at a time, in arrival order), waits for a slot under
``max_runs``, executes (see :mod:`triograph.core.execution`), and finally writes the final
run and thread status under a shielded, time-bounded scope. Every way of stopping a run
(cancel endpoint, multitask interrupt/rollback, client disconnect, shutdown) is one
:meth:`RunHandle.cancel`, i.e. one ``CancelScope.cancel()``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core import encoding
from triograph.core.emitters import RunInfo
from triograph.core.execution import Dispatcher, RunOutput, chunk_source
from triograph.core.models import CancelAction, Run, now
from triograph.core.streams import RunStream

if TYPE_CHECKING:
    from triograph.core.context import Core

log = logging.getLogger("triograph.supervisor")

#: seconds the final writes of a run may take before they are abandoned
CLEANUP_TIMEOUT = 10.0
#: seconds a finished non-resumable run stays joinable from memory
FINISHED_RETENTION = 60.0


@attrs.define(eq=False)
class RunHandle:
    """A run the supervisor knows: its record, stream, cancel scope and outcome."""

    run: Run
    stream: RunStream
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    done: trio.Event = attrs.Factory(trio.Event)
    output: RunOutput = attrs.Factory(RunOutput)
    cancel_action: CancelAction | None = None
    cancel_reason: str = ""
    started: bool = False
    #: keep the finished handle joinable from memory for a while (background runs)
    retain: bool = False
    expires_at: float = float("inf")

    @property
    def temporary(self) -> bool:
        return bool(self.run.kwargs.get("temporary"))

    def cancel(self, action: CancelAction = "interrupt", reason: str = "") -> bool:
        """Request cancellation; False if the run has already finished. Never blocks."""
        if self.done.is_set():
            return False
        if self.cancel_action != "rollback":
            self.cancel_action = action
            self.cancel_reason = reason or f"run cancelled ({action})"
        self.scope.cancel()
        return True


class RunSupervisor:
    """See the module docstring. Open with ``await nursery.start(supervisor.serve)``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.handles: dict[str, RunHandle] = {}
        self._by_thread: dict[str, list[RunHandle]] = defaultdict(list)
        self._lanes: dict[str, tuple[trio.Lock, list[int]]] = {}
        self._limiter = trio.CapacityLimiter(core.settings.max_runs)
        self._nursery: trio.Nursery | None = None
        self.accepting = True

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the run nursery until cancelled; sweeps expired finished runs meanwhile."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await trio.sleep(5)
                self._sweep()

    async def start_service(self, fn: Any) -> None:
        """Start a long-lived task (cron scheduler, TTL sweeper) in the run nursery:
        ``await fn(task_status=...)``; it is cancelled with the runs at shutdown."""
        assert self._nursery is not None, "supervisor is not serving"
        await self._nursery.start(fn)

    def _sweep(self) -> None:
        t = trio.current_time()
        for run_id in [r for r, h in self.handles.items() if h.expires_at <= t]:
            del self.handles[run_id]

    # -- queries ------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunHandle | None:
        return self.handles.get(run_id)

    def in_flight(self, thread_id: str) -> list[RunHandle]:
        """Runs of the thread that are pending or running, oldest first."""
        return list(self._by_thread.get(thread_id, ()))

    def all_in_flight(self) -> list[RunHandle]:
        return [h for hs in self._by_thread.values() for h in hs]

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, run: Run) -> RunHandle:
        """Start the task of a run already stored as ``pending``; returns once it exists."""
        assert self._nursery is not None, "supervisor is not serving"
        settings = self.core.settings
        handle = RunHandle(
            run=run,
            stream=RunStream(
                run.run_id,
                resumable=bool(run.kwargs.get("resumable")),
                limit=settings.subscriber_buffer,
            ),
        )
        self.handles[run.run_id] = handle
        self._by_thread[run.thread_id].append(handle)
        await self._nursery.start(self._run_task, handle)
        return handle

    @asynccontextmanager
    async def _lane(self, thread_id: str) -> AsyncIterator[None]:
        """One run at a time per thread; ``trio.Lock`` is fair, so arrival order is kept."""
        if thread_id not in self._lanes:
            self._lanes[thread_id] = (trio.Lock(), [0])
        lock, users = self._lanes[thread_id]
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._lanes[thread_id]

    async def _run_task(self, handle: RunHandle, *, task_status: trio.TaskStatus[None]) -> None:
        run = handle.run
        await self.core.hooks.fire("triograph_run_created", run=attrs.evolve(run))
        task_status.started()
        error: Exception | None = None
        try:
            with handle.scope:
                delay = (run.created_at - now()).total_seconds()
                if delay > 0:
                    await trio.sleep(delay)
                async with self._lane(run.thread_id), self._limiter:
                    await self._execute(handle)
        except Exception as exc:
            error = exc
        finally:
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + CLEANUP_TIMEOUT
                await self._finish(handle, error)

    async def _execute(self, handle: RunHandle) -> None:
        core, run = self.core, handle.run
        handle.started = True
        run.status = "running"
        run.updated_at = now()
        await core.storage.runs.update(run)
        await core.hooks.fire("triograph_run_started", run=attrs.evolve(run))
        event_hook = core.hooks.has("triograph_run_event")
        await self._publish(handle, "metadata", {"run_id": run.run_id, "attempt": 1}, event_hook)
        graph_id = run.kwargs["config"]["configurable"]["graph_id"]
        graph = await core.graphs.build(
            core.bridge, graph_id, run.kwargs["config"], temporary=handle.temporary
        )
        info = RunInfo(
            run_id=run.run_id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            graph_id=graph_id,
            stream_subgraphs=bool(run.kwargs.get("subgraphs")),
            temporary=handle.temporary,
        )
        dispatcher = Dispatcher(core.stream_modes, run.kwargs["stream_mode"], info)
        async with core.bridge.stream(chunk_source(graph, run, dispatcher)) as batches:
            async for batch in batches:
                for ns, mode, data in batch:
                    for name, payload in dispatcher.dispatch(ns, mode, data):
                        await self._publish(handle, name, payload, event_hook)

    async def _publish(self, handle: RunHandle, name: str, payload: Any, hook: bool) -> None:
        encoded = encoding.dumps(payload)
        handle.output.observe(name, payload, encoded)
        self._emit(handle, name, encoded)
        if hook:
            await self.core.hooks.fire(
                "triograph_run_event", run=handle.run, event=name, data=payload
            )

    def _emit(self, handle: RunHandle, name: str, encoded: bytes) -> None:
        """One event to the run's stream and to its thread's stream."""
        handle.stream.publish(name, encoded)
        self.core.thread_streams.publish(handle.run.thread_id, name, encoded)

    # -- finishing ----------------------------------------------------------------------------

    async def _finish(self, handle: RunHandle, error: Exception | None) -> None:
        """Final writes; runs shielded. Order matters: status first, then close the stream,
        so a client that sees the stream end and asks for the run sees it terminal."""
        core, run = self.core, handle.run
        try:
            if error is not None:
                handle.output.error = encoding.error_payload(error)
                self._emit(handle, "error", encoding.dumps(handle.output.error))
                log.info("run %s failed: %r", run.run_id, error)
            rolled_back = handle.cancel_action == "rollback"
            if rolled_back:
                outcome = "rolled_back"
            elif error is not None:
                outcome = "error"
            elif handle.scope.cancelled_caught or (handle.cancel_action and not handle.started):
                outcome = "interrupted"
            else:
                outcome = "success"
            self._by_thread[run.thread_id].remove(handle)
            if not self._by_thread[run.thread_id]:
                del self._by_thread[run.thread_id]
            cancel_error = (
                {"error": "UserInterrupt", "message": handle.cancel_reason}
                if outcome in ("interrupted", "rolled_back")
                else None
            )
            if rolled_back:
                await core.runs.rollback(run)
            else:
                run.status = outcome  # type: ignore[assignment]
                run.updated_at = now()
                await core.storage.runs.update(run)
            thread_error = handle.output.error or cancel_error
            if not handle.temporary:
                await core.threads.after_run(run, outcome, thread_error)
            await core.hooks.fire(
                "triograph_run_finished", run=attrs.evolve(run), outcome=outcome, error=thread_error
            )
            if handle.temporary:  # it kept no checkpoints: only the records go
                await core.threads.delete(run.thread_id, cancel_runs=False, checkpoints=False)
        finally:
            handle.stream.close()
            core.thread_streams.run_done(run.thread_id, run.run_id)
            handle.done.set()
            if handle.stream.resumable:
                handle.expires_at = trio.current_time() + core.settings.resumable_ttl
            elif handle.retain:
                handle.expires_at = trio.current_time() + FINISHED_RETENTION
            else:  # its creator (a stream or a wait) has had everything
                self.handles.pop(run.run_id, None)

    # -- cancelling and shutdown --------------------------------------------------------------

    def cancel(self, run_ids: list[str], action: CancelAction, reason: str) -> list[RunHandle]:
        """Cancel the in-flight runs among ``run_ids``; returns the handles cancelled."""
        out = []
        for run_id in run_ids:
            handle = self.handles.get(run_id)
            if handle is not None and handle.cancel(action, reason):
                out.append(handle)
        return out

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; give runs ``grace`` seconds; interrupt and record the rest."""
        self.accepting = False
        with trio.move_on_after(grace):
            for handle in self.all_in_flight():
                await handle.done.wait()
        for handle in self.all_in_flight():
            handle.cancel("interrupt", "server shutting down")
        with trio.move_on_after(CLEANUP_TIMEOUT):
            for handle in self.all_in_flight():
                await handle.done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
