"""Driving a server with the official ``langgraph_sdk`` clients from Trio tests.

The SDK is asyncio code. ``Server.sync(fn)`` runs ``fn(sync_client)`` in a worker thread;
``Server.aio(fn)`` runs ``await fn(async_client)`` under ``asyncio.run`` in a worker
thread. Both return what ``fn`` returns. ``Server.http`` is a plain ``httpx.AsyncClient``
(Trio-compatible) for the wire itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import httpx
import trio
from langgraph_sdk import get_client, get_sync_client

if TYPE_CHECKING:
    from langgraph_sdk.client import LangGraphClient, SyncLangGraphClient

    from triograph.core.infra.context import Core
    from triograph.core.infra.storage import Storage

T = TypeVar("T")


@attrs.define
class Server:
    url: str
    core: Core
    stop: trio.Event = attrs.Factory(trio.Event)
    stopped: trio.Event = attrs.Factory(trio.Event)

    async def shutdown(self) -> None:
        """Stop as SIGTERM would, and wait until the server has exited."""
        self.stop.set()
        with trio.fail_after(30):
            await self.stopped.wait()

    async def sync(
        self, fn: Callable[[SyncLangGraphClient], T], *, headers: dict[str, str] | None = None
    ) -> T:
        def call() -> T:
            with get_sync_client(url=self.url, api_key=None, headers=headers) as client:
                return fn(client)

        return await trio.to_thread.run_sync(call)

    async def aio(
        self,
        fn: Callable[[LangGraphClient], Awaitable[T]],
        *,
        headers: dict[str, str] | None = None,
    ) -> T:
        async def main() -> T:
            async with get_client(url=self.url, api_key=None, headers=headers) as client:
                return await fn(client)

        return await trio.to_thread.run_sync(asyncio.run, main())

    def http(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)


@asynccontextmanager
async def stored(server: Server) -> AsyncIterator[Storage]:
    """The storage of a server that has stopped: the memory backend's object lives on; any
    other backend is opened again on the same spec (metadata only: its checkpointer and
    store need the graph loop, which is gone)."""
    settings = server.core.settings
    if settings.storage == "memory":
        yield server.core.storage
        return
    async with server.core.storages.for_spec(settings.storage)(settings.storage, settings) as s:
        yield s


async def poll(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Call ``fetch`` until ``done`` holds for its result (at most 10 s)."""
    with trio.fail_after(10):
        while True:
            value = await fetch()
            if done(value):
                return value
            await trio.sleep(0.02)


async def get(server: Server, path: str) -> tuple[int, Any]:
    """``GET path`` over raw HTTP: the status and the decoded body (None when empty)."""
    async with server.http() as h:
        r = await h.get(path)
    return r.status_code, (r.json() if r.content else None)


async def collect(stream: Any) -> list[Any]:
    """Drain an async SDK stream into a list (use inside ``Server.aio``)."""
    return [part async for part in stream]
