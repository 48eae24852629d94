"""The ASGI layer between Hypercorn and the app: how each HTTP exchange ends.

:class:`Transport` wraps the whole app (the custom ``http.app`` included) and does three
things per HTTP request:

**It lets Hypercorn finish the exchange.** Hypercorn 0.18's HTTP/1.1 protocol
(``H11Protocol._maybe_recycle``) runs from inside the app's last ``send``: it first tells the
app ``http.disconnect``, and then, in the same task, restarts the connection's keep-alive
timer (a lock and a ``nursery.start``) or, when the response went out before the request
body was in, closes the socket (``TCPServer._close``: ``send_eof``, ``aclose``). Quart-Trio
cancels the request's nursery on ``http.disconnect``, so that bookkeeping is cancelled at its
first checkpoint and the cancellation is swallowed with the request: the keep-alive timer is
never restarted (idle connections are never reaped) and an early response (a 404, 405, 413
or a 422 for a bad path id sent before the body arrived) leaves the socket open with nobody
reading it (the next request on it hangs). The fault is Hypercorn's (``protocol_send``
shields ``RawData`` writes but not the ``Closed`` path) and needs any app that reacts to
``http.disconnect`` by cancelling; the fix belongs upstream, and until a release has it, the
final ``http.response.body`` message is sent here in a shielded, time-bounded scope, so
Hypercorn's bookkeeping inside it runs to the end.

**It reads the rest of the body after an early response.** A response that goes out
before the request body is in (a 404, 405 or 422 that needs no body) is finished only once
the body has been read (Quart-Trio goes on receiving it), so the connection serves the next
request; a body that does not arrive within ``limits.body_timeout`` gets the connection
closed. A body over the limit is never read: its 413 says ``Connection: close``.

**It bounds the request body** (``limits.max_body_bytes``): Quart refuses a declared
``Content-Length`` above it with 413 before reading; a chunked body is cut off where it goes
over, and handed to Quart as complete, which then answers 413 too (without the rest ever
being buffered).

**It writes a response of known length at once**: the head and the body (up to
:data:`HOLD_BYTES`) are held until the body is complete and go out in one write (Hypercorn
writes each message with its own ``send``). A streamed response (no ``Content-Length``) is
written as it comes, except that the app may say its first chunk is ready
(:meth:`_Exchange.head_with_first_chunk`, reached through ``scope[EXCHANGE]``): then the
head waits for that chunk and both go out in one write (a run's stream: its ``metadata``
event is there before the response starts).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import trio

from triograph.core.http.server import one_write
from triograph.core.infra.graph_bridge import ASGIApp

#: seconds Hypercorn's end-of-exchange bookkeeping may take inside the shielded send (it
#: writes nothing large: the body was sent by the messages before)
FINISH_TIMEOUT = 10.0
_HTTP1 = frozenset({"1.0", "1.1"})
#: bytes of a response of known length held back to go out with its head in one write
HOLD_BYTES = 256 * 1024
#: responses after which the rest of the body is not read: the connection closes
_NOT_READ = frozenset({408, 413})
#: the key marking the message of a body cut off at the limit (told "complete" to the app,
#: though the rest is still being read and dropped)
CUT = "triograph.cut"
#: the key of the request's :class:`_Exchange` in its scope (copies of the scope share it)
EXCHANGE = "triograph.transport.exchange"


class Transport:
    """ASGI middleware around ``app``; see the module docstring."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, drain_timeout: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain_timeout = drain_timeout

    def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Awaitable[None]:
        # the app's own call is awaited by the caller: no frame of this layer is held while
        # the request lasts (an open stream's whole life)
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        exchange = scope[EXCHANGE] = _Exchange(
            scope, receive, send, self.max_body_bytes, self.drain_timeout
        )
        return self.app(scope, exchange.receive, exchange.send)


