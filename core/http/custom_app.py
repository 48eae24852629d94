"""The custom ``http.app``: a user's ASGI app mounted in front of the API (contract §12).

Its routes take precedence, as on the official server (:class:`CustomApp`). The app is
asyncio code, so it runs on the graph loop through :meth:`GraphBridge.asgi`; this module is
the Trio side: routing, the 404 fall-through, and the app's lifespan inside ours.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, MapAdapter

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_asgi import API_SCOPE_KEY, TrioAsgi, call_api_from_scope, serve
from triograph.core.infra.graph_bridge import (
    CLEANUP_TIMEOUT,
    ASGIApp,
    GraphBridge,
    Message,
    Receive,
    Send,
)
from triograph.core.infra.settings import Settings, import_object

log = logging.getLogger("triograph.custom_app")

#: the app config key holding the custom ``http.app`` (for ``/openapi.json``)
CUSTOM_APP_KEY = "TRIOGRAPH_CUSTOM_APP"


def load_custom_app(settings: Settings) -> ASGIApp | None:
    """The ASGI app ``http.app`` names: ``./file.py:attr`` (relative to the config file's
    directory) or ``package.module:attr``; None without one. Anything else is a ConfigError."""
    spec = settings.http.get("app")
    if spec is None:
        return None
    obj = import_object(spec, settings.base_dir, what="http.app")
    if not callable(obj):
        raise ConfigError(f"http.app: {spec!r} is a {type(obj).__name__}, not an ASGI app")
    return obj  # type: ignore[no-any-return]


class _Exchange:
    """``receive``/``send`` between the client and the custom app, for one request.

    A probed exchange keeps the messages the custom app receives until it answers: if the
    answer is a 404, that response is swallowed (``fell_through``) and :meth:`replay` hands
    the kept messages to the API before the client's next ones; any other answer drops them.
    """

    def __init__(self, receive: Receive, send: Send, *, probe: bool) -> None:
        self._receive, self._send = receive, send
        self.kept: list[Message] | None = [] if probe else None
        self.started = False
        self.fell_through = False
        self._receiving = 0
        self._body_in = False

    async def receive(self) -> Message:
        self._receiving += 1
        try:
            message = await self._receive()
        finally:
            self._receiving -= 1
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._body_in = True
        if self.kept is not None:
            self.kept.append(message)
        return message

    async def _drain(self) -> None:
        """Read what is left of a request body the custom app answered without reading
        (unless it is reading it itself), so the connection can serve the next request."""
        while not self._body_in and not self._receiving:
            await self.receive()

    async def send(self, message: Message) -> None:
        if self.fell_through:
            return  # the rest of the custom app's 404
        if not self.started and message["type"] == "http.response.start":
            if self.kept is not None and message["status"] == 404:
                self.fell_through = True
                return
            self.kept = None
        self.started = True
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            await self._drain()
        await self._send(message)

    async def replay(self) -> Message:
        if self.kept:
            return self.kept.pop(0)
        return await self._receive()


class CustomApp:
    """The custom ``http.app``, mounted in front of the API (contract §12).

    Its routes take precedence, as on the official server: a request goes to it first and
    falls through to the API only when it answers 404. Only requests whose path the API
    also serves are probed like that; for any other path the custom app's answer (its own
    404 included) is final and nothing is buffered. A probed request's body is kept only
    as far as the custom app read it, and only until it answers.

    The custom app is asyncio code, so it runs on the graph loop (:meth:`GraphBridge.asgi`).
    Its lifespan runs inside ours (:meth:`lifespan`), and requests see the lifespan's
    ``state``. An exception it raises is logged; the client gets a 500 unless a response
    had started, and the server goes on.
    """

    def __init__(self, app: ASGIApp, api: ASGIApp, url_map: Map, bridge: GraphBridge) -> None:
        self.app, self.api, self.bridge = app, api, bridge
        self._url_map = url_map
        self._routes: MapAdapter | None = None
        self._state: dict[str, Any] = {}
        #: a Starlette (or FastAPI) app: the API is its router's fall-back, so the app's
        #: middleware runs for the API's routes too, as on the official server
        self.wraps_api = _route_rest_to_api(app)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # ours; the custom app's runs inside it
            await self.api(scope, receive, send)
            return
        if self.wraps_api and scope["type"] == "http":
            await self._wrapping(scope, receive, send)
            return
        probe = scope["type"] == "http" and self._api_serves(scope)
        exchange = _Exchange(receive, send, probe=probe)
        await self._run({**scope, "state": dict(self._state)}, exchange)
        if exchange.fell_through:
            await self.api(scope, exchange.replay, send)

    async def _wrapping(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The request goes through the custom app; what its router has no route for comes
        back to the API (in this task's context: the request's user) through its
        middleware, which may have changed the request or changes the response."""
        api = TrioAsgi(self.bridge, self.api)
        exchange = _Exchange(receive, send, probe=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.serve)
            await self._run({**scope, "state": dict(self._state), API_SCOPE_KEY: api.app}, exchange)
            nursery.cancel_scope.cancel()

    def _api_serves(self, scope: dict[str, Any]) -> bool:
        if self._routes is None:
            self._routes = self._url_map.bind("localhost")
        try:
            self._routes.match(scope["path"], method=scope["method"])
        except NotFound:
            return False
        except HTTPException:  # a wrong method or a redirect: the path is the API's
            return True
        return True

    async def _run(self, scope: dict[str, Any], exchange: _Exchange) -> None:
        try:
            await serve(self.bridge, self.app, scope, exchange.receive, exchange.send)
        except Exception as exc:
            log.error(
                "custom app failed on %s %s", scope.get("method"), scope["path"], exc_info=exc
            )
            if scope["type"] == "http" and not exchange.started:
                await exchange.send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain")],
                    }
                )
                await exchange.send(
                    {"type": "http.response.body", "body": b"Internal Server Error"}
                )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """The custom app's lifespan: its startup completes before we serve, its shutdown
        runs after ours (bounded by ``CLEANUP_TIMEOUT``). An app that raises before
        completing startup has no lifespan support and is served without; one that reports
        ``lifespan.startup.failed`` stops the server from starting (ConfigError)."""
        started, stopping, stopped = trio.Event(), trio.Event(), trio.Event()
        asked = False
        failure: list[str] = []
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self._state}

        async def receive() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "lifespan.startup"}
            await stopping.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                failure.append(message.get("message", ""))
            if message["type"].startswith("lifespan.startup."):
                started.set()

        async def run() -> None:
            try:
                await serve(self.bridge, self.app, scope, receive, send)
            except Exception as exc:
                if started.is_set():
                    log.error("custom app lifespan failed", exc_info=exc)
                else:
                    log.info("custom app has no lifespan support (%r)", exc)
            finally:
                started.set()
                stopped.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await started.wait()
            if failure:
                nursery.cancel_scope.cancel()
            else:
                try:
                    yield
                finally:
                    stopping.set()
                    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                        await stopped.wait()
                    nursery.cancel_scope.cancel()
        if failure:
            raise ConfigError(f"the custom http.app failed to start: {failure[0]}")


