"""Per-run event streams: the log, live subscribers, and SSE framing.

:class:`Broadcast` holds what every event stream shares (ids, bounded live subscribers);
:class:`RunStream` adds a run's log, and ``triograph.core.engine.thread_streams`` a thread's.

A :class:`RunStream` is written by exactly one task (the run's) and read by any number of
subscribers (SSE responses, join streams, waits). Every event gets a strictly increasing
sequence number and an id ``<unix ms>-<seq>``, so a reconnect with ``Last-Event-ID``
replays exactly the events after it, never skipping two events of the same millisecond
(the official server does, contract §13.4).

Memory is bounded per subscriber: each one has a queue of at most ``limit`` events and
``limit_bytes`` bytes of event data; a subscriber that falls further behind is dropped (its
SSE response ends, and a client of a resumable run reconnects with its last id and loses
nothing). A subscriber whose reader went away lets go of its queue at once.

The log: a resumable run keeps every event, as it promises replay. Any other run keeps its
first ``log_cap`` events, so that the *first* reader of a background run (``POST /runs``
then ``join_stream``) sees the run from its ``metadata`` event on, however quickly the run
started, as a queue would deliver it; the official server only does so when its worker
happens to be slow. Later joiners of a non-resumable run get live events only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import trio

HEARTBEAT = b": heartbeat\r\n\r\n"
#: seconds a heartbeat may come late, so that one wake-up of the timer serves many streams
HEARTBEAT_SLACK = 0.05
#: bytes of event data a subscriber may have queued before it is dropped (by default)
DEFAULT_LIMIT_BYTES = 1024 * 1024


@attrs.define(slots=True)
class Event:
    """One event of a stream, never changed once made (not frozen: a frozen class's
    ``__init__`` sets each field through ``object.__setattr__``, twice the cost, and one is
    made per streamed token)."""

    seq: int
    id: str
    name: str
    data: bytes  # compact JSON

    def frame(self, *, with_id: bool) -> bytes:
        """The SSE frame: ``event``, ``data``, optional ``id`` lines, CRLF separated."""
        head = b"event: " + self.name.encode() + b"\r\ndata: " + self.data + b"\r\n"
        if with_id:
            head += b"id: " + self.id.encode() + b"\r\n"
        return head + b"\r\n"


def parse_event_id(value: str | None) -> int | None:
    """The sequence number in ``<ms>-<seq>``; ``-`` means "from the start" (-1)."""
    if value is None or value == "":
        return None
    head, _, tail = value.rpartition("-")
    if not (head.isdigit() and tail.isdigit()):  # "-", "-1", garbage: from the start
        return -1
    return int(tail)


def join_filter(modes: Iterable[str] | None) -> Callable[[str], bool] | None:
    """The join-stream filter of contract §6.9 for the ``stream_mode`` of a join (None: all).

    An event passes if its base name (before ``|``) was asked for, or if ``messages`` or
    ``messages-tuple`` was and the event is one of the ``messages*`` events.
    """
    wanted = frozenset(modes or ())
    if not wanted:
        return None
    messages = bool(wanted & {"messages", "messages-tuple"})

    def accepts(name: str) -> bool:
        base = name.split("|", 1)[0]
        return base in wanted or (messages and base.startswith("messages"))

    return accepts


class Subscription:
    """One reader of a :class:`Broadcast`; iterate it with :meth:`receive`.

    Its queue holds at most ``limit`` events and ``limit_bytes`` bytes of event data (one
    event, however large, always fits an empty queue); a subscriber that falls further
    behind is dropped: it gets no new event, drains what it has, then ends. :meth:`close`
    (the reader went away) lets go of everything queued at once.
    """

    def __init__(
        self,
        stream: Broadcast,
        limit: int,
        accepts: Callable[[str], bool] | None = None,
        *,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
    ) -> None:
        self._stream = stream
        self._limit = limit
        self._limit_bytes = limit_bytes
        self._accepts = accepts
        #: a list, not a deque: an empty deque is ~0.7 KiB, for as long as the stream is open
        self._queue: list[Event] = []
        self._bytes = 0
        #: the reader's task while it waits in :meth:`receive`: woken directly, without an
        #: Event (~0.5 KiB with the frame of its wait, for an open stream's whole life)
        self._waiter: trio.lowlevel.Task | None = None
        self.ended = False
        self.dropped = False
        #: a heartbeat is due (set by :class:`Heartbeats`, cleared by the reader)
        self.beat = False
        #: the reader went away (:meth:`close`)
        self.closed = False

    def accepts(self, name: str) -> bool:
        return self._accepts is None or self._accepts(name)

    @property
    def queued(self) -> int:
        """Events waiting to be received (after a subscribe: the replay)."""
        return len(self._queue)

    def preload(self, events: Iterable[Event]) -> None:
        """Queue stored events (a replay) before any live one; the filter applies."""
        for event in events:
            if self.accepts(event.name):
                self._queue.append(event)
                self._bytes += len(event.data)

    def _push(self, event: Event) -> None:
        if not self.accepts(event.name):
            return
        size = len(event.data)
        if len(self._queue) >= self._limit or (
            self._queue and self._bytes + size > self._limit_bytes
        ):
            self.dropped = True
            self._end()
            return
        self._queue.append(event)
        self._bytes += size
        self._notify()

    def _end(self) -> None:
        self.ended = True
        self._stream.discard(self)
        self._notify()

    def _notify(self) -> None:
        if self._waiter is not None:
            trio.lowlevel.reschedule(self._waiter)
            self._waiter = None

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None  # the reader was cancelled while it waited
        return trio.lowlevel.Abort.SUCCEEDED

    def poke(self) -> None:
        """A heartbeat is due: :meth:`receive` returns (``[]`` if nothing is queued)."""
        self.beat = True
        self._notify()

    async def receive(self, max_bytes: int | None = None) -> list[Event]:
        """The queued events (at least one; the oldest ones up to ``max_bytes`` of data if
        given), or ``[]`` once the stream has ended or a heartbeat is due (:attr:`beat`)."""
        while not self._queue:
            if self.ended or self.beat:
                return []
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort)
        queue = self._queue
        if max_bytes is None or self._bytes <= max_bytes:
            self._queue, self._bytes = [], 0
            return queue
        count, taken = 0, 0
        while count < len(queue) and (not count or taken + len(queue[count].data) <= max_bytes):
            taken += len(queue[count].data)
            count += 1
        events = queue[:count]
        del queue[:count]
        self._bytes -= taken
        return events

    def close(self) -> None:
        """The reader is gone: leave the stream and drop what was queued for it."""
        self.closed = True
        self._stream.discard(self)
        self._queue = []
        self._bytes = 0


class Heartbeats:
    """The heartbeat timer of every open SSE response: pokes each subscription added here
    every ``interval`` seconds (give or take :data:`HEARTBEAT_SLACK`) until it is closed.

    One task for all rather than a timer per response: a timer around each wait for events
    costs a cancel scope per wait and an unwinding ``Cancelled`` per heartbeat, which at ten
    thousand open streams was a sizeable share of the server's time. Subscriptions are due
    in the order they were added (the interval is the same for all), so the schedule is a
    queue: each wake-up pokes the ones due, and puts them back at the end.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._due: deque[tuple[float, Subscription]] = deque()
        self._added = trio.Event()

    def add(self, sub: Subscription) -> None:
        """Heartbeats for ``sub`` from ``interval`` seconds from now until it is closed."""
        self._due.append((trio.current_time() + self.interval, sub))
        self._added.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poke what is due, until cancelled (the app's lifespan owns this task)."""
        task_status.started()
        due = self._due
        while True:
            if not due:
                self._added = trio.Event()
                await self._added.wait()
                continue
            await trio.sleep_until(due[0][0] + HEARTBEAT_SLACK)
            now = trio.current_time()
            while due and due[0][0] <= now:
                at, sub = due.popleft()
                if not sub.closed:
                    sub.poke()
                    due.append((max(at + self.interval, now), sub))


class Broadcast:
    """Event ids and live subscribers, shared by run and thread streams.

    Ids are ``<unix ms>-<seq>``: ``seq`` counts every event of the stream and the
    millisecond part never goes back, so ids increase strictly in both parts. Publishing
    never blocks: a subscriber whose queue is full (``limit`` events or ``limit_bytes``
    bytes) is dropped.
    """

    def __init__(self, limit: int, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._subs: set[Subscription] = set()
        self._seq = 0
        self._last_ms = 0

    def _next(self, name: str, data: bytes) -> Event:
        ms = max(int(time.time() * 1000), self._last_ms)
        self._last_ms = ms
        event = Event(seq=self._seq, id=f"{ms}-{self._seq}", name=name, data=data)
        self._seq += 1
        return event

    def _deliver(self, event: Event) -> None:
        for sub in list(self._subs):
            sub._push(event)

    def _end_all(self) -> None:
        for sub in list(self._subs):
            sub._end()

    def discard(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)


class RunStream(Broadcast):
    """The events of one run; see the module docstring."""

    def __init__(
        self,
        run_id: str,
        *,
        resumable: bool,
        limit: int = 4096,
        limit_bytes: int = DEFAULT_LIMIT_BYTES,
        log_cap: int = 10_000,
    ) -> None:
        super().__init__(limit, limit_bytes)
        self.run_id = run_id
        self.resumable = resumable
        self.log_cap = log_cap
        self.log: list[Event] = []
        self.log_complete = True
        self.ever_subscribed = False
        self.closed = False

    def publish(self, name: str, data: bytes) -> Event:
        """Append one event and hand it to every live subscriber (never blocks)."""
        event = self._next(name, data)
        if self.resumable:
            self.log.append(event)
        elif self.log_complete:
            if len(self.log) < self.log_cap:
                self.log.append(event)
            else:
                self.log, self.log_complete = [], False
        self._deliver(event)
        return event

    def number(self) -> int:
        """The sequence number of an event the run's stream does not carry (one kept
        elsewhere, but stored with the run's events)."""
        seq = self._seq
        self._seq += 1
        return seq

    def subscribe(
        self, *, after: int | None = None, modes: Iterable[str] | None = None
    ) -> Subscription:
        """A new reader: stored events after ``after`` first (resumable runs), then live ones.

        Args:
            after: a sequence number from :func:`parse_event_id`; None means live only,
                except for the stream's first reader, who gets everything kept so far.
            modes: the join filter (``stream_mode`` of a join), or None for everything.
        """
        sub = Subscription(self, self.limit, join_filter(modes), limit_bytes=self.limit_bytes)
        if after is None and not self.ever_subscribed and self.log_complete:
            after = -1  # the first reader gets the run from its start
        if after is not None and (self.resumable or self.log_complete):
            sub.preload(e for e in self.log if e.seq > after)
        self.claim()  # later readers of a non-resumable run get live events only
        if self.closed:
            sub.ended = True
        else:
            self._subs.add(sub)
        return sub

    def continue_at(self, seq: int) -> None:
        """Number the next event ``seq`` or more: a retried run goes on after the events its
        earlier attempt stored, a follower of a remote run takes the stored numbers."""
        self._seq = max(self._seq, seq)

    def claim(self) -> None:
        """A consumer that needs no events (``/wait``) took the run: keep no replay log."""
        self.ever_subscribed = True
        if not self.resumable:
            self.log, self.log_complete = [], False

    def close(self) -> None:
        """No more events: every subscriber ends after draining what it has."""
        self.closed = True
        self._end_all()
