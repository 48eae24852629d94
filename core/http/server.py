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

Each connection is a :class:`Connection`: Hypercorn's ``TCPServer``, which writes every piece
of a response (the head, each body part, the end) with its own ``send``; on a loopback or LAN
connection each ``send`` is also a packet and a wake-up of the peer, a tenth of the CPU of a
small run's request. Inside :func:`one_write` (the transport wraps a response whose length is
known, see ``core/http/transport.py``) its writes are gathered and go out as one.

Accept errors that mean "out of resources" (no descriptors, no memory) are logged and
retried after :data:`BACKOFF` seconds, as ``trio.serve_listeners`` does; others stop the
server. :func:`raise_open_file_limit` lifts the process's soft limit on descriptors to its
hard limit (often 1,024 and 524,288): one descriptor per connection.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import math
import socket
import sys
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from triograph.core.infra import heap

log = logging.getLogger("triograph.server")

#: seconds before accepting again after the process ran out of descriptors or memory
BACKOFF = 0.1
#: accept errors that mean a resource ran out: wait and retry
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: accept errors about one connection that went away before it was accepted
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})


class _Writes:
    """What a connection was asked to write inside one :func:`one_write`."""

    __slots__ = ("chunks", "connection")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.connection: Connection | None = None

    async def flush(self) -> None:
        if self.connection is not None and self.chunks:
            data, self.chunks = b"".join(self.chunks), []
            await TCPServer.protocol_send(self.connection, RawData(data=data))


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
    request comes) without a task per request: Hypercorn cancels its timer task when a
    request starts and starts a new one when it ends, a lock, a task and an unwinding
    cancellation per request. Here one task per connection waits with a deadline that is
    moved: at ``keep_alive_timeout`` seconds of idleness, or at the server's shutdown once
    idle, the connection is closed (as Hypercorn's timer closes it).

    It also closes a connection whose client has gone at once (:meth:`gone`: its end of the
    socket is shut): Hypercorn kept those until the keep-alive timeout, every closed
    connection's socket (in ``CLOSE-WAIT``) and state held 75 s after its client left."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._scope: trio.CancelScope | None = None
        self._idle = trio.Event()
        self._gone = False  # nothing more will be read: close at once

    async def restart(self, task_group: Any, action: Any) -> None:
        self._idle.set()
        if self._scope is None:
            await task_group._nursery.start(self._watch)
        elif self._gone:
            self._scope.cancel()
        else:
            self._scope.deadline = trio.current_time() + self._connection.config.keep_alive_timeout

    async def stop(self) -> None:
        if self._idle.is_set():
            self._idle = trio.Event()
        if self._scope is not None:
            self._scope.deadline = math.inf

    def gone(self) -> None:
        """Nothing more will be read (the client shut its end, or the socket failed or was
        closed): Hypercorn has told a request in flight that its client left; close now. A
        connection's task ends only once this one does."""
        self._gone = True
        if self._scope is not None:
            self._scope.cancel()

    async def _watch(self, task_status: trio.TaskStatus[None]) -> None:
        connection = self._connection
        timeout = connection.config.keep_alive_timeout
        with trio.CancelScope(deadline=trio.current_time() + timeout) as self._scope:
            task_status.started()
            await connection.context.terminated.wait()  # the server is shutting down:
            await self._idle.wait()  # the connection is closed once idle, as Hypercorn does
        with trio.CancelScope(shield=True):
            await connection._initiate_server_close()


class Connection(TCPServer):
    """Hypercorn's connection, whose writes :func:`one_write` can gather, with a keep-alive
    timer that costs no task per request (:class:`_IdleTimer`)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_task = self._timer = _IdleTimer(self)  # type: ignore[assignment]

    async def _read_data(self) -> None:
        await super()._read_data()  # returns once the client's end is shut (or failed)
        self._timer.gone()

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
        await super().protocol_send(event)


async def serve(
    app: Any,
    config: Config,
    listener: socket.socket,
    *,
    shutdown_trigger: Any,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on the listening socket ``listener`` until ``shutdown_trigger()``
    returns, then shut down gracefully (``config.graceful_timeout`` for the connections,
    then the app's lifespan shutdown). ``task_status`` gets the served URL once the app's
    start-up is done.

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
            async with trio.open_nursery() as server_nursery:
                handler = functools.partial(
                    Connection, wrapped, config, context, ConnectionState(lifespan_state.copy())
                )
                task_status.started(
                    [f"http://{repr_socket_addr(listener.family, listener.getsockname())}"]
                )
                try:
                    async with trio.open_nursery(strict_exception_groups=True) as nursery:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                        nursery.start_soon(raise_shutdown, context.terminate.wait)
                        nursery.start_soon(_accept, listener, handler, server_nursery)
                except BaseExceptionGroup as group:
                    _, others = group.split((ShutdownError, KeyboardInterrupt))
                    if others is not None:
                        raise others from None
                finally:
                    await context.terminated.set()
                    server_nursery.cancel_scope.deadline = (
                        trio.current_time() + config.graceful_timeout
                    )
            await lifespan.wait_for_shutdown()
            lifespan_nursery.cancel_scope.cancel()


async def _accept(listener: socket.socket, handler: Any, nursery: trio.Nursery) -> None:
    """Accept every queued connection each time ``listener`` is readable; each one is served
    by ``handler(stream)`` in ``nursery`` and closed (forcefully) when that returns."""
    while True:
        await trio.lowlevel.wait_readable(listener)
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
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            nursery.start_soon(_serve_one, handler, stream)


async def _serve_one(handler: Any, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)


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
