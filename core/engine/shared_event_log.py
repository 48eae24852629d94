"""The protocol's event log shared by the processes of one Postgres database:
:class:`SharedEventLog`, the :class:`~triograph.core.engine.event_log.ThreadEventLog` of a
storage with a :class:`~triograph.core.infra.storage.Cluster`.

The events are the ones the cluster stores already: a run's protocol events are among its
stream events, which its owner stores once per batch of graph output
(:meth:`~triograph.core.engine.shared_cluster.SharedLink.flush`); the same statement appends
them to the thread's log, numbered by the thread's sequence in the database, so every
process numbers an event alike and ``since`` means the same on each. Nothing is published
here before it is stored: a run that lost its lease (lease fencing) stores nothing, and
nobody sees what it did meanwhile.

Delivery: a process keeps a :class:`_Watched` thread only while it has subscribers here.
The owner's process hands a stored batch straight to them when it follows the last event
they have; anything else (a batch stored by another process, announced by the ``events``
notification with its ``thread_seq``; a gap; a notification lost, found by a poll of the
watched threads' last numbers every :data:`POLL_INTERVAL` seconds) makes the thread
*behind*, and one task reads what it lacks from the database, in order. A subscriber
replays the kept events from the database (after ``since``, or from the start of the
thread's latest run), then follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from triograph.core.engine.event_log import envelope
from triograph.core.engine.streams import DEFAULT_LIMIT_BYTES, Broadcast, Event, Subscription

if TYPE_CHECKING:
    from triograph.core.infra.storage import Cluster, ThreadAppend

log = logging.getLogger("triograph.cluster")

#: seconds between two looks at the watched threads' last numbers (a notice may be lost)
POLL_INTERVAL = 1.0


def _event(seq: int, ms: int, name: str, params: bytes) -> Event:
    event_id = f"{ms}-{seq}"
    return Event(seq=seq, id=event_id, name=name, data=envelope(seq, event_id, name, params))


class _Watched(Broadcast):
    """A thread this process has subscribers of: the last number they were given."""

    def __init__(self, log: SharedEventLog, thread_id: str) -> None:
        super().__init__(log.limit, log.limit_bytes)
        self.owner = log
        self.thread_id = thread_id
        #: the last number delivered (None until the first subscriber read the log)
        self.last: int | None = None
        #: subscribers reading their replay (the thread must stay watched meanwhile)
        self.joining = 0
        #: one reader of the database at a time, so events go out once and in order
        self.lock = trio.Lock()
        #: the thread was deleted: its readers ended
        self.ended = False

    def deliver(self, events: Iterable[Event]) -> None:
        for event in events:
            assert self.last is not None
            if event.seq > self.last:
                self._deliver(event)
                self.last = event.seq

    def discard(self, sub: Subscription) -> None:
        super().discard(sub)
        if not self._subs and not self.joining:
            self.owner._unwatch(self)

    def end(self) -> None:
        self._end_all()


class SharedEventLog:
    """See the module docstring. Serve with ``await nursery.start(log.serve)`` (the cluster
    link does, :meth:`~triograph.core.engine.shared_cluster.SharedLink.serve`)."""

    def __init__(
        self, cluster: Cluster, limit: int, limit_bytes: int = DEFAULT_LIMIT_BYTES
    ) -> None:
        self.cluster = cluster
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._watched: dict[str, _Watched] = {}
        self._behind: set[str] = set()
        self._wake = trio.Event()
        self._closed = False

    # -- ThreadEventLog -----------------------------------------------------------------------

    def publish(self, thread_id: str, name: str, params: bytes) -> None:
        """Nothing: the event is among its run's stream events, which the run's owner
        stores (and numbers in the thread's log) with the next flush, then :meth:`stored`."""

    def run_created(self, thread_id: str) -> None:
        """Nothing: a reader without ``since`` asks the database where the latest run
        starts (:meth:`~triograph.core.infra.storage.Cluster.thread_run_start`)."""

    async def subscribe(
        self, thread_id: str, accepts: Callable[[str], bool], since: int | None
    ) -> Subscription:
        watched = self._watched.get(thread_id)
        if watched is None:
            watched = self._watched[thread_id] = _Watched(self, thread_id)
        watched.joining += 1
        try:
            # in the lock: the subscribers of a thread are answered in the order they came
            # (the SDK's streams rotate, and it waits forever for one answered after its
            # successor); and one reader of the database at a time
            async with watched.lock:
                after = (
                    since if since is not None else await self.cluster.thread_run_start(thread_id)
                )
                start = after if watched.last is None else min(after, watched.last)
                head, rows = await self.cluster.thread_events(thread_id, after=start)
                events = [_event(*row) for row in rows]
                if watched.last is None:
                    watched.last = head
                else:  # what the others lack goes to them first
                    watched.deliver(events)
                    watched.last = max(watched.last, head)
                replay = [e for e in events if e.seq > after]
                sub = Subscription(
                    watched,
                    self.limit + len(replay),
                    accepts,
                    limit_bytes=self.limit_bytes + sum(len(e.data) for e in replay),
                )
                sub.preload(replay)
                if self._closed or watched.ended:
                    sub.ended = True
                else:
                    watched._subs.add(sub)
        finally:
            watched.joining -= 1
            if not watched.subscriber_count and not watched.joining:
                self._unwatch(watched)
        return sub

    def forget(self, thread_ids: Iterable[str]) -> None:
        """The threads were deleted (their rows went with them): their readers here end."""
        for thread_id in thread_ids:
            watched = self._watched.pop(thread_id, None)
            if watched is not None:
                watched.ended = True
                watched.end()

    def close(self) -> None:
        self._closed = True
        for watched in list(self._watched.values()):
            watched.end()

    # -- what the cluster says ----------------------------------------------------------------

    def stored(self, appended: ThreadAppend, events: Iterable[tuple[str, bytes]]) -> None:
        """This process stored a batch of protocol events (``events``: name and params, in
        order) as ``appended`` says: its readers here get them now if nothing is missing
        before them, else the thread is read from the database."""
        watched = self._watched.get(appended.thread_id)
        if watched is None:
            return
        first = appended.last - appended.count + 1
        if watched.last is not None and watched.last + 1 == first and not watched.lock.locked():
            seqs = range(first, appended.last + 1)
            watched.deliver(
                _event(seq, appended.ms, name, params)
                for seq, (name, params) in zip(seqs, events, strict=True)
            )
        elif watched.last is None or appended.last > watched.last:
            self._fall_behind(appended.thread_id)

    def announced(self, thread_id: str, seq: int) -> None:
        """Another process stored the thread's events up to ``seq``."""
        watched = self._watched.get(thread_id)
        if watched is not None and (watched.last is None or seq > watched.last):
            self._fall_behind(thread_id)

    def _fall_behind(self, thread_id: str) -> None:
        self._behind.add(thread_id)
        self._wake.set()

    def _unwatch(self, watched: _Watched) -> None:
        if self._watched.get(watched.thread_id) is watched:
            del self._watched[watched.thread_id]

    # -- catching up --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read what the watched threads lack, and poll their last numbers, until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._poll)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                behind, self._behind = self._behind, set()
                for thread_id in behind:
                    try:
                        await self._catch_up(thread_id)
                    except Exception:
                        log.exception("reading the protocol log of thread %s failed", thread_id)

    async def _catch_up(self, thread_id: str) -> None:
        watched = self._watched.get(thread_id)
        if watched is None:
            return
        async with watched.lock:
            if watched.last is None:  # its first subscriber is reading it
                return
            head, rows = await self.cluster.thread_events(thread_id, after=watched.last)
            if head < watched.last:  # deleted and made again: its readers start over
                self.forget([thread_id])
                return
            watched.deliver(_event(*row) for row in rows)
            watched.last = max(watched.last, head)

    async def _poll(self) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            if not self._watched:
                continue
            try:
                heads = await self.cluster.thread_heads(list(self._watched))
            except Exception:
                log.exception("polling the protocol logs of watched threads failed")
                continue
            for thread_id, watched in list(self._watched.items()):
                head = heads.get(thread_id, 0)
                if watched.last is not None and head != watched.last:
                    self._fall_behind(thread_id)
