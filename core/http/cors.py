"""CORS, for browsers (Studio, Agent Chat UI, your own page): the outermost layer of the app.

Without ``http.cors`` in ``langgraph.json`` every origin may call the API, as on the
official server: a response to a request with an ``Origin`` header carries
:data:`OPEN_HEADERS`. With ``http.cors`` (``allow_origins``, ``allow_origin_regex``,
``allow_methods``, ``allow_headers``, ``allow_credentials``, ``expose_headers``, ``max_age``)
the rules are Starlette's ``CORSMiddleware``'s, which the official server uses: only
listed origins (or ``"*"``) get ``Access-Control-Allow-Origin``, preflights of a method,
header or origin not allowed are a 400 naming which.

It is ASGI middleware rather than a Quart hook so that every answer carries the headers,
those of the authentication layer below it (a 401 a browser must be able to read) and of
the custom ``http.app`` included, and so that preflights, which carry no credentials, are
answered before authentication. It is written here rather than taken from Starlette or
quart-cors: the server does not depend on Starlette, quart-cors works only inside Quart
(so it would miss the layers below), and the rules fit in this module.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import ASGIApp, Message, Receive, Send

#: what every response to a browser carries without ``http.cors`` (contract §1.5)
OPEN_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Expose-Headers": "*",
    "Access-Control-Max-Age": "600",
    "Access-Control-Allow-Private-Network": "true",
    "Vary": "Origin",
}
ALL_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
#: headers a browser may always send (Starlette's list)
SAFELISTED_HEADERS = ("accept", "accept-language", "content-language", "content-type")
#: ``http.cors`` keys -> what each must be
CORS_KEYS = {
    "allow_origins": "a list of origins ('*' for any)",
    "allow_origin_regex": "a regular expression",
    "allow_methods": "a list of methods ('*' for any)",
    "allow_headers": "a list of header names ('*' for any)",
    "allow_credentials": "true or false",
    "expose_headers": "a list of header names",
    "max_age": "a number of seconds",
}


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class Cors:
    """The CORS layer around ``app``; :meth:`from_settings` reads ``http.cors``."""

    def __init__(self, app: ASGIApp, config: dict[str, Any] | None) -> None:
        self.app = app
        self.open = config is None
        config = config or {}
        origins = config.get("allow_origins", [])
        regex = config.get("allow_origin_regex")
        methods = [m.upper() for m in config.get("allow_methods", ["GET"])]
        headers = [h.lower() for h in config.get("allow_headers", [])]
        self.any_origin = "*" in origins
        self.origins = frozenset(origins)
        self.origin_regex = re.compile(regex) if regex else None
        self.methods = ALL_METHODS if "*" in methods else tuple(methods)
        self.any_header = "*" in headers
        self.headers = frozenset({*headers, *SAFELISTED_HEADERS})
        self.credentials = bool(config.get("allow_credentials", False))
        self.expose = ", ".join(config.get("expose_headers", []))
        self.max_age = str(config.get("max_age", 600))

    @classmethod
    def from_settings(cls, app: ASGIApp, http: dict[str, Any]) -> Cors:
        """``http.cors`` checked key by key (a ``ConfigError`` names a bad one)."""
        config = http.get("cors")
        if config is None:
            return cls(app, None)
        if not isinstance(config, dict):
            raise ConfigError("http.cors must be an object")
        for key, value in config.items():
            if key not in CORS_KEYS:
                raise ConfigError(f"http.cors.{key}: unknown key; allowed: {', '.join(CORS_KEYS)}")
            ok = {
                "allow_credentials": isinstance(value, bool),
                "max_age": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                "allow_origin_regex": isinstance(value, str) and _compiles(value),
            }.get(key, isinstance(value, list) and all(isinstance(v, str) for v in value))
            if not ok:
                raise ConfigError(f"http.cors.{key}: expected {CORS_KEYS[key]}, got {value!r}")
        return cls(app, config)

    def allows(self, origin: str) -> bool:
        if self.any_origin or origin in self.origins:
            return True
        return self.origin_regex is not None and self.origin_regex.fullmatch(origin) is not None

    def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http" or not any(n == b"origin" for n, _ in scope["headers"]):
            # not a browser's cross-origin request: the app's own call is awaited, with no
            # frame of this layer held meanwhile (an open stream's whole life)
            return self.app(scope, receive, send)
        return self._cross_origin(scope, receive, send)

    async def _cross_origin(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        request_headers = dict(scope["headers"])
        origin = request_headers[b"origin"]
        if scope["method"] == "OPTIONS" and b"access-control-request-method" in request_headers:
            await self._preflight(origin.decode("latin-1"), request_headers, send)
            return
        extra = self._simple_headers(origin.decode("latin-1"), request_headers)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k in extra}
                kept = [
                    (k, v) for k, v in message.get("headers", []) if k.decode().lower() not in names
                ]
                message = {**message, "headers": kept + _encode(extra)}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _simple_headers(self, origin: str, request_headers: dict[bytes, bytes]) -> dict[str, str]:
        if self.open:
            return OPEN_HEADERS
        if not self.allows(origin):
            return {}
        out = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if self.any_origin and not self.credentials and b"cookie" not in request_headers:
            out = {"Access-Control-Allow-Origin": "*"}
        if self.credentials:
            out["Access-Control-Allow-Credentials"] = "true"
        if self.expose:
            out["Access-Control-Expose-Headers"] = self.expose
        return out

    async def _preflight(
        self, origin: str, request_headers: dict[bytes, bytes], send: Send
    ) -> None:
        """Answer a preflight here: it carries no credentials and reaches nothing below."""
        if self.open:
            await _respond(send, 200, OPEN_HEADERS, b"OK")
            return
        method = request_headers[b"access-control-request-method"].decode("latin-1").upper()
        asked = request_headers.get(b"access-control-request-headers", b"").decode("latin-1")
        wanted = [h.strip().lower() for h in asked.split(",") if h.strip()]
        refused = []
        if not self.allows(origin):
            refused.append("origin")
        if method not in self.methods:
            refused.append("method")
        if not self.any_header and any(h not in self.headers for h in wanted):
            refused.append("headers")
        headers = {
            "Access-Control-Allow-Origin": "*"
            if self.any_origin and not self.credentials
            else origin,
            "Access-Control-Allow-Methods": ", ".join(self.methods),
            "Access-Control-Max-Age": self.max_age,
            "Vary": "Origin",
        }
        if self.any_header and wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
        elif not self.any_header:
            headers["Access-Control-Allow-Headers"] = ", ".join(sorted(self.headers))
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        if refused:
            body = ("Disallowed CORS " + ", ".join(refused)).encode()
            await _respond(send, 400, {"Content-Type": "text/plain"}, body)
            return
        await _respond(send, 200, headers, b"OK")


async def _respond(send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_encode(headers), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True
