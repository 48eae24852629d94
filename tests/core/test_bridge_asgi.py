"""``GraphBridge.asgi``: an asyncio ASGI app on the graph loop, driven from Trio."""

from __future__ import annotations

import asyncio  # noqa: TID251 -- drives the asyncio side of the bridge
import threading
from typing import Any

import pytest
import trio

from triograph.core.infra import graph_asgi
from triograph.core.infra.graph_bridge import GraphBridge


class Client:
    """The Trio side of one connection: scripted requests in, the app's messages out."""

    def __init__(self, *requests: dict[str, Any]) -> None:
        self.requests = list(requests)
        self.sent: list[dict[str, Any]] = []
        self.blocked = trio.Event()

    async def receive(self) -> dict[str, Any]:
        if self.requests:
            return self.requests.pop(0)
        self.blocked.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


async def test_messages_cross_both_ways_on_the_graph_loop() -> None:
    threads: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        threads.append(threading.current_thread().name)
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (body, scope["path"].encode()):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    client = Client(
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b", "more_body": False},
    )
    async with GraphBridge().open() as bridge:
        await graph_asgi.serve(
            bridge, app, {"type": "http", "path": "/p"}, client.receive, client.send
        )
    assert threads == ["triograph-graph-loop"]
    assert [m.get("body") for m in client.sent] == [None, b"ab", b"/p", b""]


async def test_the_apps_exception_is_raised_in_trio() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise LookupError("from the app")

    client = Client()
    async with GraphBridge().open() as bridge:
        with pytest.raises(LookupError, match="from the app"):
            await graph_asgi.serve(bridge, app, {"type": "http"}, client.receive, client.send)


async def test_a_trio_cancel_cancels_the_app_and_closes_its_connection() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await receive()  # waits for a disconnect that never comes
        except asyncio.CancelledError:
            seen.append("cancelled")
            try:
                await send({"type": "http.response.start", "status": 500, "headers": []})
            except OSError as exc:
                seen.append(str(exc))
            raise

    client = Client()
    async with GraphBridge().open() as bridge, trio.open_nursery() as nursery:

        async def serve() -> None:
            await graph_asgi.serve(bridge, app, {"type": "http"}, client.receive, client.send)

        nursery.start_soon(serve)
        await client.blocked.wait()
        nursery.cancel_scope.cancel()
    assert seen == ["cancelled", "the connection is closed"]
    assert client.sent == []


# -- TrioAsgi: a Trio app called from the graph loop --------------------------------------------


async def test_a_trio_app_is_called_from_the_graph_loop_and_stops_being_served() -> None:
    """Each call runs the Trio app in the serving task's context, its receive/send on the
    graph loop; once the serving stops, a call fails with OSError instead of hanging."""
    from triograph.core.infra.graph_asgi import TrioAsgi

    where: list[Any] = []

    async def trio_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        trio.lowlevel.current_task()  # raises outside Trio
        message = await receive()
        await send({"type": "http.response.body", "body": message["body"] + scope["path"]})

    async def call(api: Any) -> list[Any]:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            where.append(threading.current_thread().name)
            return {"type": "http.request", "body": b"hi ", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["body"])

        await api({"type": "http", "path": b"/x"}, receive, send)
        return sent

    async with GraphBridge().open() as bridge:
        served = TrioAsgi(bridge, trio_app)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(served.serve)
            assert await bridge.call(lambda: call(served.app)) == [b"hi /x"]
            nursery.cancel_scope.cancel()
        with pytest.raises(OSError, match="closed"), trio.fail_after(10):  # it used to hang
            await bridge.call(lambda: call(served.app))
    assert where == ["triograph-graph-loop"]
