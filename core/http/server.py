"""Serving the app: Hypercorn's Trio worker with an accept loop that keeps up with bursts.

Hypercorn's own worker (``hypercorn.trio.run.worker_serve``) accepts through
``trio.serve_listeners``: one connection per turn of Trio's scheduler. A turn runs every
task that is ready, so while thousands of connections are being served a turn takes long
and the kernel's accept queue (capped by ``net.core.somaxconn``, 4096 by default) fills
up: the kernel then drops new handshakes, and resets connections it answered with SYN
cookies. A thousand SSE clients connecting at once lost a tenth of their connections that
way. :func:`serve` is the same worker (Hypercorn's lifespan, connection and protocol
classes, its graceful shutdown) around an accept loop of ours that takes every connection
the kernel has queued each time the listening socket is ready, and hands each to its own
task in the server nursery.

Serving a connection until its request is queued for admission (``core/http/admission.py``)
costs a few turns and ~0.3 ms; ten thousand clients connecting at once made every turn run
thousands of those, and the requests already admitted advanced a step per long turn: the
first of 10,000 streams opened after ~4 s, once all were queued. So while the server is
*swamped* (``serve``'s ``swamped()``: the app's intake holds more requests that arrived
recently than it answers at once), connections are still accepted at once (the kernel's
queue never fills) but held, in arrival order, and served once it is not, at most
:data:`START_BATCH` per turn: the requests in progress get the turns first. bench
``streams`` (10,000 at once): the first opened at 0.19 s, 1,000 at ~2.1 s (were ~4 and ~6).

Each connection is a :class:`Connection`: Hypercorn's ``TCPServer``, which writes every piece
of a response (the head, each body part, the end) with its own ``send``; on a loopback or LAN
connection each ``send`` is also a packet and a wake-up of the peer, a tenth of the CPU of a
small run's request. Inside :func:`one_write` (the transport wraps a response whose length is
known, see ``core/http/transport.py``) its writes are gathered and go out as one.

A request's app runs in the task that read the request, and the connection's reading goes
on in a new task (:meth:`Connection._read_requests`): Hypercorn starts each app in a task of
its own, whose first step waits for the next turn of the scheduler, behind every task that
is ready, and under load (a chat run's tokens) a turn lasts milliseconds. The task count is
the same: one per request.

Accept errors that mean "out of resources" (no descriptors, no memory) are logged and
retried after :data:`BACKOFF` seconds, as ``trio.serve_listeners`` does; others stop the
server. :func:`raise_open_file_limit` lifts the process's soft limit on descriptors to its
hard limit (often 1,024 and 524,288): one descriptor per connection.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import logging
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import (
    ShutdownError,
    parse_socket_addr,
    raise_shutdown,
    repr_socket_addr,
    wrap_app,
)

from triograph.core.http.sockets import SocketStream
from triograph.core.infra import heap
from triograph.core.infra.intake import Intake

log = logging.getLogger("triograph.server")

#: connections that start being served per turn of the scheduler at most, while more wait
START_BATCH = 64
#: seconds between two looks at whether the server is still swamped, connections held
SWAMPED_POLL = 0.005
#: seconds before accepting again after the process ran out of descriptors or memory
BACKOFF = 0.1
#: accept errors that mean a resource ran out: wait and retry
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: accept errors about one connection that went away before it was accepted
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})
#: the scope key of a request's :class:`RequestChannel` (requests served by :func:`serve`)
REQUEST_CHANNEL = "triograph.request_channel"


class RequestChannel:
    """The messages Hypercorn puts for one request's app (its body, ``http.disconnect``),
    which the app receives in order: what Hypercorn's Trio memory channel of
    ``max_app_queue_size`` messages did (a sender waits while that many are unread), in a
    list and, only once someone waits, parking lots; the channel was ~1.4 KiB, held as
    long as the request lasts (an open stream's whole life; bench/stream_memory.py).

    It also calls :attr:`callback` (once) when Hypercorn tells the request that its client
    left: an app that has read the whole body need not keep a task waiting on the channel
    to learn it (see ``core/http/app.py``).

    Neither side yields to the scheduler unless it has to wait (a Trio memory channel
    always does): each such turn is another wait behind every other ready task before a
    request gets its first answer, ~1 ms per turn under load. A cancelled caller still gets
    ``Cancelled`` at once; the connection's reads, which always yield, pace the messages.
    """

    __slots__ = ("_limit", "_messages", "_receivers", "_senders", "callback", "on_full")

    def __init__(self, limit: int) -> None:
        self._messages: list[dict[str, Any]] = []
        self._limit = limit
        self._receivers: trio.lowlevel.ParkingLot | None = None
        self._senders: trio.lowlevel.ParkingLot | None = None
        self.callback: Callable[[], None] | None = None
        #: called before a sender waits for room: the app that would make it may not have
        #: started yet (see :class:`_TaskGroup`)
        self.on_full: Callable[[], None] | None = None

    @property
    def pending(self) -> bool:
        """Messages are waiting to be received."""
        return bool(self._messages)

    @property
    def body_in(self) -> bool:
        """The request body's last part is among the messages waiting to be received."""
        return any(
            m["type"] == "http.request" and not m.get("more_body", False) for m in self._messages
        )

    async def put(self, message: dict[str, Any]) -> None:
        """Hypercorn's ``app_put``: queue ``message``, waiting while the queue is full."""
        if message["type"] == "http.disconnect" and self.callback is not None:
            callback, self.callback = self.callback, None
            callback()
        await trio.lowlevel.checkpoint_if_cancelled()
        while len(self._messages) >= self._limit:
            if self.on_full is not None:
                self.on_full()
            if self._senders is None:
                self._senders = trio.lowlevel.ParkingLot()
            await self._senders.park()
        self._messages.append(message)
        if self._receivers:
            self._receivers.unpark()

    async def receive(self) -> dict[str, Any]:
        """The app's ``receive``: the oldest message, waiting for one if there is none."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._messages:
            if self._receivers is None:
                self._receivers = trio.lowlevel.ParkingLot()
            await self._receivers.park()
        message = self._messages.pop(0)
        if self._senders:
            self._senders.unpark()
        if self._messages and self._receivers:  # another receiver may take the next one
            self._receivers.unpark()
        return message


class _TaskGroup(TaskGroup):
    """Hypercorn's task group of a connection, whose requests each get a
    :class:`RequestChannel` (also ``scope[REQUEST_CHANNEL]``, before the app starts) and,
    with an :class:`~triograph.core.infra.intake.Intake`, count as taken in from the moment
    the connection read them (the channel is their key) until the app gives them back
    (``core/http/admission.py``) or ends.

    While the connection's reading task hands what it read to Hypercorn's protocol
    (:attr:`deferring`), an HTTP request's app is not started in a task of its own (its
    first step would wait a turn of the scheduler, behind every task that is ready): it is
    kept (:meth:`take`), and the reading task runs it once the protocol is done with what was
    read, handing the reading on to a new task (:meth:`Connection._read_requests`). Where the
    protocol would wait before it is done, for something only the app can bring about (a
    request pipelined behind this one waits for its response; a full channel waits for the
    app to receive), the app is started in a task of its own first (:meth:`start_kept`).
    """

    def __init__(self, intake: Intake | None) -> None:
        super().__init__()
        self._intake = intake
        #: the connection's reading task is handing what it read to the protocol
        self.deferring = False
        self._kept: tuple[Any, ...] | None = None

    async def spawn_app(self, app: Any, config: Config, scope: Any, send: Any) -> Any:
        channel = scope[REQUEST_CHANNEL] = RequestChannel(config.max_app_queue_size)
        intake = self._intake
        if intake is not None and scope["type"] == "http":
            # a request read in the same turn as others crowds in with them, even if the
            # app answers each within one step of its task (a background run's creation)
            intake.enter(channel)
        else:
            intake = None
        handling = (app, config, scope, channel, send, intake)
        if self.deferring and self._kept is None and scope["type"] == "http":
            self._kept = handling
            channel.on_full = self.start_kept
        else:
            self.spawn(_handle, *handling)
        return channel.put

    def start_kept(self) -> None:
        """Start the kept app, if any, in a task of its own."""
        handling = self.take()
        if handling is not None:
            self.spawn(_handle, *handling)

    def take(self) -> tuple[Any, ...] | None:
        """The arguments of :func:`_handle` for the app kept to run in the reading task, if
        any: it is then the caller's to run."""
        handling, self._kept = self._kept, None
        if handling is not None:
            handling[3].on_full = None
        return handling


