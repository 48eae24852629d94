"""The bridge's ASGI half: asyncio ASGI apps served from Trio, and Trio ASGI apps called
from the graph loop. With ``graph_bridge`` (whose jobs and mailboxes it uses), the only code
of triograph that touches asyncio.

* :func:`serve` runs an asyncio ASGI app (the custom ``http.app``) on the graph loop for one
  connection or for its lifespan, with ``receive``/``send`` relayed to the Trio side
  (:class:`_AsgiRelay`); :meth:`GraphBridge.asgi` calls it.
* :class:`TrioAsgi` is the other direction: an ASGI callable for asyncio code (a custom app's
  router falling back to the API, ``get_client()`` without a URL) that runs a Trio ASGI app.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any

import trio

from triograph.core.infra.graph_bridge import (
    ASGIApp,
    GraphBridge,
    Message,
    Receive,
    Send,
    _Job,
)


async def serve(
    bridge: GraphBridge, app: ASGIApp, scope: dict[str, Any], receive: Receive, send: Send
) -> None:
    """Run the asyncio ASGI ``app`` for one ``scope`` on the graph loop; return when it does.

    ``receive`` and ``send`` are the Trio callables of the connection (or lifespan); the
    app's calls are relayed to them, each in a task of a nursery this call owns. An
    exception the app raises is re-raised here. Cancelling the calling Trio task cancels
    the app's task once (``CancelledError`` where it waits), makes its later
    ``receive``/``send`` calls fail with ``OSError``, and waits for it as
    :meth:`GraphBridge.call` does.
    """
    relay = _AsgiRelay(bridge, receive, send)

    def run() -> Awaitable[None]:
        return app(scope, relay.receive, relay.send)

    job: _Job[None] = _Job(bridge, run)
    await relay.serve(job)
    job.result()


class _AsgiRelay:
    """``receive``/``send`` for an ASGI app on the graph loop, performed by Trio callables.

    Each call the app makes becomes a request to the Trio side (a post to its mailbox) and
    an asyncio future the app awaits; :meth:`serve` performs every request in its own Trio
    task, since an app may wait in ``receive`` (for a disconnect) while it sends. A send
    returns once the Trio ``send`` did, so the server's flow control reaches the app. Once
    the Trio side stops serving, calls still pending and later ones fail with ``OSError``
    ("the connection is closed"), as on a server after a disconnect; the app's cleanup
    never waits for a Trio side that is gone.
    """

    def __init__(self, bridge: GraphBridge, receive: Receive, send: Send) -> None:
        self._loop = bridge.loop
        self._to_loop, self._to_trio = bridge.mailboxes
        self._requests_in, self._requests = trio.open_memory_channel[
            tuple[Message | None, asyncio.Future[Any]]
        ](math.inf)  # bounded by the app: each request is a coroutine awaiting its answer
        self._receive, self._send = receive, send
        # asyncio side only
        self._pending: set[asyncio.Future[Any]] = set()
        self._closed = False

    # -- asyncio side: what the app calls --
    async def receive(self) -> Message:
        return await self._request(None)  # type: ignore[no-any-return]

    async def send(self, message: Message) -> None:
        await self._request(message)

    async def _request(self, message: Message | None) -> Any:
        if self._closed:
            raise OSError("the connection is closed")
        future = self._loop.create_future()
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        self._to_trio.post(self._requests_in.send_nowait, (message, future))
        return await future

    def _close(self) -> None:
        self._closed = True
        for future in list(self._pending):
            if not future.done():
                future.set_exception(OSError("the connection is closed"))

    @staticmethod
    def _answer(future: asyncio.Future[Any], value: Any, error: Exception | None) -> None:
        if future.done():  # the app's task was cancelled meanwhile
            return
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)

    # -- Trio side --
    async def _perform(self, message: Message | None, future: asyncio.Future[Any]) -> None:
        value: Message | None = None
        try:
            if message is None:
                value = await self._receive()
            else:
                await self._send(message)
        except Exception as exc:
            self._to_loop.post(self._answer, future, None, exc)
        else:
            self._to_loop.post(self._answer, future, value, None)

    async def serve(self, job: _Job[None]) -> None:
        """Perform the app's requests until its task is done; then close, settle the task."""
        try:
            async with trio.open_nursery() as nursery:

                async def until_done() -> None:
                    await job.done.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(until_done)
                async for message, future in self._requests:
                    nursery.start_soon(self._perform, message, future)
        finally:
            if not job.done.is_set():
                job.cancel()  # first, so the app sees CancelledError where it waits ...
            self._to_loop.post(self._close)  # ... and OSError on later calls
            await job.settle()


