"""The SDK's in-process client: ``langgraph_sdk.get_client()`` without a URL, called inside
the server (a graph node, a custom ``http.app`` route), reaches this server's API in
process, as on the official server.

The SDK makes an ``httpx.ASGITransport`` for it and, outside the official server, leaves
its app unset until the server supplies one; the transport factory it uses is given ours
here (once per process; the newest server's API wins, for tests that start several). The
requests go to the API inside authentication (the official server's loopback is not
authenticated either), through :class:`TrioAsgi` from the graph loop to Trio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from triograph.core.infra.graph_asgi import TrioAsgi
from triograph.core.infra.graph_bridge import ASGIApp, GraphBridge, Receive, Send

#: the API the SDK's in-process client reaches
_loopback: list[ASGIApp] = []


async def serve_loopback(
    bridge: GraphBridge, api: ASGIApp, *, task_status: trio.TaskStatus[None]
) -> None:
    """Serve the SDK's in-process client until cancelled (a task of the app's lifetime)."""
    loopback = TrioAsgi(bridge, _without_root_path(api))
    _bind(loopback.app)
    task_status.started()
    await loopback.serve()


def _without_root_path(app: ASGIApp) -> ASGIApp:
    """The SDK sends ``root_path`` ``/noauth`` (no auth on the official server; ours is
    outside the app it reaches), which the API's routing must not see."""

    async def api(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await app({**scope, "root_path": ""}, receive, send)

    return api


def _bind(api: ASGIApp) -> None:
    try:
        from langgraph_sdk._async import client as sdk_client
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return
    first = not _loopback
    _loopback[:] = [api]
    if not first:
        return
    make: Callable[[], Any] = sdk_client.get_asgi_transport  # type: ignore[attr-defined]

    def transport(app: ASGIApp | None = None, **kwargs: Any) -> Any:
        return make()(app if app is not None else _loopback[0], **kwargs)

    sdk_client.get_asgi_transport = lambda: transport  # type: ignore[attr-defined,assignment]