class _CanRead:
    """Hypercorn's HTTP/1.1 ``can_read`` event: the protocol waits on it, while handling what
    the connection read, when a request was pipelined behind one whose response has not
    gone yet. That response is the kept app's (:class:`_TaskGroup`): it starts first."""

    __slots__ = ("_event", "_group")

    def __init__(self, event: Any, group: _TaskGroup) -> None:
        self._event = event
        self._group = group

    async def clear(self) -> None:
        await self._event.clear()

    async def wait(self) -> None:
        self._group.start_kept()
        await self._event.wait()

    async def set(self) -> None:
        await self._event.set()

    def is_set(self) -> bool:
        return bool(self._event.is_set())


async def _handle(
    app: Any,
    config: Config,
    scope: Any,
    channel: RequestChannel,
    send: Callable[[Any], Awaitable[None]],
    intake: Intake | None,
) -> None:
    """Hypercorn's ``_handle`` (runs the app, tells the connection it ended), which also
    drops the request from the intake if the app did not (a route outside the admission
    layer, or an error before it), and tells the connection once only."""
    try:
        await app(scope, channel.receive, send, trio.to_thread.run_sync, trio.from_thread.run)
    except trio.Cancelled:
        raise
    except BaseExceptionGroup as error:
        _, others = error.split(trio.Cancelled)
        if others is None:
            raise
        await config.log.exception("Error in ASGI Framework")
    except Exception:
        await config.log.exception("Error in ASGI Framework")
    finally:
        if intake is not None:
            intake.leave(channel)
        await send(None)