class TrioAsgi:
    """A Trio ASGI app made callable from the graph loop: the reverse of :meth:`GraphBridge.asgi`.

    :attr:`app` is an asyncio ASGI callable; each call runs ``app`` in a Trio task that
    :meth:`serve` starts (so it runs in the context of the task serving, where the request's
    user is known), with the caller's ``receive``/``send`` performed on the graph loop. The
    asyncio caller returns when the Trio app does; cancelling it cancels the Trio app. A
    custom ``http.app`` reaches the API through it (its router's fall-back, the SDK's
    in-process client).
    """

    def __init__(self, bridge: GraphBridge, app: ASGIApp) -> None:
        self._bridge, self._trio_app = bridge, app
        self._token = trio.lowlevel.current_trio_token()
        self._calls_in, self._calls = trio.open_memory_channel[
            tuple[dict[str, Any], Receive, Send, asyncio.Future[None], trio.CancelScope]
        ](math.inf)

    # -- asyncio side --
    async def app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        scope_ = trio.CancelScope()
        try:
            self._token.run_sync_soon(self._accept, (scope, receive, send, done, scope_))
        except trio.RunFinishedError:
            raise OSError("the server is shutting down") from None
        try:
            await done
        except asyncio.CancelledError:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(scope_.cancel)
            raise

    # -- Trio side --
    def _accept(
        self,
        call: tuple[dict[str, Any], Receive, Send, asyncio.Future[None], trio.CancelScope],
    ) -> None:
        try:
            self._calls_in.send_nowait(call)
        except (trio.ClosedResourceError, trio.BrokenResourceError):  # no longer served
            self._settle(call[3], OSError("the connection is closed"))

    async def serve(self) -> None:
        """Run the calls made to :attr:`app` until cancelled (then they are cancelled too);
        a call made after that fails with ``OSError``, as on a closed connection."""
        try:
            async with trio.open_nursery() as nursery:
                async for call in self._calls:
                    nursery.start_soon(self._run, *call)
        finally:
            error = OSError("the connection is closed")
            while True:  # calls that came in while the nursery was being cancelled
                try:
                    pending = self._calls.receive_nowait()
                except trio.WouldBlock:
                    break
                self._settle(pending[3], error)
            self._calls.close()  # later calls fail in _accept

    async def _run(
        self,
        scope: dict[str, Any],
        receive: Receive,
        send: Send,
        done: asyncio.Future[None],
        cancel_scope: trio.CancelScope,
    ) -> None:
        bridge = self._bridge

        async def trio_receive() -> Message:
            return await bridge.call(receive)

        async def trio_send(message: Message) -> None:
            await bridge.call(lambda: send(message))

        error: BaseException | None = None
        try:
            with cancel_scope:
                await self._trio_app(scope, trio_receive, trio_send)
        except Exception as exc:
            error = exc
        finally:
            self._settle(done, error)

    def _settle(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        """Answer the asyncio caller (from Trio); nobody waits once the loop is closed."""
        with suppress(RuntimeError):
            self._bridge.loop.call_soon_threadsafe(_settle_future, future, error)


def _settle_future(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def call_api_from_scope(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """An asyncio ASGI app that hands the request to the ASGI callable at ``scope`` key
    ``triograph.api`` (a :class:`TrioAsgi` app): the fall-back a custom ``http.app``'s
    router gets, so requests it has no route for reach the API through its middleware."""
    await scope[API_SCOPE_KEY](scope, receive, send)


#: the scope key under which a custom ``http.app`` finds the API (:func:`call_api_from_scope`)
API_SCOPE_KEY = "triograph.api"