class _Exchange:
    """One request/response: what has been received, and the wrapped channels."""

    def __init__(
        self, scope: dict[str, Any], receive: Any, send: Any, most: int, drain_timeout: float
    ) -> None:
        self._receive = receive
        self._send = send
        self._most = most
        self._drain_timeout = drain_timeout
        self._received = 0
        self._http1 = scope.get("http_version") in _HTTP1
        declared = _declared_length(scope["headers"])
        #: the body is over the limit: it is not read, the connection closes after the 413
        self._refused = declared is not None and declared > most
        #: the whole body is in (Hypercorn's parser has seen its end), or there is none, or
        #: the client left; an event to wait for it is made only if a response waits
        self._body_done = declared == 0
        self._body_event: trio.Event | None = None
        #: the response's messages not sent yet (its head, the body's first parts): a
        #: response of known length goes out in one write (see ``core/http/server.py``)
        self._held: list[dict[str, Any]] | None = None
        self._held_bytes = 0
        #: a streamed response's first chunk is ready: its head waits for it (and, once the
        #: head is held, the head)
        self._head_waits = False
        self._head: dict[str, Any] | None = None

    def head_with_first_chunk(self) -> None:
        """The streamed response about to start has its first chunk ready: its head waits
        for that chunk, and both go out in one write."""
        self._head_waits = True

    async def receive(self) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = await self._receive()
            if message["type"] != "http.request":
                self._body_end()  # http.disconnect: nothing more will come
                return message
            if not message.get("more_body", False):
                self._body_end()
            if self._refused:
                continue  # cut off already: the app has been told the body ended
            self._received += len(message.get("body", b""))
            if self._received > self._most:
                # hand Quart a "complete" body over its limit: it answers 413 at once
                self._refused = True
                return {**message, "more_body": False, CUT: True}
            return message

    def _body_end(self) -> None:
        self._body_done = True
        if self._body_event is not None:
            self._body_event.set()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if message["status"] in _NOT_READ:
                self._refused = True  # the body will not come (408) or is not wanted (413)
            if self._refused and self._http1:
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            if self._http1 and any(
                n.lower() == b"content-length" for n, _ in message.get("headers", ())
            ):
                self._held = [message]  # a body of known length: written with the head
                return
            # a streamed response: Hypercorn keeps its start message for as long as the
            # response lasts (an open stream's whole life), for an access log of its own
            # that is off here (``core/http/access.py`` logs instead): its headers, ~1 KiB,
            # are let go of once written
            message = {**message}
            if self._head_waits:
                self._head = message
                return
            await self._send(message)
            message["headers"] = []
            return
        if self._head is not None:  # a streamed response's head, held for its first chunk
            head, self._head = self._head, None
            self._held = [head]  # written with this message, whatever it is (``_write``)
            if kind == "http.response.body" and message.get("more_body", False):
                await self._write(message)
                head["headers"] = []
                return
        if kind == "http.response.body" and message.get("more_body", False):
            if self._held is not None:
                self._held.append(message)
                self._held_bytes += len(message.get("body", b""))
                if self._held_bytes > HOLD_BYTES:  # a large body: written as it comes
                    await self._write()
                return
        elif kind == "http.response.body":
            if not self._refused and not self._body_done:
                # an early response: the app (Quart keeps receiving) reads the rest of the
                # body, so the connection can serve the next request; a body that does not
                # come in time gets the connection closed instead
                self._body_event = trio.Event()
                await self._write()
                with trio.move_on_after(self._drain_timeout):
                    await self._body_event.wait()
            with trio.CancelScope(shield=True, deadline=trio.current_time() + FINISH_TIMEOUT):
                await self._write(message)
            return
        await self._write(message)

    async def _write(self, message: dict[str, Any] | None = None) -> None:
        """Send what is held, then ``message``: as one write when there is more than one."""
        held, self._held, self._held_bytes = self._held, None, 0
        if held is None:
            if message is not None:
                await self._send(message)
            return
        async with one_write():
            for each in held:
                await self._send(each)
            if message is not None:
                await self._send(message)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length the head declares: 0 without a body, None when chunked."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return None
        if lower == b"content-length":
            try:
                return int(value)
            except ValueError:  # h11 has refused such a request already
                return 0
    return 0
