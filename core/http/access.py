"""The access log: one line per HTTP request, and the ``triograph_http_request`` hook.

:class:`AccessLog` is the outermost ASGI layer (in front of the custom ``http.app`` too). It
times each request from its arrival to the end of its response body, notes the status the
app sent, and then logs one line on ``triograph.access``: method, route, status, duration
and the run id where the request has one (``POST /runs/wait 200 3.1ms run=...``). The route
is the template that served the request, as ``/openapi.json`` spells it, never the raw path
or query string (both may carry ids or tokens; headers are never logged).

A client that leaves before its response is complete is one INFO line (``client
disconnected``), whatever the stack raised on its way out: Quart's
``ClientDisconnectedError`` is caught here, so Hypercorn does not log it as a 30-line
exception group.

Routes tell this layer what it cannot see through the ASGI scope they share with it:
:func:`note_route` (a ``before_request`` function) the route template, :func:`note_run` the
id of a run the request created.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, cast

from quart import request

try:  # Quart 0.23; 0.22 (the newest on Python 3.11) has no such error and logs nothing
    from quart.wrappers import (  # type: ignore[attr-defined,unused-ignore]
        ClientDisconnectedError as ClientDisconnectedError,
    )
except ImportError:  # pragma: no cover - Quart 0.22

    class ClientDisconnectedError(Exception):  # type: ignore[no-redef,unused-ignore]
        """Never raised: stands in for Quart 0.23's error on Quart 0.22."""


if TYPE_CHECKING:
    from triograph.core.infra.graph_bridge import ASGIApp, Message, Receive, Send
    from triograph.core.infra.plugin_manager import Hooks

log = logging.getLogger("triograph.access")

ROUTE_KEY = "triograph.route"
RUN_KEY = "triograph.run_id"
_PARAM = re.compile(r"<(?:[^:>]+:)?(\w+)>")
#: werkzeug rule -> its OpenAPI spelling (a few dozen routes: computed once each)
_templates: dict[str, str] = {}


async def note_route() -> None:
    """``before_request``: the matched route's template, and a run id the path names."""
    rule = request.url_rule
    if rule is None:
        return
    template = _templates.get(rule.rule)
    if template is None:
        template = _templates[rule.rule] = _PARAM.sub(r"{\1}", rule.rule)
    scope = cast("dict[str, Any]", request.scope)
    scope[ROUTE_KEY] = template
    run_id = (request.view_args or {}).get("run_id")
    if run_id is not None:
        scope[RUN_KEY] = str(run_id)


def note_run(run_id: str) -> None:
    """Record, for the access log, the run the current request created."""
    cast("dict[str, Any]", request.scope)[RUN_KEY] = run_id


class AccessLog:
    """See the module docstring. ``hooks`` fire ``triograph_http_request``."""

    def __init__(self, app: ASGIApp, hooks: Hooks) -> None:
        self.app, self.hooks = app, hooks

    def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            return self.app(scope, receive, send)  # awaited with no frame of this layer
        return self._logged(scope, receive, send)

    async def _logged(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        response = _Response(send)
        try:
            await self.app(scope, receive, response.send)
        except* ClientDisconnectedError:
            pass  # the client left: the line below says so, once
        finally:
            seconds = time.perf_counter() - start
            self._done(scope, response.status, not response.complete, seconds)

    def _done(self, scope: dict[str, Any], status: int, disconnected: bool, seconds: float) -> None:
        route = scope.get(ROUTE_KEY)
        method = scope["method"]
        if self.hooks.has("triograph_http_request"):
            self.hooks.call(
                "triograph_http_request",
                method=method,
                route=route,
                status=status,
                seconds=seconds,
                disconnected=disconnected,
            )
        if not log.isEnabledFor(logging.INFO):
            return
        run_id = scope.get(RUN_KEY)
        ms = round(seconds * 1000, 1)
        line = f"{method} {route or scope['path']} {status or '-'} {ms}ms"
        if run_id is not None:
            line += f" run={run_id}"
        if disconnected:
            line += " client disconnected"
        log.info(
            line,
            extra={
                "method": method,
                "route": route or scope["path"],
                "status": status or None,
                "duration_ms": ms,
                "run_id": run_id,
                "disconnected": disconnected or None,
            },
        )


class _Response:
    """What the access log needs of a response (its status, whether it was sent whole), seen
    on its way out: an object with slots rather than a closure and its cells, held for as
    long as the request lasts (an open stream's whole life)."""

    __slots__ = ("_send", "complete", "status")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 0
        self.complete = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self._send(message)
