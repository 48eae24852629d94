"""``/mcp``: the Model Context Protocol over Streamable HTTP, stateless, JSON responses.

The official ``mcp`` SDK does the protocol: its ``StreamableHTTPSessionManager`` (stateless,
JSON responses, so no session id is issued and nothing is kept between requests) checks the
headers, parses and validates JSON-RPC, negotiates the protocol version (the
``initialize`` handshake of 2024-11-05 to 2025-11-25, as the official server, and the
SDK's newer per-request envelope) and calls the handlers of
:func:`triograph.core.resources.mcp.mcp_server`. The SDK's transport is an ASGI app built on
anyio, which runs on Trio: :class:`McpEndpoint` hands it each request (the body Quart has
read, and a ``send`` that collects the one JSON answer) and turns what it sent into the
response. ``GET`` (a server-to-client stream) is refused with 405: a stateless server has
nothing to push. ``http.disable_mcp`` leaves the route out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import trio
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from quart import Blueprint, Response, current_app, request
from werkzeug.datastructures import Headers

from triograph.core.http.openapi import OBJECT, responds
from triograph.core.http.wire import json_response
from triograph.core.resources.mcp import mcp_server

if TYPE_CHECKING:
    from triograph.core.infra.context import Core

bp = Blueprint("mcp", __name__)

CONFIG_KEY = "TRIOGRAPH_MCP"
#: what the SDK's transport refuses with: a JSON-RPC error (or, for a malformed request's
#: headers, a line of text)
JSONRPC_ERRORS = {
    "application/json": {"schema": OBJECT},
    "text/plain": {"schema": {"type": "string"}},
}


class McpEndpoint:
    """The SDK's stateless transport for one app. :meth:`serve` runs its task group for the
    app's lifetime (in the supervisor's nursery); :meth:`handle` serves one request."""

    def __init__(self, core: Core) -> None:
        self.manager = StreamableHTTPSessionManager(
            mcp_server(core), stateless=True, json_response=True
        )

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        async with self.manager.run():
            task_status.started()
            await trio.sleep_forever()

    async def handle(self, scope: dict[str, Any], body: bytes) -> Response:
        """Run the transport on one request whose ``body`` was read; its answer."""
        given = False
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            await trio.sleep_forever()  # the client stays until we answer
            raise AssertionError("unreachable")

        async def send(message: Any) -> None:
            sent.append(message)

        await self.manager.handle_request(cast("Any", scope), receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        headers = Headers([(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]])
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        if "content-type" not in headers:  # the SDK's header checks answer in bare text
            headers["Content-Type"] = "text/plain; charset=utf-8"
        return Response(payload, status=start["status"], headers=headers)


@bp.route("/mcp", methods=["GET", "POST", "DELETE"])
@responds(OBJECT, 202, errors=JSONRPC_ERRORS)
async def mcp() -> Response:
    """Model Context Protocol (Streamable HTTP, stateless): each assistant is a tool."""
    if request.method == "GET":
        return json_response(
            {"detail": "this MCP server is stateless: POST JSON-RPC messages; it opens no stream"},
            status=405,
            headers={"Allow": "POST, DELETE"},
        )
    endpoint: McpEndpoint = current_app.config[CONFIG_KEY]
    return await endpoint.handle(
        cast("dict[str, Any]", request.scope),
        await request.get_data(cache=False, as_text=False, parse_form_data=False),
    )
