"""The run supervisor: owns every run task, in one nursery.

Request handlers never spawn tasks. A run is created in three steps: :meth:`RunSupervisor.reserve`
puts it in flight on its thread (synchronously, so a multitask strategy's decision and the
reservation are atomic), the caller stores it as ``pending``, and :meth:`RunSupervisor.start`
fires ``triograph_run_created`` and starts its task (``nursery.start_soon``), so the hook has
fired, and the task exists, before the HTTP response goes out.

A run task waits for its turn on its thread's lane (:class:`~triograph.core.engine.handles.
ThreadLane`: one run of a thread at a time, in scheduled-start order: ``created_at``, which
``after_seconds`` moves), then for its turn across processes (``core.cluster``), then, its
``metadata`` event already streamed, for a calm intake if it is a background run (nobody
streams or waits for it: requests crowding in go first, see ``core/infra/intake.py``) and
for a slot under ``max_runs``, executes (see
:mod:`triograph.core.engine.execution`), and finally records its outcome (run status, thread
status, hooks) under a shielded, time-bounded scope, still holding the lane: the next run of
the thread starts from the final checkpoints of this one, after a rollback's deletions.
Every way of stopping a run (cancel endpoint, multitask interrupt/rollback, client
disconnect, run deletion, shutdown) is one :meth:`RunHandle.cancel`, i.e. one
``CancelScope.cancel()``.

No run executes before :meth:`RunSupervisor.ready` (the lifespan calls it once start-up is
done), so the runs recovered at start-up and those the cron scheduler fires meanwhile start
only once every plugin has heard ``triograph_server_startup``. A recovered run whose server
stopped while it was running (``attempt`` > 1) continues from the last checkpoint it wrote;
one past ``settings.max_attempts`` fails with :class:`WorkerCrashed` without executing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from triograph.core.engine.emitters import RunInfo
from triograph.core.engine.event_log import PREFIX as PROTOCOL_PREFIX
from triograph.core.engine.execution import Dispatcher, chunk_source
from triograph.core.engine.handles import RunHandle, TakenOver, ThreadLane, WorkerCrashed
from triograph.core.engine.streams import RunStream
from triograph.core.infra import encoding, heap
from triograph.core.infra.auth import User, acting_as
from triograph.core.infra.errors import BadRequest, Conflict
from triograph.core.infra.models import CancelAction, Run, copied, now

if TYPE_CHECKING:
    from triograph.core.infra.context import Core
    from triograph.core.infra.graphs import Graph

log = logging.getLogger("triograph.supervisor")

#: seconds the final writes of a run may take before they are abandoned
CLEANUP_TIMEOUT = 10.0
#: seconds the run's own final status may take at least once the thread's state was stored
#: (or could not be, within ``CLEANUP_TIMEOUT``): more if the cleanup has more time left
FINAL_WRITE = 5.0
#: seconds a finished non-resumable run stays joinable from memory
FINISHED_RETENTION = 60.0
#: seconds between two sweeps of finished runs whose retention ended
SWEEP_INTERVAL = 5.0
#: times freed memory is returned to the system after the last run finished
RELEASES_AFTER_RUNS = 3
#: seconds without a new connection, request or run before memory is given back (a pause)
QUIET = 2.0
#: the ``UserInterrupt`` message of runs stopped by a shutdown
SHUTDOWN_REASON = "server shutting down"

Outcome = Literal["success", "error", "interrupted", "rolled_back"]
#: configurable keys that pick the checkpoint a run starts from (a fork): a retry that
#: continues from its own last checkpoint drops them
CHECKPOINT_KEYS = ("checkpoint_id", "checkpoint_ns", "checkpoint_map")


def _metadata(run: Run) -> dict[str, Any]:
    """The payload of a run's first event, ``metadata``: which run, which attempt at it."""
    return {"run_id": run.run_id, "attempt": run.attempt}


