"""How this process coordinates with the others serving the same storage: the
:class:`ClusterLink` protocol the run path calls, and :class:`LocalLink`, its implementation
for a backend only one process opens (memory, file).

The run path has one shape whatever the deployment: it takes the thread's cluster lock to
admit a run, asks which runs of a thread other processes have in flight, follows and
cancels runs executing elsewhere, stores the events others may serve, and, at start-up and
periodically, adopts the runs nobody executes any more. On a single process most of these
are free: there is nobody else. The shared implementation over a storage
:class:`~triograph.core.infra.storage.Cluster` is
:class:`~triograph.core.engine.shared_cluster.SharedLink`. The lifespan picks one and sets
it as ``core.cluster``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import trio

from triograph.core.infra.models import IN_FLIGHT_RUN_STATUSES, CancelAction, Run, now

if TYPE_CHECKING:
    import datetime as dt
    from contextlib import AbstractAsyncContextManager

    from triograph.core.engine.handles import RunHandle
    from triograph.core.infra.context import Core
    from triograph.core.infra.storage import StoredEvent

log = logging.getLogger("triograph.cluster")


class ClusterLink(Protocol):
    """This process's side of the cluster. Called from Trio, by the run path."""

    #: runs not started at shutdown stay ``pending`` for the other workers (else they are
    #: recorded interrupted)
    hands_over: bool

    @property
    def leader(self) -> bool:
        """This process does the server-wide chores now (cron scheduler, TTL sweeps)."""
        ...

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The link's background work, in the supervisor's nursery until shutdown."""
        ...

    def thread_lock(self, thread_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive across processes for the block (run admission, thread status writes);
        re-entrant within one Trio task."""
        ...

    async def owns(self, run: Run) -> bool:
        """Whether this process may still record the run's outcome: no other process has
        claimed it meanwhile (lease fencing; always, with no other process)."""
        ...

    async def record(self, run: Run) -> bool:
        """Store the run's record (``running`` as it starts, then its final one) if this
        process still :meth:`owns` it, in one write; whether it did."""
        ...

    async def adopt(self) -> set[str]:
        """Take over the runs no live process executes (their owner stopped), execute them
        here, and return the threads whose status may be stale because of it."""
        ...

    async def in_flight_elsewhere(self, thread_id: str) -> list[Run]:
        """The thread's runs stored in flight that another process executes, oldest first."""
        ...

    async def wait_turn(self, run: Run) -> None:
        """Return once no run of another process holds ``run``'s thread or comes before it."""
        ...

    def turn_is_free(self, run: Run) -> bool:
        """Whether :meth:`wait_turn` is known to return at once for ``run`` (no process
        else can hold its thread), without asking anyone."""
        ...

    def run_end_elsewhere(self, thread_id: str) -> trio.Event:
        """An event set once a run of the thread that another process executes has recorded
        its outcome (as that process announces it: wait with a timeout, and look again)."""
        ...

    async def follow(self, run: Run) -> RunHandle | None:
        """A handle on a run another process executes (or executed: its stored events
        replay), or None if this process cannot see one."""
        ...

    async def cancel_elsewhere(
        self, run_ids: list[str], action: CancelAction, reason: str
    ) -> list[RunHandle]:
        """Cancel those in-flight runs among ``run_ids`` that other processes execute."""
        ...

    async def discard(self, run: Run) -> bool | None:
        """A finished temporary run's end: its thread and the run deleted in one write,
        fenced as :meth:`record` is. Whether the thread was deleted (False: gone already),
        or None if another process claimed the run (nothing was deleted)."""
        ...

    def keeps_events(self, run: Run) -> bool:
        """Whether the events of this process's ``run`` are stored for other processes."""
        ...

    async def flush(self, run_id: str, unstored: list[StoredEvent] | None) -> None:
        """Store (and empty) the events a run published since the last flush."""
        ...

    async def resume_seq(self, run: Run) -> int:
        """Where a retried run's event numbers go on (after its earlier attempts' stored
        events); 0 if none are stored."""
        ...

    def finished(self, run: Run) -> None:
        """A run of this process recorded its outcome (wake those waiting elsewhere)."""
        ...

    async def prune_events(self, before: dt.datetime) -> None:
        """Drop the stored events of runs finished before ``before``."""
        ...


async def start_claimed(core: Core, runs: Sequence[Run]) -> None:
    """Execute runs taken over from a stopped process, as stored (in ``created_at`` order on
    their thread, ``after_seconds`` included), joinable from memory once finished."""
    supervisor = core.supervisor
    for run in runs:
        if supervisor.get(run.run_id) is None and supervisor.accepting:
            await supervisor.start(supervisor.reserve(run, retain=True))


class LocalLink:
    """The cluster of one process: it leads, its locks are free, nothing runs elsewhere and
    no event needs storing. What it adopts, once at start-up, is every run the storage holds
    in flight: only a stopped server (this one, earlier) can have left them. A run left
    ``running`` was cut off: it goes back to ``pending`` with ``attempt`` one higher
    (contract §5.1), and the supervisor retries it from its last checkpoint, or fails it
    once it is past ``max_attempts``. Its threads, and every thread left ``busy``, are
    returned to be recomputed."""

    hands_over = False
    leader = True

    def __init__(self, core: Core) -> None:
        self.core = core
        self._adopted = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    @asynccontextmanager
    async def thread_lock(self, thread_id: str) -> AsyncIterator[None]:
        # admission is decided and reserved in the supervisor without an await in between
        yield

    async def adopt(self) -> set[str]:
        if self._adopted:
            return set()
        self._adopted = True
        storage = self.core.storage
        runs = await storage.runs.search(statuses=IN_FLIGHT_RUN_STATUSES)
        for run in runs:
            if run.status == "running":
                run.status = "pending"
                run.attempt += 1
                run.updated_at = now()
                await storage.runs.update(run)
        await start_claimed(self.core, runs)
        _, count = await storage.threads.search(status="busy", limit=0)
        busy, _ = await storage.threads.search(status="busy", limit=count)
        if runs:
            log.info("recovered %d runs left in flight by a stopped server", len(runs))
        return {run.thread_id for run in runs} | {t.thread_id for t in busy}

    async def owns(self, run: Run) -> bool:
        return True

    async def record(self, run: Run) -> bool:
        await self.core.storage.runs.update(run)
        return True

    async def discard(self, run: Run) -> bool | None:
        return await self.core.storage.threads.delete(run.thread_id)

    async def in_flight_elsewhere(self, thread_id: str) -> list[Run]:
        return []

    async def wait_turn(self, run: Run) -> None:
        return

    def turn_is_free(self, run: Run) -> bool:
        return True

    def run_end_elsewhere(self, thread_id: str) -> trio.Event:
        return trio.Event()  # nothing runs elsewhere

    async def follow(self, run: Run) -> RunHandle | None:
        return None

    async def cancel_elsewhere(
        self, run_ids: list[str], action: CancelAction, reason: str
    ) -> list[RunHandle]:
        return []

    def keeps_events(self, run: Run) -> bool:
        return False

    async def flush(self, run_id: str, unstored: list[StoredEvent] | None) -> None:
        return

    async def resume_seq(self, run: Run) -> int:
        return 0  # an earlier attempt's events went with the process that published them

    def finished(self, run: Run) -> None:
        return

    async def prune_events(self, before: dt.datetime) -> None:
        return
