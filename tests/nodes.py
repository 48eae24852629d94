"""Servers a test can crash: a :class:`Node` is a real server (as ``start_server`` runs one)
inside a cancel scope, so :meth:`Node.crash` can stop it as ``kill -9`` would, for the
recovery and cluster tests. They run the ``gated`` example graph besides the examples'."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from tests.conftest import EXAMPLES
from tests.sdk import Server
from triograph.core.http.app import app_core, create_app, serve_app
from triograph.core.infra.context import Core
from triograph.core.infra.settings import GraphSpec, Settings

GATED = GraphSpec(graph_id="gated", path=f"{EXAMPLES / 'graphs' / 'gated.py'}:graph")


@attrs.define
class Node:
    """One server of a test, and the scope that holds all of it."""

    server: Server
    scope: trio.CancelScope

    async def crash(self) -> None:
        """Stop as ``kill -9`` would: no outcome is recorded after this instant."""

        async def nothing_recorded(*args: Any) -> None:
            pass

        self.server.core.supervisor._finish = nothing_recorded  # type: ignore[method-assign]
        self.scope.cancel()
        with trio.fail_after(15):
            await self.server.stopped.wait()


async def boot(
    nursery: trio.Nursery, settings: Settings, *, prepare: Callable[[Core], None] | None = None
) -> Node:
    """Serve ``settings`` with ``gated`` added on 127.0.0.1:0 until stopped or crashed;
    returns once it answers (start-up, and so recovery, done). ``prepare(core)`` runs
    before the server starts."""
    app = create_app(attrs.evolve(settings, graphs=(*settings.graphs, GATED)))
    if prepare is not None:
        prepare(app_core(app))
    scope = trio.CancelScope()
    stop, stopped = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            with scope:
                await serve_app(
                    app,
                    host="127.0.0.1",
                    port=0,
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
        finally:
            stopped.set()

    urls = await nursery.start(run)
    return Node(Server(url=urls[0], core=app_core(app), stop=stop, stopped=stopped), scope)


@asynccontextmanager
async def two_servers(
    nursery: trio.Nursery, settings: Settings
) -> AsyncIterator[tuple[Server, Server]]:
    """Two servers of ``settings`` (one database: a cluster of two workers), stopped
    gracefully when the block ends."""
    a, b = await boot(nursery, settings), await boot(nursery, settings)
    yield a.server, b.server
    await stop(a, b)


async def stop(*nodes: Node) -> None:
    """Stop ``nodes`` gracefully, all at once, and wait until they have."""
    for node in nodes:
        node.server.stop.set()
    with trio.fail_after(20):
        for node in nodes:
            await node.server.stopped.wait()