def openapi_paths(app: ASGIApp) -> tuple[dict[str, Any], dict[str, Any]]:
    """The custom app's routes for ``/openapi.json`` (they take precedence there too), and
    the component schemas they use: a FastAPI app's own document; for a Starlette app,
    each route's path and methods, summarised by its endpoint's docstring."""
    make = getattr(app, "openapi", None)
    if callable(make):
        try:
            own = make()
        except Exception as exc:
            log.warning("http.app: its OpenAPI document failed (%r); its routes are left out", exc)
            return {}, {}
        if isinstance(own, dict):
            return dict(own.get("paths") or {}), dict(
                (own.get("components") or {}).get("schemas") or {}
            )
    paths: dict[str, Any] = {}
    for route in getattr(app, "routes", None) or ():
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if not isinstance(path, str) or not methods:  # a mount, a websocket
            continue
        path = re.sub(r"{([^}:]+):[^}]+}", r"{\1}", path)  # {id:int} -> {id}
        endpoint = getattr(route, "endpoint", None)
        doc = (inspect.getdoc(endpoint) or "").strip() if endpoint is not None else ""
        operation: dict[str, Any] = {
            "tags": ["custom"],
            "summary": doc.splitlines()[0] if doc else getattr(route, "name", path),
            "responses": {"200": {"description": "The custom route's answer."}},
        }
        params = re.findall(r"{([^}]+)}", path)
        if params:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in params
            ]
        for method in sorted(set(methods) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = operation
    return paths, {}


def _route_rest_to_api(app: ASGIApp) -> bool:
    """Make the API the fall-back of a Starlette-style app's router (``app.router.default``,
    which answers what no route matches); False for an app without one."""
    router = getattr(app, "router", None)
    if router is None or not hasattr(router, "default"):
        return False
    router.default = call_api_from_scope
    return True
