"""Serving beside other processes on one shared backend (Postgres).

When the storage has a :class:`~triograph.core.infra.storage.Cluster`, the lifespan makes one
:class:`ClusterLink` (``core.cluster``). Every process executes the runs it creates itself,
as on a single-process backend; the link adds what makes several processes one server:

* **Claiming.** Every ``lease / 3`` seconds, and at start-up, the runs of workers that
  stopped heartbeating are claimed (``FOR UPDATE SKIP LOCKED``) and executed here, a
  ``running`` one retried from its last checkpoint with ``attempt`` one higher.
* **One run of a thread at a time, across processes.** Admission (in-flight check,
  multitask decision, insert) and thread status writes hold the thread's cluster lock; a run
  about to execute first waits while another worker's run of the same thread is running, or
  pending and scheduled before it (:meth:`ClusterLink.wait_turn`).
* **Runs executing elsewhere.** A cancel, join, join stream or ``cancel?wait`` for a run
  another worker executes gets a :class:`RemoteRun`: cancels go to the owner as
  notifications, the stream is fed from the run's stored events, and it is done once the run
  is stored final. Notifications (``events``, ``done``) wake it; it also polls, since a
  notification may be lost.

Stream events of every run that is not temporary are stored (:meth:`ClusterLink.flush`,
once per batch of graph output), so any process can serve them, also for a
``Last-Event-ID`` replay after the run's process died.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core.engine.streams import RunStream
from triograph.core.engine.supervisor import FINISHED_RETENTION, RunHandle
from triograph.core.infra.models import IN_FLIGHT_RUN_STATUSES, CancelAction, Run

if TYPE_CHECKING:
    from triograph.core.infra.context import Core
    from triograph.core.infra.storage import Cluster, StoredEvent

log = logging.getLogger("triograph.cluster")

#: seconds between two looks at the database when no notification came
POLL_INTERVAL = 1.0


def leads(core: Core) -> bool:
    """This process does the server-wide chores (cron scheduler, TTL sweeps): always on a
    single-process backend; on a shared one, when it is the cluster's leader."""
    return core.cluster is None or core.cluster.cluster.leader


@attrs.define(eq=False)
class RemoteRun(RunHandle):
    """A run another worker executes, as this process sees it (see the module docstring)."""

    link: ClusterLink | None = None
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


class ClusterLink:
    """See the module docstring. Serve with ``await supervisor.start_service(link.serve)``."""

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
        cluster.subscribe(self._on_notice)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send notifications, claim orphaned runs periodically, follow remote runs."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._claim_loop)
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

    async def flush(self, run_id: str, unstored: list[StoredEvent]) -> None:
        """Store the events a run of this process published since the last flush (and empty
        the list)."""
        if unstored:
            events = unstored.copy()
            unstored.clear()
            await self.cluster.append_events(run_id, events)

    def finished(self, run: Run) -> None:
        """A run of this process recorded its outcome: wake its followers and the runs of its
        thread waiting elsewhere."""
        self.send("done", {"run_id": run.run_id, "thread_id": run.thread_id})

    async def resume_seq(self, run: Run) -> int:
        """The sequence number a retried run's events continue from (after the stored ones)."""
        stored = await self.cluster.events(run.run_id, after=-1, limit=1_000_000)
        return stored[-1][0] + 1 if stored else 0

    async def adopt(self) -> list[Run]:
        """Claim the orphaned runs and execute them here; returns them."""
        supervisor = self.core.supervisor
        runs = await self.cluster.claim()
        for run in runs:
            if supervisor.get(run.run_id) is None and supervisor.accepting:
                await supervisor.start(supervisor.reserve(run, retain=True))
        if runs:
            log.info("claimed %d runs of stopped workers", len(runs))
        return runs

    async def _claim_loop(self) -> None:
        while True:
            await trio.sleep(self.core.settings.lease / 3)
            if not self.core.supervisor.accepting:
                return
            try:
                runs = await self.adopt()
                await self.core.runs.settle({run.thread_id for run in runs})
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

    async def in_flight(self, thread_id: str) -> list[Run]:
        """The thread's runs stored ``pending`` or ``running``, by any worker, oldest first."""
        return await self.core.storage.runs.search(
            thread_id=thread_id, statuses=IN_FLIGHT_RUN_STATUSES
        )

    async def wait_turn(self, run: Run) -> None:
        """Return once no run of another worker holds ``run``'s thread or comes before it."""
        while True:
            wake = self._waiter(self._thread_wakes, run.thread_id)
            local = {h.run.run_id for h in self.core.supervisor.in_flight(run.thread_id)}
            mine = (run.created_at, run.run_id)
            blocking = [
                other
                for other in await self.in_flight(run.thread_id)
                if other.run_id not in local
                and other.run_id != run.run_id
                and (other.status == "running" or (other.created_at, other.run_id) < mine)
            ]
            if not blocking:
                return
            with trio.move_on_after(POLL_INTERVAL):
                await wake.wait()

    # -- runs of other processes --------------------------------------------------------------

    async def follow(self, run: Run) -> RemoteRun:
        """The :class:`RemoteRun` of a run stored by another worker (made once, shared),
        once the events stored so far are in its stream."""
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
