"""Thread streams: everything happening on a thread, for ``GET /threads/{id}/stream``.

The supervisor publishes every event of every run here, plus a ``metadata``
``{"status": "run_done", "run_id": ...}`` event when a run ends; the thread service
publishes ``state_update`` events. A subscriber picks what it wants with the thread stream
modes of contract §6.10: ``run_modes`` (every run event and ``run_done``), ``lifecycle``
(only the ``metadata`` events: each run's first event and its ``run_done``) and
``state_update``.

Costs: a thread that nobody watches has no :class:`ThreadStream` at all, so publishing to it
is one dict lookup. The first subscriber creates the thread's stream; from then on every
event is kept in a log bounded by :data:`LOG_CAP` events, :data:`LOG_BYTES` bytes and
:data:`LOG_TTL` seconds, so a client that reconnects with ``Last-Event-ID`` gets exactly
what it missed. A stream without subscribers is forgotten :data:`LOG_TTL` seconds after its
last subscriber left (by :meth:`ThreadStreams.sweep`).

Ids are ``<unix ms>-<seq>``, strictly increasing per thread, also across a forgotten and
recreated stream (its millisecond part is later). ``Last-Event-ID`` takes the Redis stream
id syntax the official server validates: ``<ms>-<seq>``, ``<ms>`` or ``<ms>-*`` (the whole
millisecond was seen), or ``-`` (replay everything kept).
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from triograph.core.engine.streams import DEFAULT_LIMIT_BYTES, Broadcast, Event, Subscription
from triograph.core.infra import encoding
from triograph.core.infra.errors import InvalidRequest

if TYPE_CHECKING:
    from triograph.core.infra.context import Core

#: events a thread's log keeps at most
LOG_CAP = 1000
#: bytes of event data a thread's log keeps at most
LOG_BYTES = 8 * 1024 * 1024
#: seconds an event stays in the log, and a stream without subscribers stays alive
LOG_TTL = 300.0
#: seconds between sweeps of streams nobody watches any more
SWEEP_INTERVAL = 30.0

MODES = ("run_modes", "lifecycle", "state_update")
STATE_UPDATE = "state_update"
_EVENT_ID = re.compile(r"^(\d+)(?:-(\d+|\*))?$")

EventKey = tuple[float, float]


def parse_last_event_id(value: str | None) -> EventKey | None:
    """``Last-Event-ID`` as a ``(ms, seq)`` key; None when absent. Bad syntax is a 422."""
    if value is None:
        return None
    if value == "-":
        return (-1, -1)
    match = _EVENT_ID.match(value)
    if match is None:
        raise InvalidRequest(
            f"Invalid last-event-id: {value!r} must be a valid Redis stream ID "
            "(<ms>-<seq>, <ms>, <ms>-* or -)"
        )
    ms, seq = match.groups()
    return (int(ms), math.inf if seq in (None, "*") else int(seq))


def _key(event: Event) -> EventKey:
    ms, _, seq = event.id.partition("-")
    return (int(ms), int(seq))


def mode_filter(modes: Iterable[str] | None) -> Callable[[str], bool]:
    """Which event names the thread stream modes ``modes`` pass (default ``run_modes``)."""
    wanted = set(modes or ("run_modes",))
    for mode in wanted:
        if mode not in MODES:
            raise InvalidRequest(f"Invalid stream mode: {mode}; allowed: {', '.join(MODES)}")
    runs, lifecycle, state = (m in wanted for m in MODES)

    def accepts(name: str) -> bool:
        if name == STATE_UPDATE:
            return state
        return runs or (lifecycle and name == "metadata")

    return accepts


class ThreadStream(Broadcast):
    """One watched thread: live subscribers and the bounded, time-limited log."""

    def __init__(self, limit: int, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        super().__init__(limit, limit_bytes)
        #: (expiry time, event), oldest first
        self.log: deque[tuple[float, Event]] = deque()
        self._bytes = 0
        self.idle_since: float | None = None

    def publish(self, name: str, data: bytes) -> None:
        event = self._next(name, data)
        self.log.append((trio.current_time() + LOG_TTL, event))
        self._bytes += len(data)
        self._trim()
        self._deliver(event)

    def _trim(self) -> None:
        t = trio.current_time()
        log = self.log
        while log and (len(log) > LOG_CAP or self._bytes > LOG_BYTES or log[0][0] <= t):
            self._bytes -= len(log.popleft()[1].data)

    def subscribe(self, accepts: Callable[[str], bool], after: EventKey | None) -> Subscription:
        sub = Subscription(self, self.limit, accepts, limit_bytes=self.limit_bytes)
        if after is not None:
            self._trim()
            sub.preload(event for _, event in self.log if _key(event) > after)
        self._subs.add(sub)
        self.idle_since = None
        return sub

    def discard(self, sub: Subscription) -> None:
        super().discard(sub)
        if not self._subs and self.idle_since is None:
            self.idle_since = trio.current_time()

    def close(self) -> None:
        self._end_all()


class ThreadStreams:
    """The thread streams of one app; see the module docstring.

    Resource handling: :meth:`sweep` runs for the app's lifetime (in the supervisor's
    nursery) and forgets idle streams; :meth:`close` ends every subscription at shutdown,
    so long-lived SSE responses do not hold the server open.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self._streams: dict[str, ThreadStream] = {}
        self._closed = False

    def publish(self, thread_id: str, name: str, data: bytes) -> None:
        """Deliver one event (``name``, compact JSON ``data``) to the thread's subscribers."""
        stream = self._streams.get(thread_id)
        if stream is not None:
            stream.publish(name, data)

    def run_done(self, thread_id: str, run_id: str) -> None:
        """A run of the thread ended (whatever its outcome): its ``run_done`` event."""
        stream = self._streams.get(thread_id)
        if stream is not None:
            stream.publish("metadata", encoding.dumps({"status": "run_done", "run_id": run_id}))

    def subscribe(
        self, thread_id: str, *, accepts: Callable[[str], bool], after: EventKey | None
    ) -> Subscription:
        """A new reader of the thread: the kept events after ``after``, then live ones.

        Args:
            thread_id: an existing thread (the caller checked it).
            accepts: the filter of the reader's modes, from :func:`mode_filter`.
            after: a key from :func:`parse_last_event_id`, or None for live events only.
        """
        stream = self._streams.get(thread_id)
        if stream is None:
            settings = self.core.settings
            stream = ThreadStream(settings.subscriber_buffer, settings.subscriber_buffer_bytes)
            self._streams[thread_id] = stream
        sub = stream.subscribe(accepts, after)
        if self._closed:  # it drains what was kept, then ends
            stream.discard(sub)
            sub.ended = True
        return sub

    def subscriber_count(self, thread_id: str) -> int:
        stream = self._streams.get(thread_id)
        return 0 if stream is None else stream.subscriber_count

    @property
    def subscribers(self) -> int:
        """Readers of every thread stream."""
        return sum(stream.subscriber_count for stream in self._streams.values())

    def _forget_idle(self) -> None:
        expired = trio.current_time() - LOG_TTL
        for thread_id, stream in list(self._streams.items()):
            if stream.idle_since is not None and stream.idle_since <= expired:
                del self._streams[thread_id]

    async def sweep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Forget streams nobody has watched for :data:`LOG_TTL` seconds, until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            self._forget_idle()

    def close(self) -> None:
        """Server shutdown: end every subscription; later subscribers end at once."""
        self._closed = True
        for stream in self._streams.values():
            stream.close()