class _Writes:
    """What a connection was asked to write inside one :func:`one_write`."""

    __slots__ = ("chunks", "connection")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.connection: Connection | None = None

    async def flush(self) -> None:
        if self.connection is not None and self.chunks:
            data, self.chunks = b"".join(self.chunks), []
            await self.connection.write(data)


#: the writes being gathered by the current task (set by :func:`one_write`)
_gathering: ContextVar[_Writes | None] = ContextVar("triograph_gathering", default=None)


@contextlib.asynccontextmanager
async def one_write() -> AsyncIterator[None]:
    """Gather what the connection is asked to write while the block runs (in this task) and
    write it as one ``send`` when the block ends; any other event (the connection closing)
    writes what was gathered first. Outside a :class:`Connection` it changes nothing."""
    writes = _Writes()
    token = _gathering.set(writes)
    try:
        yield
    finally:
        _gathering.reset(token)
    await writes.flush()


class _IdleTimer:
    """Hypercorn's keep-alive timer of a connection (the interface of its ``TrioSingleTask``,
    which ``TCPServer`` calls ``restart`` when the connection becomes idle and ``stop`` when a
    request comes) without a task of its own: the :class:`IdleTimers` of the server keep every
    connection's deadline, and close the connection once ``keep_alive_timeout`` seconds of
    idleness have passed, or at the server's shutdown once it is idle, as Hypercorn's timer
    does. Hypercorn's timer is a task per request (a lock, a task and an unwinding cancellation
    each time); a task per connection, as this class had, is still ~2.3 KiB for as long as the
    connection is open, an open stream's whole life (bench/stream_memory.py)."""

    __slots__ = ("_connection", "_timers", "idle", "mark")

    def __init__(self, connection: Connection, timers: IdleTimers) -> None:
        self._connection = connection
        self._timers = timers
        self.idle = False
        #: moves each time the connection becomes idle or busy: a deadline scheduled with
        #: another mark is stale
        self.mark = 0

    async def restart(self, task_group: Any, action: Any) -> None:
        self.idle = True
        self.mark += 1
        if self._timers.terminated:
            self._connection.close_soon()
        else:
            self._timers.schedule(self)

    async def stop(self) -> None:
        self.idle = False
        self.mark += 1

    def expire(self, mark: int) -> None:
        """The deadline scheduled with ``mark`` has come: close if nothing happened since."""
        if self.idle and mark == self.mark:
            self._connection.close_soon()


