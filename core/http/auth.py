"""Authentication at the door: a request says who it comes from before it reaches the API.

:class:`Authentication` is ASGI middleware, installed by the app factory when a plugin
authenticates (``core.access.enabled``), between the CORS layer and the custom ``http.app``
in front of the API. For each HTTP request and WebSocket handshake it builds an
:class:`~triograph.core.infra.auth.AuthRequest`, asks :meth:`Access.authenticate
<triograph.core.infra.auth.Access.authenticate>`, and then runs the rest of the request
*acting as* that user (``current_user()`` in every task the request starts), with
``scope["user"]`` and ``scope["auth"]`` set as Starlette's authentication middleware sets
them, for custom routes that read ``request.user``. A refused request gets ``{"detail": ...}``
with the plugin's status and headers and reaches nothing below.

What is not authenticated: the routes marked :func:`public` (``/ok``, ``/``, ``/docs``,
``/openapi.json``), ``OPTIONS`` requests (CORS preflights carry no credentials; the CORS
layer above answers them), and, unless ``http.enable_custom_route_auth`` is true, requests
to paths only the custom ``http.app`` serves. A custom route that shadows an API path is
authenticated all the same: its path is the API's.

The body is read only when a plugin asks for it (``await request.body()``); the messages
read are then handed to the API as if unread.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter

from triograph.core.infra import encoding
from triograph.core.infra.auth import Access, AuthRequest, acting_as
from triograph.core.infra.errors import AccessDenied, ConfigError
from triograph.core.infra.graph_bridge import ASGIApp, Message, Receive, Send

F = TypeVar("F", bound=Callable[..., Any])

#: the attribute :func:`public` sets on a view function
PUBLIC = "triograph_public"


def public(view: F) -> F:
    """Mark a route that answers without authentication (health checks, API docs)."""
    setattr(view, PUBLIC, True)
    return view


@attrs.frozen
class Credentials:
    """``scope["auth"]``, as Starlette's ``AuthCredentials``: the user's permissions."""

    scopes: list[str]


class _Body:
    """The request's ``receive``, able to read the whole body ahead and replay it."""

    def __init__(self, scope: dict[str, Any], receive: Receive) -> None:
        self._scope, self._receive = scope, receive
        self._kept: list[Message] = []
        self._data: bytes | None = None

    async def read(self) -> bytes:
        if self._data is None:
            chunks: list[bytes] = []
            while self._scope["type"] == "http":
                message = await self._receive()
                self._kept.append(message)
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
            self._data = b"".join(chunks)
        return self._data

    async def receive(self) -> Message:
        if self._kept:
            return self._kept.pop(0)
        return await self._receive()


class Authentication:
    """The authentication layer around ``app`` (see the module docstring).

    ``url_map`` and ``views`` are the API's routes and view functions, read when the first
    request arrives (the app factory is done registering by then). ``custom_app`` says a
    custom ``http.app`` sits below; ``custom_route_auth`` that its own routes are
    authenticated too.
    """

    def __init__(
        self,
        app: ASGIApp,
        access: Access,
        url_map: Map,
        views: dict[str, Callable[..., Any]],
        *,
        custom_app: bool,
        custom_route_auth: bool,
    ) -> None:
        self.app, self.access = app, access
        self._url_map, self._views = url_map, views
        self._custom_app, self._custom_route_auth = custom_app, custom_route_auth
        self._public: frozenset[str] | None = None
        self._http: MapAdapter | None = None
        self._ws: MapAdapter | None = None

    @staticmethod
    def custom_route_auth(http: dict[str, Any]) -> bool:
        """``http.enable_custom_route_auth``, checked."""
        value = http.get("enable_custom_route_auth", False)
        if not isinstance(value, bool):
            raise ConfigError(f"http.enable_custom_route_auth must be true or false, got {value!r}")
        return value

    def _bind(self) -> None:
        self._public = frozenset(
            rule.rule
            for rule in self._url_map.iter_rules()
            if not rule.arguments and getattr(self._views.get(rule.endpoint), PUBLIC, False)
        )
        self._http = self._url_map.bind("localhost")
        self._ws = self._url_map.bind("localhost", url_scheme="ws")

    def _route(self, scope: dict[str, Any]) -> dict[str, Any] | None:
        """The path parameters of the API route the request goes to; None if none does."""
        websocket = scope["type"] == "websocket"
        routes = self._ws if websocket else self._http
        assert routes is not None
        try:
            _, args = routes.match(
                scope["path"], method=scope.get("method", "GET"), websocket=websocket
            )
        except HTTPException as exc:  # 404; or 405, a redirect: the path is still the API's
            return None if exc.code == 404 else {}
        return dict(args)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._public is None:
            self._bind()
        assert self._public is not None
        if kind == "http" and (scope["method"] == "OPTIONS" or scope["path"] in self._public):
            await self.app(scope, receive, send)
            return
        path_params = self._route(scope)
        if path_params is None and self._custom_app and not self._custom_route_auth:
            await self.app(scope, receive, send)  # the custom app's own route
            return
        body = _Body(scope, receive)
        request = AuthRequest(
            scope=scope,
            method=scope.get("method", "GET") if kind == "http" else "GET",
            path=scope["path"],
            path_params={k: str(v) for k, v in (path_params or {}).items()},
            query_params=urllib.parse.parse_qs(
                scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
            ),
            headers=dict(scope.get("headers", [])),
            body=body.read,
        )
        try:
            user = await self.access.authenticate(request)
        except AccessDenied as exc:
            await body.read()  # the whole request, so the connection can serve the next one
            await _refuse(scope, send, exc)
            return
        scope = {**scope, "user": user, "auth": Credentials(user.permissions)}
        with acting_as(user):
            await self.app(scope, body.receive, send)


async def _refuse(scope: dict[str, Any], send: Send, exc: AccessDenied) -> None:
    """Answer ``{"detail": message}`` with the error's status and headers (a WebSocket
    handshake gets it as an HTTP response where the server supports that, else a close)."""
    body = encoding.dumps({"detail": exc.message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()),
    ]
    if scope["type"] == "http":
        start, part = "http.response.start", "http.response.body"
    elif "websocket.http.response" in scope.get("extensions", {}):
        start, part = "websocket.http.response.start", "websocket.http.response.body"
    else:
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": start, "status": exc.status_code, "headers": headers})
    await send({"type": part, "body": body})