def _run_info(handle: RunHandle) -> RunInfo:
    run = handle.run
    return RunInfo(
        run_id=run.run_id,
        thread_id=run.thread_id,
        assistant_id=run.assistant_id,
        graph_id=run.kwargs["config"]["configurable"]["graph_id"],
        stream_subgraphs=bool(run.kwargs.get("subgraphs")),
        temporary=handle.temporary,
    )


class Slots:
    """``max_runs``: at most ``total`` runs execute at once, the others wait their turn in the
    order they came. What ``trio.CapacityLimiter`` does, but a waiting run holds no more than
    its place in a ``ParkingLot``: the limiter waits inside the ``except`` of the
    ``WouldBlock`` it raised itself, so every run waiting for a slot kept that exception, its
    traceback and frame alive, ~1 KiB (bench/stream_memory.py) for each of the thousands of
    runs that wait when thousands of streams open at once."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._lot = trio.lowlevel.ParkingLot()

    async def acquire(self) -> None:
        """Take a slot, waiting for one if none is free (or others are waiting already)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._free and not self._lot:  # taken without a turn of the scheduler
            self._free -= 1
            return
        await self._lot.park()  # woken by release(), whose slot is handed over

    def release(self) -> None:
        """Give a slot back: to the run that has waited longest, if any."""
        if self._lot:
            self._lot.unpark()
        else:
            self._free += 1


