"""Serving beside other processes on one shared backend (Postgres): :class:`SharedLink`.

When the storage has a :class:`~triograph.core.infra.storage.Cluster`, the lifespan makes a
:class:`SharedLink` the app's :class:`~triograph.core.engine.cluster.ClusterLink`
(``core.cluster``). Every process executes the runs it creates itself,
as on a single-process backend; the link adds what makes several processes one server:

* **Claiming.** Every ``lease / 3`` seconds, and at start-up, the runs of workers that
  stopped heartbeating are claimed (``FOR UPDATE SKIP LOCKED``) and executed here, a
  ``running`` one retried from its last checkpoint with ``attempt`` one higher.
* **Lease fencing.** A worker whose heartbeat stopped for a lease (a long pause, a
  partition) but is still alive may find its runs claimed by another: at its next
  heartbeat it cancels their execution here (:meth:`SharedLink._lost`), and until then
  what it writes of them (events, checkpoints, the final record) is discarded by the
  storage, which writes a run's rows only while the run is this worker's.
* **One run of a thread at a time, across processes.** Admission (in-flight check,
  multitask decision, insert) and thread status writes hold the thread's cluster lock; a run
  about to execute first waits while another worker's run of the same thread is running, or
  pending and scheduled before it (:meth:`SharedLink.wait_turn`).
* **Runs executing elsewhere.** A cancel, join, join stream or ``cancel?wait`` for a run
  another worker executes gets a :class:`RemoteRun`: cancels go to the owner as
  notifications, the stream is fed from the run's stored events, and it is done once the run
  is stored final. Notifications (``events``, ``done``) wake it; it also polls, since a
  notification may be lost.

Stream events of every run that is not temporary are stored (:meth:`SharedLink.flush`,
once per batch of graph output), so any process can serve them, also for a
``Last-Event-ID`` replay after the run's process died. The protocol events among them go to
their thread's log in the same statement: :attr:`SharedLink.events`
(:mod:`triograph.core.engine.shared_event_log`) is the app's ``core.event_log``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core.engine.cluster import start_claimed
from triograph.core.engine.event_log import PREFIX
from triograph.core.engine.handles import RunHandle
from triograph.core.engine.shared_event_log import SharedEventLog
from triograph.core.engine.streams import RunStream
from triograph.core.engine.supervisor import FINISHED_RETENTION
from triograph.core.infra.models import IN_FLIGHT_RUN_STATUSES, CancelAction, Run

if TYPE_CHECKING:
    from triograph.core.infra.context import Core
    from triograph.core.infra.storage import Cluster, StoredEvent

log = logging.getLogger("triograph.cluster")

#: seconds between two looks at the database when no notification came
POLL_INTERVAL = 1.0
#: why a run this process lost to another worker stopped executing here
LOST_REASON = "the run was taken over by another worker"


@attrs.define(eq=False)
class RemoteRun(RunHandle):
    """A run another worker executes, as this process sees it (see the module docstring)."""

    link: SharedLink | None = None
    #: the events stored so far are in the stream: a subscriber's ``after`` means something
    loaded: trio.Event = attrs.Factory(trio.Event)

    @property
    def remote(self) -> bool:
        return True

    def cancel(self, action: CancelAction = "interrupt", reason: str = "") -> bool:
        if self.done.is_set() or self.link is None:
            return False
        self.link.send("cancel", {"run_id": self.run.run_id, "action": action, "reason": reason})
        return True


class SharedLink:
    """See the module docstring. Serve with ``await supervisor.start_service(link.serve)``."""

    #: runs not started at shutdown stay ``pending``: another worker takes them
    hands_over = True

    def __init__(self, core: Core, cluster: Cluster) -> None:
        self.core = core
        self.cluster = cluster
        self._remote: dict[str, RemoteRun] = {}
        self._run_wakes: dict[str, trio.Event] = {}
        self._thread_wakes: dict[str, trio.Event] = {}
        self._lock_holders: dict[str, tuple[trio.lowlevel.Task, int]] = {}
        self._outbox, self._outbox_out = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            math.inf
        )
        self._nursery: trio.Nursery | None = None
        settings = core.settings
        #: the protocol's event log of the processes sharing the storage (``core.event_log``)
        self.events = SharedEventLog(
            cluster, settings.subscriber_buffer, settings.subscriber_buffer_bytes
        )
        cluster.subscribe(self._on_notice)
        cluster.watch(self._executing, self._lost)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send notifications, claim orphaned runs periodically, follow remote runs."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._claim_loop)
            await nursery.start(self.events.serve)
            task_status.started()

    # -- notifications ------------------------------------------------------------------------

    def send(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue a notification to the other workers (never blocks)."""
        self._outbox.send_nowait((topic, payload))

    async def _send_loop(self) -> None:
        async for topic, payload in self._outbox_out:
            try:
                await self.cluster.notify(topic, payload)
            except Exception:
                log.exception("notification %s %s could not be sent", topic, payload)

    def _on_notice(self, topic: str, payload: dict[str, Any]) -> None:
        run_id = payload.get("run_id")
        if topic == "cancel" and isinstance(run_id, str):
            action: CancelAction = (
                "rollback" if payload.get("action") == "rollback" else "interrupt"
            )
            self.core.supervisor.cancel([run_id], action, str(payload.get("reason") or ""))
        elif topic in ("events", "done") and isinstance(run_id, str):
            self._wake(self._run_wakes, run_id)
            thread_id, thread_seq = payload.get("thread_id"), payload.get("thread_seq")
            if isinstance(thread_id, str) and isinstance(thread_seq, int):
                self.events.announced(thread_id, thread_seq)
            if topic == "done" and isinstance(payload.get("thread_id"), str):
                self._wake(self._thread_wakes, payload["thread_id"])

    @staticmethod
    def _wake(wakes: dict[str, trio.Event], key: str) -> None:
        event = wakes.pop(key, None)
        if event is not None:
            event.set()

    @staticmethod
    def _waiter(wakes: dict[str, trio.Event], key: str) -> trio.Event:
        event = wakes.get(key)
        if event is None:
            event = wakes[key] = trio.Event()
        return event

    # -- runs of this process -----------------------------------------------------------------

    def keeps_events(self, run: Run) -> bool:
        """Any process may serve the stream of a run that is not temporary: store its events."""
        return not run.kwargs.get("temporary")

    async def flush(self, run_id: str, unstored: list[StoredEvent] | None) -> None:
        """Store the events a run of this process published since the last flush (and empty
        the list); its protocol events go to the thread's log in the same statement, and
        then to the log's readers here."""
        if unstored:
            events = unstored.copy()
            unstored.clear()
            appended = await self.cluster.append_events(run_id, events)
            if appended is not None:
                protocol = [(name, data) for _, name, data in events if name.startswith(PREFIX)]
                self.events.stored(appended, protocol)

    async def owns(self, run: Run) -> bool:
        """Lease fencing: a worker whose heartbeat stopped for a lease (a long pause, a
        partition) may find its run claimed and running elsewhere; it must not record it."""
        return await self.cluster.owns(run.run_id)

    async def record(self, run: Run) -> bool:
        """The run's writes of its status (as it starts, as it ends), fenced as :meth:`owns`
        is."""
        return await self.cluster.record(run)

    async def discard(self, run: Run) -> bool | None:
        """A temporary run's end, fenced as :meth:`record` is."""
        return await self.cluster.discard(run)

    def _executing(self) -> list[str]:
        return [handle.run.run_id for handle in self.core.supervisor.all_in_flight()]

    def _lost(self, run_ids: list[str]) -> None:
        """Lease fencing: runs of this process that another worker claimed while this one's
        heartbeat was stopped are the claimant's; their execution here is cancelled, and
        their end records nothing (:meth:`owns`)."""
        for run_id in run_ids:
            handle = self.core.supervisor.get(run_id)
            if handle is None or handle.cancel_reason == LOST_REASON:  # told already
                continue
            log.warning(
                "run %s: another worker took it over (this worker's heartbeat stopped for a "
                "lease); cancelling its execution here",
                run_id,
            )
            handle.cancel("interrupt", LOST_REASON)

    def finished(self, run: Run) -> None:
        """A run of this process recorded its outcome: wake its followers and the runs of its
        thread waiting elsewhere."""
        if not run.kwargs.get("temporary"):
            self.send("done", {"run_id": run.run_id, "thread_id": run.thread_id})

    async def resume_seq(self, run: Run) -> int:
        """The sequence number a retried run's events continue from (after the stored ones)."""
        stored = await self.cluster.events(run.run_id, after=-1, limit=1_000_000)
        return stored[-1][0] + 1 if stored else 0

    async def adopt(self) -> set[str]:
        """Claim the runs of workers that stopped heartbeating and execute them here;
        returns their threads."""
        runs = await self.cluster.claim()
        await start_claimed(self.core, runs)
        if runs:
            log.info("claimed %d runs of stopped workers", len(runs))
        return {run.thread_id for run in runs}

    async def prune_events(self, before: dt.datetime) -> None:
        await self.cluster.prune_events(before)

    @property
    def leader(self) -> bool:
        return self.cluster.leader

    async def _claim_loop(self) -> None:
        while True:
            await trio.sleep(self.core.settings.lease / 3)
            if not self.core.supervisor.accepting:
                return
            try:
                await self.core.runs.settle(await self.adopt())
            except Exception:
                log.exception("claiming orphaned runs failed")

    # -- threads ------------------------------------------------------------------------------

    @asynccontextmanager
    async def thread_lock(self, thread_id: str) -> AsyncIterator[None]:
        """The thread's cluster lock, re-entrant within one Trio task."""
        task = trio.lowlevel.current_task()
        held = self._lock_holders.get(thread_id)
        if held is not None and held[0] is task:
            self._lock_holders[thread_id] = (task, held[1] + 1)
            try:
                yield
            finally:
                self._lock_holders[thread_id] = (task, self._lock_holders[thread_id][1] - 1)
            return
        async with self.cluster.thread_lock(thread_id):
            self._lock_holders[thread_id] = (task, 1)
            try:
                yield
            finally:
                del self._lock_holders[thread_id]

    async def in_flight_elsewhere(self, thread_id: str) -> list[Run]:
        """The thread's runs stored ``pending`` or ``running`` by other workers, oldest first."""
        local = self.core.supervisor.handles
        stored = await self.core.storage.runs.search(
            thread_id=thread_id, statuses=IN_FLIGHT_RUN_STATUSES
        )
        return [run for run in stored if run.run_id not in local]

    def run_end_elsewhere(self, thread_id: str) -> trio.Event:
        """Set by the ``done`` notification of a run of the thread (sent once it recorded
        its outcome, thread status included)."""
        return self._waiter(self._thread_wakes, thread_id)

    def turn_is_free(self, run: Run) -> bool:
        return bool(run.kwargs.get("temporary"))  # a temporary thread is this run's alone

    async def wait_turn(self, run: Run) -> None:
        """Return once no run of another worker holds ``run``'s thread or comes before it
        (a temporary thread is this run's alone)."""
        if run.kwargs.get("temporary"):
            return
        while True:
            wake = self._waiter(self._thread_wakes, run.thread_id)
            mine = (run.created_at, run.run_id)
            blocking = [
                other
                for other in await self.in_flight_elsewhere(run.thread_id)
                if other.run_id != run.run_id
                and (other.status == "running" or (other.created_at, other.run_id) < mine)
            ]
            if not blocking:
                return
            with trio.move_on_after(POLL_INTERVAL):
                await wake.wait()

    # -- runs of other processes --------------------------------------------------------------

    async def cancel_elsewhere(
        self, run_ids: list[str], action: CancelAction, reason: str
    ) -> list[RunHandle]:
        """Ask the workers executing the in-flight runs among ``run_ids`` that are not this
        process's to cancel them; returns their handles here."""
        out: list[RunHandle] = []
        for run_id in run_ids:
            if run_id in self.core.supervisor.handles:
                continue
            run = await self.core.storage.runs.get(run_id)
            if run is None or run.status not in IN_FLIGHT_RUN_STATUSES:
                continue
            remote = await self.follow(run)
            if remote.cancel(action, reason):
                out.append(remote)
        return out

    async def follow(self, run: Run) -> RemoteRun:
        """The :class:`RemoteRun` of a run stored by another worker (made once, shared),
        once the events stored so far are in its stream; also a finished one, whose stored
        events replay."""
        remote = self._remote.get(run.run_id)
        if remote is not None:
            await remote.loaded.wait()
            return remote
        settings = self.core.settings
        remote = RemoteRun(
            run=run,
            stream=RunStream(
                run.run_id,
                resumable=bool(run.kwargs.get("resumable")),
                limit=settings.subscriber_buffer,
                limit_bytes=settings.subscriber_buffer_bytes,
            ),
            link=self,
        )
        self._remote[run.run_id] = remote
        assert self._nursery is not None, "the cluster link is not serving"
        self._nursery.start_soon(self._follow, remote)
        await remote.loaded.wait()
        return remote

    async def _follow(self, remote: RemoteRun) -> None:
        run_id = remote.run.run_id
        last = -1
        try:
            while True:
                wake = self._waiter(self._run_wakes, run_id)
                stored = await self.core.storage.runs.get(run_id)
                for seq, name, data in await self.cluster.events(run_id, after=last):
                    remote.stream.continue_at(seq)
                    remote.stream.publish(name, data)
                    last = seq
                remote.loaded.set()
                if stored is None or stored.status not in IN_FLIGHT_RUN_STATUSES:
                    if stored is not None:
                        remote.run = stored
                    break
                with trio.move_on_after(POLL_INTERVAL):
                    await wake.wait()
        except Exception:
            log.exception("following run %s failed", run_id)
        finally:
            remote.stream.close()
            remote.loaded.set()
            remote.done.set()
            retention = (
                self.core.settings.resumable_ttl if remote.stream.resumable else FINISHED_RETENTION
            )
            with trio.move_on_after(retention):
                await trio.sleep_forever()
            self._remote.pop(run_id, None)
