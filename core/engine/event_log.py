"""The thread-centric protocol's event log: every protocol event of a thread, numbered.

The protocol channels (``lifecycle``, ``values``, ``messages``, ...) are stream-mode emitters
(``plugins/protocol_channels.py``); their events are named ``protocol|<channel>|<ns>...``
(see :func:`protocol_name`) and carry the protocol's ``params`` object. The supervisor hands
each such event of a run to :meth:`ThreadEventLog.publish`, which gives it the thread's next
``seq`` and an ``event_id`` and keeps it: a stream opened on the thread replays what is
kept, then follows live runs; ``since`` skips what the client already has. The sequence is
the thread's, not the connection's, so every connection numbers an event alike and a client
resumes with ``since`` on any connection.

:class:`ThreadEventLog` is the interface; :class:`MemoryEventLog` keeps each thread's log in
this process, bounded by :data:`LOG_CAP` events and :data:`LOG_BYTES` bytes (the official
server keeps 10,000 per run): the log of the memory and file backends, which one process
serves. On a backend shared by processes (Postgres, whose storage has a ``cluster``),
:class:`~triograph.core.engine.shared_event_log.SharedEventLog` implements the same
interface over the stored run events, with the same caps: a stream opened on one process
follows a run executing on another.

Filters (:class:`ProtocolFilter`) follow the protocol's subscription: channels, namespace
prefixes (a prefix segment without ``:`` also matches a segment whose ``:<task id>`` it
omits) and a depth below the prefix.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs

from triograph.core.engine.streams import DEFAULT_LIMIT_BYTES, Broadcast, Event, Subscription
from triograph.core.infra.errors import InvalidRequest

#: events a thread's log keeps at most
LOG_CAP = 10_000
#: bytes of event data a thread's log keeps at most
LOG_BYTES = 16 * 1024 * 1024
#: the prefix of every protocol event's name in a run's stream
PREFIX = "protocol|"
#: channels a subscription may name (``custom:<name>`` too)
CHANNELS = (
    "values",
    "updates",
    "messages",
    "tools",
    "lifecycle",
    "input",
    "checkpoints",
    "tasks",
    "custom",
)
#: the envelope's ``method`` of each channel whose method is not the channel's name
METHODS = {"input": "input.requested"}
#: event names a subscription's filter remembers its verdict on (then it starts over)
VERDICTS = 1024


def protocol_name(channel: str, namespace: Sequence[str]) -> str:
    """The run-stream name of a protocol event: ``protocol|<channel>|<ns segment>...``
    (``channel`` is ``custom:<name>`` for a named custom event)."""
    return "|".join(("protocol", channel, *namespace))


@functools.lru_cache(maxsize=4096)
def split_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``(channel, namespace)`` of a name made by :func:`protocol_name` (the few names of a
    thread's events repeat for every token: each is split once)."""
    _, channel, *namespace = name.split("|")
    return channel, tuple(namespace)


@functools.lru_cache(maxsize=64)
def method_of(channel: str) -> str:
    """The envelope's ``method``: ``custom:x`` is ``custom``, ``input`` is ``input.requested``."""
    base = channel.partition(":")[0]
    return METHODS.get(base, base)


@attrs.frozen
class ProtocolFilter:
    """A subscription's filter: ``channels``, ``namespaces`` (prefixes; None: all), ``depth``."""

    channels: frozenset[str]
    namespaces: tuple[tuple[str, ...], ...] | None = None
    depth: int | None = None
    #: what :meth:`accepts` said of each event name (a thread's few names repeat per token)
    _verdicts: dict[str, bool] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    @classmethod
    def parse(cls, params: Any) -> ProtocolFilter:
        """From a subscription's JSON params; a bad field is an :class:`InvalidRequest`
        naming it and what is allowed."""
        if not isinstance(params, dict):
            raise InvalidRequest("params must be an object")
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise InvalidRequest("channels must be a non-empty array of channel names")
        for channel in channels:
            if not isinstance(channel, str) or (
                channel not in CHANNELS and not channel.startswith("custom:")
            ):
                raise InvalidRequest(
                    f"channels: {channel!r} is not a channel; allowed: "
                    f"{', '.join(CHANNELS)} or custom:<name>"
                )
        namespaces = params.get("namespaces")
        if namespaces is not None:
            if not isinstance(namespaces, list) or not all(
                isinstance(ns, list) and all(isinstance(s, str) for s in ns) for ns in namespaces
            ):
                raise InvalidRequest("namespaces must be an array of arrays of strings")
            namespaces = tuple(tuple(ns) for ns in namespaces)
        depth = params.get("depth")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
            raise InvalidRequest("depth must be a non-negative integer")
        if depth is not None and depth < 0:
            raise InvalidRequest("depth must be a non-negative integer")
        return cls(frozenset(channels), namespaces, depth)

    def accepts(self, name: str) -> bool:
        """Whether the event named ``name`` (:func:`protocol_name`) passes."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            if len(self._verdicts) >= VERDICTS:
                self._verdicts.clear()
            verdict = self._verdicts[name] = self._judge(name)
        return verdict

    def _judge(self, name: str) -> bool:
        channel, namespace = split_name(name)
        if channel not in self.channels:
            base = channel.partition(":")[0]
            if base != "custom" or "custom" not in self.channels:
                return False
        if self.namespaces is None:
            return self.depth is None or len(namespace) <= self.depth
        return any(self._under(prefix, namespace) for prefix in self.namespaces)

    def _under(self, prefix: tuple[str, ...], namespace: tuple[str, ...]) -> bool:
        if len(namespace) < len(prefix):
            return False
        for want, have in zip(prefix, namespace, strict=False):
            if want != have and (":" in want or have.partition(":")[0] != want):
                return False
        return self.depth is None or len(namespace) - len(prefix) <= self.depth


def parse_since(value: Any) -> int | None:
    """``since``: a non-negative integer or absent (a bool is not an integer)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest("since must be a non-negative integer")
    return value


