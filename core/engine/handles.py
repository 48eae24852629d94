"""A run in flight as the engine sees it (:class:`RunHandle`: record, stream, cancel
scope, outcome), the lane of its thread (:class:`ThreadLane`: one run of a thread at a
time), and the error of a run its server stopped too often (:class:`WorkerCrashed`).
Owned by the :class:`~triograph.core.engine.supervisor.RunSupervisor`.
"""

from __future__ import annotations

import attrs
import trio

from triograph.core.engine.execution import Dispatcher, RunOutput
from triograph.core.engine.streams import RunStream
from triograph.core.infra.models import CancelAction, Run, now
from triograph.core.infra.storage import StoredEvent


class WorkerCrashed(Exception):
    """A run given up: its server stopped every time it was running, ``max_attempts`` times."""

    def __init__(self, run: Run, max_attempts: int) -> None:
        stops = run.attempt - 1
        times = "once" if stops == 1 else f"{stops} times"
        super().__init__(
            f"the server stopped {times} while running this run; giving up "
            f"(max_attempts={max_attempts})"
        )

    def payload(self) -> dict[str, str]:
        return {"error": type(self).__name__, "message": str(self)}


class TakenOver(Exception):
    """A run another worker claimed before it started here (this worker's heartbeat stopped
    for a lease meanwhile): it is not executed here, and nothing of it is recorded."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} was taken over by another worker before it started")


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
    #: the run reached its graph (status ``running``)
    started: bool = False
    #: the graph ran to its end
    completed: bool = False
    #: the outcome is decided and being recorded: too late to cancel
    finishing: bool = False
    #: keep the finished handle joinable from memory for a while (background runs)
    retain: bool = False
    #: nobody streams or waits for it: it gives way to the requests being taken in
    #: before it executes (``core/infra/intake.py``)
    background: bool = False
    expires_at: float = float("inf")
    #: on a shared backend: the events published since the last flush to storage
    unstored: list[StoredEvent] | None = None
    #: left to other workers at shutdown (shared backend, not started): nothing is recorded
    left: bool = False
    #: the run's emitters, once it executes
    dispatcher: Dispatcher | None = None

    @property
    def temporary(self) -> bool:
        return bool(self.run.kwargs.get("temporary"))

    @property
    def remote(self) -> bool:
        """Executed by another process (see :mod:`triograph.core.engine.cluster`)."""
        return False

    def cancel(self, action: CancelAction = "interrupt", reason: str = "") -> bool:
        """Request cancellation; False once the outcome is decided. Never blocks.

        A rollback wins over an interrupt: a run asked for both is rolled back.
        """
        if self.finishing:
            return False
        if self.cancel_action != "rollback":
            self.cancel_action = action
            self.cancel_reason = reason or f"run cancelled ({action})"
        self.scope.cancel()
        return True


@attrs.define(eq=False)
class ThreadLane:
    """The runs of one thread in flight, in submission order, and the one holding the thread.

    The holder executes and records its outcome; only then may the next run take the
    thread. The next run is the one scheduled first (``created_at``; ties in submission
    order), once its scheduled time has come.
    """

    handles: list[RunHandle] = attrs.Factory(list)
    holder: RunHandle | None = None
    #: state writes (``update_state``) holding the thread; runs wait for them too
    writers: int = 0
    #: set when something changes, for the runs waiting (made only when one waits: most
    #: lanes, a stateless run's, never have a run waiting)
    changed: trio.Event | None = None

    def notify(self) -> None:
        """Wake every waiter to look again (a run arrived, left, or released the thread)."""
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def _next(self) -> RunHandle | None:
        waiting = [h for h in self.handles if h is not self.holder]
        return min(waiting, key=lambda h: h.run.created_at, default=None)

    def _first(self, handle: RunHandle) -> bool:
        """Whether ``handle`` is the next to take the free thread, once its time comes."""
        return self.holder is None and not self.writers and self._next() is handle

    def try_take(self, handle: RunHandle) -> bool:
        """Take the thread for ``handle`` if it may have it now; whether it does."""
        if self._first(handle) and handle.run.created_at <= now():
            self.holder = handle
        return self.holder is handle

    async def take(self, handle: RunHandle) -> None:
        """Return once ``handle`` holds the thread (at once if it does already).
        Cancellable: a run cancelled while it waits (for the thread or for its
        ``after_seconds``) never takes it."""
        while not self.try_take(handle):
            first = self._first(handle)
            delay = (handle.run.created_at - now()).total_seconds() if first else 0.0
            if self.changed is None:
                self.changed = trio.Event()
            if first:
                with trio.move_on_after(delay):
                    await self.changed.wait()
            else:
                await self.changed.wait()

    @property
    def idle(self) -> bool:
        return not self.handles and self.holder is None and not self.writers