class RunSupervisor:
    """See the module docstring. Open with ``await nursery.start(supervisor.serve)``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.handles: dict[str, RunHandle] = {}
        self._lanes: dict[str, ThreadLane] = {}
        self._slots = Slots(core.settings.max_runs)
        self._nursery: trio.Nursery | None = None
        self._ready = trio.Event()
        self.accepting = True
        #: idle sweeps that still return memory to the system (see :meth:`serve`)
        self._releases_due = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the run nursery until cancelled; sweeps expired finished runs meanwhile.

        Once runs have finished and none is in flight, freed memory goes back to the system
        (:func:`triograph.core.infra.heap.release`, a pause) a few times, ``SWEEP_INTERVAL``
        apart (the first what the runs held, the later ones what their clients held until
        they left), each once nothing new has started for ``QUIET`` seconds."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            now = trio.current_time()
            swept = released = changed = now
            seen = heap.activity()
            while True:
                await trio.sleep(QUIET / 2)
                now = trio.current_time()
                if now - swept >= SWEEP_INTERVAL:
                    swept = now
                    self.sweep()
                if (activity := heap.activity()) != seen:
                    seen, changed = activity, now
                if (
                    self._releases_due
                    and not self._lanes
                    and now - changed >= QUIET
                    and now - released >= SWEEP_INTERVAL
                ):
                    self._releases_due -= 1
                    heap.release()
                    released = trio.current_time()

    def ready(self) -> None:
        """Start-up is done: runs may execute (those submitted so far waited for this)."""
        self._ready.set()

    async def start_service(self, fn: Any) -> None:
        """Start a long-lived task (cron scheduler, TTL sweeper) in the run nursery:
        ``await fn(task_status=...)``; it is cancelled with the runs at shutdown."""
        assert self._nursery is not None, "supervisor is not serving"
        await self._nursery.start(fn)

    def sweep(self, at: float | None = None) -> None:
        """Forget the finished runs whose retention ended by ``at`` (Trio time; default now)."""
        at = trio.current_time() if at is None else at
        for run_id, handle in list(self.handles.items()):
            if handle.done.is_set() and handle.expires_at <= at:
                del self.handles[run_id]

    # -- queries ------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunHandle | None:
        return self.handles.get(run_id)

    def in_flight(self, thread_id: str) -> list[RunHandle]:
        """Runs of the thread that are pending or running, in submission order."""
        lane = self._lanes.get(thread_id)
        return list(lane.handles) if lane is not None else []

    def all_in_flight(self) -> list[RunHandle]:
        return [h for lane in self._lanes.values() for h in lane.handles]

    @property
    def lanes(self) -> int:
        """How many threads have a run in flight or recording its outcome."""
        return len(self._lanes)

    # -- submitting ---------------------------------------------------------------------------

    def reserve(self, run: Run, *, retain: bool = False, background: bool = False) -> RunHandle:
        """Put ``run`` in flight on its thread; then store it and :meth:`start` it, or
        :meth:`discard` it if storing failed.

        Synchronous on purpose: the caller decides admission (multitask strategy) from
        :meth:`in_flight` and reserves without an ``await`` in between, so two requests can
        never both find a thread free. From here on the thread status, strategies and
        shutdown see the run.

        Raises:
            BadRequest: the server is shutting down.
        """
        if not self.accepting:
            raise BadRequest("the server is shutting down and accepts no new runs")
        heap.note_activity()
        handle = RunHandle(
            run=run,
            stream=RunStream(
                run.run_id,
                resumable=bool(run.kwargs.get("resumable")),
                limit=self.core.settings.subscriber_buffer,
                limit_bytes=self.core.settings.subscriber_buffer_bytes,
            ),
            retain=retain,
            background=background,
        )
        if self.core.cluster.keeps_events(run):
            handle.unstored = []  # any process may serve its stream: store the events
        if not handle.temporary and Dispatcher.uses_protocol(
            self.core.stream_modes, run.kwargs.get("stream_mode") or ()
        ):
            self.core.event_log.run_created(run.thread_id)
        self.handles[run.run_id] = handle
        lane = self._lanes.get(run.thread_id)
        if lane is None:
            lane = self._lanes[run.thread_id] = ThreadLane()
        lane.handles.append(handle)
        lane.notify()
        return handle

    async def start(self, handle: RunHandle) -> None:
        """Fire ``triograph_run_created`` for a reserved run already stored as ``pending``,
        then start its task, which runs from the next turn of the scheduler (with
        ``nursery.start`` the request waited two turns more before it could answer).

        A run that nothing makes wait for its thread (see :meth:`_take_now`) takes it here
        and streams its ``metadata`` event at once: the request that created it has its
        first event before its response starts, not two turns of the scheduler later (the
        run's task, then the response's)."""
        assert self._nursery is not None, "supervisor is not serving"
        with acting_as(None):  # the run acts for the server: its user is in its config
            await self.core.hooks.fire("triograph_run_created", run=copied(handle.run))
            taken = self._take_now(handle)
            if taken:
                self._emit(handle, "metadata", _metadata(handle.run))
            self._nursery.start_soon(self._run_task, handle, taken)

    def _take_now(self, handle: RunHandle) -> bool:
        """Take the run's thread now if its task would have it at once: the first attempt
        (a retry's events go on from the stored ones, looked up first), on a serving
        supervisor, the next in its thread's lane, its ``after_seconds`` passed, and no
        other process to ask."""
        run = handle.run
        return (
            run.attempt == 1
            and self._ready.is_set()
            and self.core.cluster.turn_is_free(run)
            and self._lanes[run.thread_id].try_take(handle)
        )

    def discard(self, handle: RunHandle) -> None:
        """Forget a reserved run that was never started."""
        self.handles.pop(handle.run.run_id, None)
        self._leave(handle)

    def _leave(self, handle: RunHandle) -> None:
        """The run is no longer in flight (it may still hold its thread)."""
        lane = self._lanes[handle.run.thread_id]
        lane.handles.remove(handle)
        self._changed(handle.run.thread_id, lane)

    def _release(self, handle: RunHandle) -> None:
        """The run has recorded its outcome: the next run of its thread may start."""
        lane = self._lanes.get(handle.run.thread_id)
        if lane is not None and lane.holder is handle:
            lane.holder = None
            self._changed(handle.run.thread_id, lane)

    @asynccontextmanager
    async def holding(self, thread_id: str) -> AsyncIterator[None]:
        """Hold a thread with no run in flight for a state write: a run created meanwhile
        waits until the write is done (and then starts from it).

        Raises:
            Conflict: a run of the thread is pending or running.
        """
        in_flight = self.in_flight(thread_id)
        if in_flight:
            runs = [h.run.run_id for h in in_flight]
            raise Conflict(f"Thread {thread_id} has in-flight runs: {runs}")
        lane = self._lanes.get(thread_id)
        if lane is None:
            lane = self._lanes[thread_id] = ThreadLane()
        lane.writers += 1
        try:
            yield
        finally:
            lane.writers -= 1
            self._changed(thread_id, lane)

    def _changed(self, thread_id: str, lane: ThreadLane) -> None:
        """Wake the lane's waiters; forget the lane once nothing uses it."""
        lane.notify()
        if lane.idle:
            del self._lanes[thread_id]

    async def _run_task(self, handle: RunHandle, taken: bool) -> None:
        """Execute the run and record its outcome; ``taken``: :meth:`start` took its
        thread and streamed its ``metadata`` already."""
        run = handle.run
        error: Exception | None = None
        try:
            with handle.scope:
                metadata = _metadata(run)
                if not taken:
                    if not self._ready.is_set():
                        await self._ready.wait()
                    await self._lanes[run.thread_id].take(handle)
                    await self.core.cluster.wait_turn(run)
                    if run.attempt > 1:  # event ids go on after the earlier attempts' ones
                        handle.stream.continue_at(await self.core.cluster.resume_seq(run))
                    if run.attempt > self.core.settings.max_attempts:
                        raise WorkerCrashed(run, self.core.settings.max_attempts)
                    # streamed before the wait for a slot under max_runs: a client sees at
                    # once that its run exists (and gets heartbeats) however long the queue
                    self._emit(handle, "metadata", metadata)
                if handle.background:  # requests being taken in go first (a burst of them)
                    await self.core.intake.calm()
                await self._slots.acquire()
                try:
                    await self._execute(handle, metadata)
                finally:
                    self._slots.release()
                handle.completed = True
        except Exception as exc:
            error = exc
        finally:
            with trio.CancelScope(shield=True) as cleanup:
                cleanup.deadline = trio.current_time() + CLEANUP_TIMEOUT
                await self._finish(handle, error)

    async def _execute(self, handle: RunHandle, metadata: dict[str, Any]) -> None:
        core, run = self.core, handle.run
        handle.started = True
        run.status = "running"
        run.updated_at = now()
        if not await core.cluster.record(run):  # fenced as the final record is
            raise TakenOver(run.run_id)
        await core.hooks.fire("triograph_run_started", run=copied(run))
        event_hook = core.hooks.has("triograph_run_event")
        if event_hook:  # the metadata event went out before the slot; its hook goes now
            await core.hooks.fire("triograph_run_event", run=run, event="metadata", data=metadata)
        graph_id = run.kwargs["config"]["configurable"]["graph_id"]
        user = run.kwargs["config"]["configurable"].get("langgraph_auth_user")
        async with core.graphs.opened(
            core.bridge,
            graph_id,
            run.kwargs["config"],
            temporary=handle.temporary,
            context=run.kwargs.get("context"),
            user=User.from_dict(user) if isinstance(user, dict) else None,
        ) as graph:
            await self._stream(handle, graph, graph_id, event_hook)

    async def _stream(
        self, handle: RunHandle, graph: Graph, graph_id: str, event_hook: bool
    ) -> None:
        core, run = self.core, handle.run
        link, unstored = core.cluster, handle.unstored
        info = _run_info(handle)
        dispatcher = handle.dispatcher = Dispatcher(
            core.stream_modes, run.kwargs["stream_mode"], info
        )
        for name, payload in dispatcher.begin():
            await self._publish(handle, name, payload, event_hook)
        source = await self._attempt(handle)
        thread_streams, thread_id = core.thread_streams, run.thread_id
        modes = run.kwargs["stream_mode"]
        # the events go out as they come while anyone follows them (the run's or its
        # thread's stream, the thread's protocol log, other processes, the event hook);
        # otherwise (a /wait, a background run nobody joined yet) they come in one batch at
        # the end, or once someone joins (within LAZY_DELAY): a cross-thread wake-up per run
        # instead of per chunk
        followed = (
            event_hook
            or unstored is not None
            or (not handle.temporary and Dispatcher.uses_protocol(core.stream_modes, modes))
        )

        def live() -> bool:
            return (
                followed
                or handle.stream.subscriber_count > 0
                or thread_streams.subscriber_count(thread_id) > 0
            )

        def leftover(batch: list[tuple[tuple[str, ...], str, Any]]) -> None:
            if event_hook:  # followed: as before, what was in flight at a cancel is dropped
                return
            try:  # made before the run stopped: its events count
                for ns, mode, data in batch:
                    for name, payload in dispatcher.dispatch(ns, mode, data):
                        self._emit(handle, name, payload)
            except Exception:  # the run's own ending (a cancel, an error) goes on
                log.exception("run %s: its last events could not be published", run.run_id)

        factory = chunk_source(graph, source, dispatcher)
        async with core.bridge.stream(factory, live=live, leftover=leftover) as batches:
            async for batch in batches:
                for ns, mode, data in batch:
                    for name, payload in dispatcher.dispatch(ns, mode, data):
                        if event_hook:
                            await self._publish(handle, name, payload, event_hook)
                        else:  # no coroutine per event (per token) when nothing awaits
                            self._emit(handle, name, payload)
                await link.flush(run.run_id, unstored)

    async def _attempt(self, handle: RunHandle) -> Run:
        """What this attempt executes: the run as stored, or, for a retry (its server
        stopped while running it) whose thread's head checkpoint it wrote itself, the run
        continuing from that checkpoint: no input, no command, no checkpoint to fork from.
        (LangGraph resumes a run re-entered with its own run id by itself, but it would
        apply a ``command`` again, and a fork's ``checkpoint_id`` would start it over.) A
        retry that wrote no checkpoint yet, or a stateless one, starts over from its input."""
        run = handle.run
        if run.attempt == 1 or handle.temporary:
            return run
        checkpointer = self.core.storage.checkpointer
        head_config: Any = {"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}}
        head = await self.core.bridge.call(lambda: checkpointer.aget_tuple(head_config))
        if head is None or head.metadata.get("run_id") != run.run_id:
            return run
        config = run.kwargs["config"]
        configurable = {k: v for k, v in config["configurable"].items() if k not in CHECKPOINT_KEYS}
        kwargs = {
            **run.kwargs,
            "input": None,
            "command": None,
            "config": {**config, "configurable": configurable},
        }
        return attrs.evolve(run, kwargs=kwargs)

    async def _publish(self, handle: RunHandle, name: str, payload: Any, hook: bool) -> None:
        """One event to the run's output, its stream, its thread's stream and the hook."""
        self._emit(handle, name, payload)
        if hook:
            await self.core.hooks.fire(
                "triograph_run_event", run=handle.run, event=name, data=payload
            )

    def _emit(self, handle: RunHandle, name: str, payload: Any) -> None:
        """One event to the run's output, its stream and its thread's stream (no hook); a
        protocol channel's event to the thread's protocol log too."""
        encoded = encoding.dumps(payload)
        handle.output.observe(name, payload, encoded)
        if name.startswith(PROTOCOL_PREFIX) and not handle.temporary:
            # the thread's protocol log keeps and delivers it: not the run's stream too (a
            # classic join stream has no use for it), which only numbers it for storage
            seq = handle.stream.number()
            self.core.event_log.publish(handle.run.thread_id, name, encoded)
        else:
            seq = handle.stream.publish(name, encoded).seq
        if handle.unstored is not None:
            handle.unstored.append((seq, name, encoded))
        self.core.thread_streams.publish(handle.run.thread_id, name, encoded)

    # -- finishing ----------------------------------------------------------------------------

    async def _finish(self, handle: RunHandle, error: Exception | None) -> None:
        """Decide the outcome and record it; runs shielded and time-bounded, holding the
        thread. The run leaves the in-flight set first, so the thread status written below
        counts only the others. The stream closes last, so a client that sees it end and
        asks for the run (or its thread) sees them final. A failure here is logged, never
        raised: it must not take the supervisor's nursery (every other run) down."""
        handle.finishing = True
        run = handle.run
        self._leave(handle)
        self._releases_due = RELEASES_AFTER_RUNS
        if handle.left and not handle.started:  # stored as it was: pending, for the others
            handle.stream.close()
            self._release(handle)
            handle.done.set()
            self.handles.pop(run.run_id, None)
            return
        outcome: Outcome
        if handle.cancel_action == "rollback":
            outcome = "rolled_back"
        elif error is not None:
            outcome = "error"
        elif handle.completed:
            outcome = "success"
        else:
            outcome = "interrupted"
            if handle.cancel_action is None:  # cancelled from outside: the nursery is closing
                handle.cancel_reason = SHUTDOWN_REASON
        owned = True
        try:
            # lease fencing: another process that claimed the run (this one's heartbeat
            # stopped for a lease) executes it again and records it; this outcome is not
            # stored, nor its last events, and no hook says it finished. A temporary run
            # writes nothing before its final record, which is fenced itself
            owned = handle.temporary or await self.core.cluster.owns(run)
            if owned:
                owned = await self._record(handle, outcome, error)
            if not owned:
                if handle.unstored is not None:
                    handle.unstored.clear()
                log.warning(
                    "run %s: claimed by another worker while it ran here (this worker's "
                    "heartbeat stopped for a lease); its outcome here (%s) is discarded",
                    run.run_id,
                    outcome,
                )
        except Exception as exc:
            log.exception("run %s: recording its outcome (%s) failed", run.run_id, outcome)
            self.core.hooks.call("triograph_error", error=exc, where="run")
        finally:
            if owned:
                self.core.cluster.finished(run)
            handle.stream.close()
            self.core.thread_streams.run_done(run.thread_id, run.run_id)
            self._release(handle)
            handle.done.set()
            if owned:
                self._retain(handle, outcome)
            else:  # joiners here follow the claimant's execution through the storage
                self.handles.pop(run.run_id, None)

    async def _record(self, handle: RunHandle, outcome: Outcome, error: Exception | None) -> bool:
        """The final run status (or its deletion), the thread status, the hooks; False if
        the final record found the run another worker's (and nothing more was done)."""
        core, run = self.core, handle.run
        thread_error = None
        deleted: bool | None = False  # a temporary run's thread, by its final write
        if outcome == "error":
            assert error is not None
            log.debug("run %s failed: %r", run.run_id, error)  # the run log says it, once
            thread_error = handle.output.error = (
                error.payload()
                if isinstance(error, WorkerCrashed)
                else encoding.error_payload(error)
            )
            hook = core.hooks.has("triograph_run_event")
            await self._publish(handle, "error", thread_error, hook)
        elif outcome in ("interrupted", "rolled_back"):
            thread_error = {"error": "UserInterrupt", "message": handle.cancel_reason}
        if handle.dispatcher is None:  # never executed: its emitters may still say how it ended
            handle.dispatcher = Dispatcher(
                core.stream_modes, run.kwargs["stream_mode"], _run_info(handle)
            )
        hook = core.hooks.has("triograph_run_event")
        if outcome == "rolled_back":
            for name, payload in handle.dispatcher.end(outcome, thread_error):
                await self._publish(handle, name, payload, hook)
            self.handles.pop(run.run_id, None)  # no longer joinable: it is being deleted
            # its end events reach the thread's protocol log on a shared backend, which
            # keeps them when the run's own events go with it
            await core.cluster.flush(run.run_id, handle.unstored)
            await core.runs.rollback(run)
            run.status = "interrupted"  # what it was when deleted, for the hook below
            if not handle.temporary:
                await core.threads.after_run(run, outcome, thread_error)
        else:
            # The thread's state is stored first: a client told how the run ended (its
            # emitters' end events) finds the thread final (its interrupts pending), and a
            # process that sees the run final (a join elsewhere) reads its values from the
            # thread. Every event is stored before the run's status. The run still stored
            # in flight is this process's: the thread's status does not count it. A
            # temporary run is never stored final: the write that would say so deletes it,
            # with its thread (one write: a crash leaves it in flight, to be retried, or gone).
            owned = True
            try:
                if not handle.temporary:
                    await core.threads.after_run(run, outcome, thread_error)
                for name, payload in handle.dispatcher.end(outcome, thread_error):
                    await self._publish(handle, name, payload, hook)
                await core.cluster.flush(run.run_id, handle.unstored)
            finally:  # the run's outcome is stored even if the thread's could not be
                run.status = outcome
                run.updated_at = now()
                # in the cleanup's shield (``_run_task``), with FINAL_WRITE seconds at least:
                # in a scope of its own only if the cleanup has less time left than that
                # (a cancel scope is ~50 calls into Trio)
                if trio.current_effective_deadline() - trio.current_time() >= FINAL_WRITE:
                    deleted, owned = await self._final_write(run, handle.temporary)
                else:
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + FINAL_WRITE):
                        deleted, owned = await self._final_write(run, handle.temporary)
            if not owned:  # claimed meanwhile: the claimant records it
                return False
        await core.hooks.fire(
            "triograph_run_finished", run=copied(run), outcome=outcome, error=thread_error
        )
        if handle.temporary:  # it kept no checkpoints: only the records go
            if outcome == "rolled_back":  # its run is deleted; its thread goes now
                deleted = await core.storage.threads.delete(run.thread_id)
            await core.threads.discarded(run.thread_id, deleted=bool(deleted))
        return True

    async def _final_write(self, run: Run, temporary: bool) -> tuple[bool | None, bool]:
        """The run's final record, or for a temporary run the deletion of it and its thread:
        ``(deleted, owned)`` (``deleted``: what ``Cluster.discard`` answered; ``owned``:
        False if the run was found another worker's)."""
        if temporary:
            deleted = await self.core.cluster.discard(run)
            return deleted, deleted is not None
        return False, await self.core.cluster.record(run)

    def _retain(self, handle: RunHandle, outcome: Outcome) -> None:
        """Keep a finished run joinable from memory for a while, or forget it now. A rolled
        back run is forgotten at once: it no longer exists."""
        if outcome != "rolled_back" and handle.stream.resumable:
            handle.expires_at = trio.current_time() + self.core.settings.resumable_ttl
        elif outcome != "rolled_back" and handle.retain:
            handle.expires_at = trio.current_time() + FINISHED_RETENTION
        else:  # its creator (a stream or a wait) holds the handle and has had everything
            self.handles.pop(handle.run.run_id, None)

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
        """Stop accepting runs and interrupt those that have not started (none starts from
        now on; on a shared backend they stay ``pending``, and the other workers take them
        once this one is gone); give the running ones ``grace`` seconds, then interrupt
        them. Returns once every run has recorded its outcome (at most ``CLEANUP_TIMEOUT``
        more seconds), with the run nursery cancelled. Calling it again is harmless."""
        self.accepting = False
        for handle in self.all_in_flight():
            if not handle.started:
                # on a shared backend it stays pending: another worker runs it
                handle.left = self.core.cluster.hands_over
                handle.cancel("interrupt", SHUTDOWN_REASON)
        with trio.move_on_after(grace):
            await self._all_finished()
        for handle in self.all_in_flight():
            handle.cancel("interrupt", SHUTDOWN_REASON)
        with trio.move_on_after(CLEANUP_TIMEOUT):
            await self._all_finished()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _all_finished(self) -> None:
        while unfinished := [h for h in self.handles.values() if not h.done.is_set()]:
            await unfinished[0].done.wait()