class ThreadEventLog(Protocol):
    """Where protocol events of threads are numbered, kept and delivered."""

    def publish(self, thread_id: str, name: str, params: bytes) -> None:
        """Number, keep and deliver one event; ``params`` is its encoded ``params``."""
        ...

    async def subscribe(
        self, thread_id: str, accepts: Callable[[str], bool], since: int | None
    ) -> Subscription:
        """A reader of the thread: every kept event after ``since`` that ``accepts`` passes
        (without ``since``: from the start of the thread's latest run), then live ones; it
        ends only at shutdown or if it falls behind."""
        ...

    def run_created(self, thread_id: str) -> None:
        """A run of the thread was created: a reader without ``since`` starts with it (the
        clients hydrate what came before from the thread's state, and a finished run's
        terminal event must not end their view of this one)."""
        ...

    def forget(self, thread_ids: Iterable[str]) -> None:
        """The threads were deleted: their events go."""
        ...

    def close(self) -> None:
        """Server shutdown: end every subscription."""
        ...


@functools.lru_cache(maxsize=4096)
def _method_bytes(name: str) -> bytes:
    return method_of(split_name(name)[0]).encode()


def envelope(seq: int, event_id: str, name: str, params: bytes) -> bytes:
    """The protocol's event JSON, built around the already encoded ``params``."""
    return b'{"type":"event","event_id":"%s","seq":%d,"method":"%s","params":%s}' % (
        event_id.encode(),
        seq,
        _method_bytes(name),
        params,
    )


def sse_frame(event: Event) -> bytes:
    """``event: <method>``, ``data: <envelope>``, ``id: <seq>``: what the official server sends."""
    return b"event: %s\r\ndata: %s\r\nid: %d\r\n\r\n" % (
        _method_bytes(event.name),
        event.data,
        event.seq,
    )


class _ThreadLog(Broadcast):
    def __init__(self, limit: int, limit_bytes: int) -> None:
        super().__init__(limit, limit_bytes)
        self._seq = 1  # the protocol's sequence starts at 1: ``since: 0`` skips nothing
        self.log: deque[Event] = deque()
        self._bytes = 0
        #: the last seq before the thread's latest run was created
        self.run_start = 0

    def publish(self, name: str, params: bytes) -> None:
        ms = max(int(time.time() * 1000), self._last_ms)
        self._last_ms = ms
        seq = self._seq
        self._seq += 1
        event_id = f"{ms}-{seq}"
        event = Event(seq=seq, id=event_id, name=name, data=envelope(seq, event_id, name, params))
        self.log.append(event)
        self._bytes += len(event.data)
        while len(self.log) > LOG_CAP or self._bytes > LOG_BYTES:
            self._bytes -= len(self.log.popleft().data)
        self._deliver(event)

    def subscribe(self, accepts: Callable[[str], bool], since: int | None) -> Subscription:
        # a replay may be the whole log: the queue holds it plus the usual live margin
        sub = Subscription(
            self, self.limit + len(self.log), accepts, limit_bytes=self.limit_bytes + self._bytes
        )
        after = self.run_start if since is None else since
        sub.preload(e for e in self.log if e.seq > after)
        self._subs.add(sub)
        return sub

    def close(self) -> None:
        self._end_all()


class MemoryEventLog:
    """:class:`ThreadEventLog` in this process's memory. A thread's log lives as long as
    the process (its counter, so that ``seq`` never goes back; its events up to the caps)."""

    def __init__(self, limit: int, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self._logs: dict[str, _ThreadLog] = {}
        self._closed = False

    def _log(self, thread_id: str) -> _ThreadLog:
        log = self._logs.get(thread_id)
        if log is None:
            log = self._logs[thread_id] = _ThreadLog(self.limit, self.limit_bytes)
        return log

    def publish(self, thread_id: str, name: str, params: bytes) -> None:
        self._log(thread_id).publish(name, params)

    async def subscribe(
        self, thread_id: str, accepts: Callable[[str], bool], since: int | None
    ) -> Subscription:
        sub = self._log(thread_id).subscribe(accepts, since)
        if self._closed:
            sub._end()
        return sub

    def run_created(self, thread_id: str) -> None:
        log = self._log(thread_id)
        log.run_start = log._seq - 1

    def forget(self, thread_ids: Iterable[str]) -> None:
        """The threads were deleted: their logs go (a new thread of the same id starts over)."""
        for thread_id in thread_ids:
            log = self._logs.pop(thread_id, None)
            if log is not None:
                log.close()

    def close(self) -> None:
        self._closed = True
        for log in self._logs.values():
            log.close()