class IdleTimers:
    """The keep-alive deadlines of every connection of a server, kept by one task
    (:meth:`serve`). Deadlines are scheduled ``timeout`` seconds after the moment a connection
    became idle, so in the order they come due: the schedule is a queue, and a deadline that
    went stale (the connection got a request, or became idle again) is skipped when it comes.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.terminated = False
        self._due: collections.deque[tuple[float, _IdleTimer, int]] = collections.deque()
        self._added: trio.Event | None = None

    def schedule(self, timer: _IdleTimer) -> None:
        self._due.append((trio.current_time() + self.timeout, timer, timer.mark))
        if self._added is not None:
            self._added.set()
            self._added = None

    async def serve(self) -> None:
        """Close the connections whose deadline came, until cancelled (at the shutdown)."""
        due = self._due
        while True:
            if not due:
                self._added = trio.Event()
                await self._added.wait()
                continue
            await trio.sleep_until(due[0][0])
            now = trio.current_time()
            while due and due[0][0] <= now:
                _, timer, mark = due.popleft()
                timer.expire(mark)

    def terminate(self) -> None:
        """The server is shutting down: close every idle connection now, and each of the
        others as soon as it is idle."""
        self.terminated = True
        due, self._due = self._due, collections.deque()
        for _, timer, mark in due:
            timer.expire(mark)


class Connection(TCPServer):
    """Hypercorn's connection, whose writes :func:`one_write` can gather, with a keep-alive
    timer that costs no task (:class:`_IdleTimer`). A connection whose client has gone (its
    end of the socket is shut) is closed at once: Hypercorn kept those until the keep-alive
    timeout, every closed connection's socket (in ``CLOSE-WAIT``) and state held 75 s after
    its client left."""

    def __init__(self, timers: IdleTimers, intake: Intake | None, *args: Any) -> None:
        super().__init__(*args)
        self._intake = intake
        self.idle_task = _IdleTimer(self, timers)  # type: ignore[assignment]
        self._closing = False

    async def run(self) -> None:
        """Hypercorn's ``TCPServer.run`` (no TLS here: the server listens on plain TCP),
        with a task group whose requests get a :class:`RequestChannel`."""
        socket = self.stream.socket
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            task_group = _TaskGroup(self._intake)
            async with task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                if isinstance(self.protocol.protocol, H11Protocol):
                    h11 = self.protocol.protocol
                    h11.can_read = _CanRead(h11.can_read, task_group)
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                handling = await self._read_requests()
                if handling is not None:
                    await _handle(*handling)
        except OSError:
            pass
        finally:
            await self._close()

    async def _read_requests(self) -> tuple[Any, ...] | None:
        """Hypercorn's ``TCPServer._read_data``, which returns once the client's end is shut
        (or failed), without a cancel scope around each read when there is no
        ``read_timeout`` (the default): its ``fail_after(inf)`` is ~1 KiB held for as long as
        the read waits, an open stream's whole life. Hypercorn has then told a request in
        flight that its client left: the connection is closed at once.

        It also returns once a request's app was kept (:class:`_TaskGroup`), for the caller
        to run, the protocol being done with what was read, and the reading goes on in a
        new task (:meth:`_read_on`): the app's first step comes in the turn that read the
        request (in a task of its own, it would wait for the next, behind every task that is
        ready; under load a turn lasts milliseconds). No frame of this method is held while
        the app runs (an open stream's whole life).
        """
        timeout = self.config.read_timeout
        group = cast("_TaskGroup", self._task_group)
        while True:
            try:
                if not timeout:
                    data = await self.stream.receive_some(MAX_RECV)
                else:
                    with trio.fail_after(timeout):
                        data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            else:
                ended = not data
                group.deferring = True
                try:
                    await self.protocol.handle(RawData(bytes(data)))  # no copy: it is bytes
                except BaseException:
                    group.start_kept()  # it ends as it would have (cancelled, or told)
                    raise
                finally:
                    group.deferring = False
                del data  # not held while the next read waits (an open stream's whole life)
                if ended:
                    group.start_kept()
                    break
                handling = group.take()
                if handling is not None:
                    group.spawn(self._read_on)
                    return handling
        await self.protocol.handle(Closed())
        if not self._closing:
            self._closing = True
            with trio.CancelScope(shield=True):
                await self._initiate_server_close()
        return None

    async def _read_on(self) -> None:
        """The connection's reading (:meth:`_read_requests`), and the app of the next request it
        reads, in a task of its own; an error of the socket ends it as it ends :meth:`run`."""
        try:
            handling = await self._read_requests()
        except OSError:
            return
        if handling is not None:
            await _handle(*handling)

    def close_soon(self) -> None:
        """Close the connection (idle, or the server is shutting down) in a task of its own.
        When the server is cancelled rather than shut down, its task group may be closing
        already: the connection is then closed as it ends (``run``), with no task."""
        if not self._closing:  # the connection's task group is still open
            self._closing = True
            with contextlib.suppress(RuntimeError):  # "Nursery is closed to new arrivals"
                self._task_group._nursery.start_soon(self._close_idle)  # type: ignore[union-attr]

    async def _close_idle(self) -> None:
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def protocol_send(self, event: Event) -> None:
        writes = _gathering.get()
        if writes is not None:
            if writes.connection is None:
                writes.connection = self
            if writes.connection is self:
                if isinstance(event, RawData):
                    writes.chunks.append(event.data)
                    return
                await writes.flush()
        if isinstance(event, RawData):
            await self.write(event.data)
        else:
            await super().protocol_send(event)

    async def write(self, data: bytes) -> None:
        """Hypercorn's ``protocol_send`` of raw data, taking its send lock without a turn of
        the scheduler when it is free (``trio.Lock.acquire`` always yields one), and sent
        shielded from a cancel only if it has to wait for the kernel."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self.send_lock.acquire()
        try:
            stream = self.stream
            sent = stream.send_now(data)
            if sent < len(data):  # the rest waits for the kernel: a cancel must not cut it
                with trio.CancelScope(shield=True):
                    await stream.send_rest(data, sent)
            else:  # sent whole: no cancel scope (~50 calls into Trio) for nothing
                await stream.send_rest(data, sent)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.protocol.handle(Closed())
        finally:
            self.send_lock.release()


async def serve(
    app: Any,
    config: Config,
    listener: socket.socket,
    *,
    shutdown_trigger: Any,
    swamped: Callable[[], bool] = lambda: False,
    intake: Intake | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on the listening socket ``listener`` until ``shutdown_trigger()``
    returns, then shut down gracefully (``config.graceful_timeout`` for the connections,
    then the app's lifespan shutdown). ``task_status`` gets the served URL once the app's
    start-up is done. Each HTTP request counts in ``intake`` from the moment its connection
    read it (see :class:`_TaskGroup`).

    Resource handling: ``listener`` is owned from here on and closed on exit; every
    connection runs in a task of the server nursery this call opens.
    """
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    listener.setblocking(False)
    with listener:
        async with trio.open_nursery() as lifespan_nursery:
            await lifespan_nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            timers = IdleTimers(config.keep_alive_timeout)
            # counted until their turn ends: see core/infra/intake.py
            counting = intake.counting_turns() if intake is not None else contextlib.nullcontext()
            with counting:
                async with trio.open_nursery() as server_nursery:
                    handler = functools.partial(
                        Connection,
                        timers,
                        intake,
                        wrapped,
                        config,
                        context,
                        ConnectionState(lifespan_state.copy()),
                    )
                    task_status.started(
                        [f"http://{repr_socket_addr(listener.family, listener.getsockname())}"]
                    )
                    try:
                        async with trio.open_nursery(strict_exception_groups=True) as nursery:
                            nursery.start_soon(raise_shutdown, shutdown_trigger)
                            nursery.start_soon(raise_shutdown, context.terminate.wait)
                            nursery.start_soon(_accept, listener, handler, server_nursery, swamped)
                            nursery.start_soon(timers.serve)
                    except BaseExceptionGroup as group:
                        _, others = group.split((ShutdownError, KeyboardInterrupt))
                        if others is not None:
                            raise others from None
                    finally:
                        await context.terminated.set()
                        timers.terminate()
                        server_nursery.cancel_scope.deadline = (
                            trio.current_time() + config.graceful_timeout
                        )
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()


async def _accept(
    listener: socket.socket, handler: Any, nursery: trio.Nursery, swamped: Callable[[], bool]
) -> None:
    """Accept every queued connection each time ``listener`` is readable; each one is served
    by ``handler(stream)`` in ``nursery`` and closed (forcefully) when that returns.

    While ``swamped()`` (the requests already arrived are more than the server answers at
    once), connections accepted are held, in arrival order, and served once it is not, at
    most :data:`START_BATCH` per turn of the scheduler (see the module docstring)."""
    held: collections.deque[socket.socket] = collections.deque()
    try:
        while True:
            if not held:
                await trio.lowlevel.wait_readable(listener)
            elif swamped():
                await trio.sleep(SWAMPED_POLL)
            else:  # the next batch after a turn of the others
                await trio.lowlevel.checkpoint()
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _GONE:
                        continue
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    log.error("accepting connections: %s; retrying in %.1f s", exc, BACKOFF)
                    await trio.sleep(BACKOFF)
                    break
                heap.note_activity()  # no memory release while connections come in
                held.append(sock)
            if swamped():
                continue
            for _ in range(min(len(held), START_BATCH)):
                nursery.start_soon(_serve_one, handler, SocketStream(held.popleft()))
    finally:
        for sock in held:
            sock.close()


async def _serve_one(handler: Any, stream: SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        stream.close()


def raise_open_file_limit() -> None:
    """Lift the soft limit on open descriptors to the hard limit (Unix; a no-op elsewhere)."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, hard, exc)
