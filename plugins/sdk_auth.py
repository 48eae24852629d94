"""The ``auth`` of ``langgraph.json``: a ``langgraph_sdk.Auth`` object served as a plugin.

``"auth": {"path": "./auth.py:auth"}`` names an ``Auth`` written for the official server;
this plugin implements the two auth hooks with it, unchanged:

* ``triograph_authenticate`` calls its ``@auth.authenticate`` handler with the parameters
  the handler names (``request``, ``body``, ``headers``, ``authorization``, ``method``,
  ``path``, ``path_params``, ``query_params``, ``scope``, ``user``, ``scopes``) and turns
  what it returns (a string, a dict or object with ``identity``, or ``(permissions, user)``)
  into a :class:`~triograph.core.infra.auth.User`;
* ``triograph_authorize`` calls the most specific ``@auth.on`` handler registered for the
  resource and action, in the official order: ``(resource, action)``, ``(resource, "*")``,
  ``("*", action)``, ``("*", "*")``, then the global ``@auth.on``. No handler allows.

Where handlers run: ``Auth`` handlers are asyncio code (``httpx.AsyncClient``, ``asyncpg``,
``asyncio.sleep``), so an ``async def`` one runs on the graph loop through the bridge, as
graphs do; a plain ``def`` authenticate handler runs in a worker thread. Neither ever runs
on, or blocks, the Trio loop.

``Auth.exceptions.HTTPException`` becomes that status, detail and headers; an
``AssertionError`` in an ``@auth.on`` handler a 403 carrying its message, as on the official
server. ``disable_studio_auth`` is accepted, but the Studio header ``x-auth-scheme:
langsmith`` never bypasses ``authenticate`` here (LangSmith credentials cannot be checked
without LangSmith): it behaves as ``true`` always. ``cache`` keeps a user for
``ttl_seconds`` keyed by the values of the ``cache_keys`` headers (none cached without them).
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import trio
from werkzeug.datastructures import ImmutableMultiDict

from triograph.core.infra.auth import RESOURCE_ACTIONS, AuthContext, AuthRequest, User
from triograph.core.infra.errors import AccessDenied, ConfigError, Forbidden
from triograph.core.infra.graph_bridge import GraphBridge
from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.settings import Settings, import_object

log = logging.getLogger("triograph.auth")

#: the parameters an ``authenticate`` handler may name (others must have a default)
PARAMETERS = (
    "request",
    "body",
    "user",
    "path",
    "method",
    "scopes",
    "path_params",
    "query_params",
    "headers",
    "authorization",
    "scope",
)


class SdkAuth:
    """The plugin; one per app (registered as ``triograph.plugins.sdk_auth``)."""

    def __init__(self) -> None:
        self.auth: Any = None
        self._bridge: GraphBridge | None = None
        self._authenticate: Callable[..., Any] | None = None
        self._params: frozenset[str] = frozenset()
        self._cache: _UserCache | None = None

    @hookimpl
    def triograph_configure(self, settings: Settings, bridge: GraphBridge) -> None:
        from langgraph_sdk import Auth

        config = settings.auth
        if not config:
            raise ConfigError("the auth plugin is enabled but langgraph.json has no 'auth'")
        auth = import_object(config["path"], settings.base_dir, what="auth.path")
        if not isinstance(auth, Auth):
            raise ConfigError(
                f"auth.path: {config['path']!r} is a {type(auth).__name__}, not a "
                "langgraph_sdk.Auth (auth = Auth())"
            )
        handler = auth._authenticate_handler
        if handler is None:
            raise ConfigError(
                f"auth.path: the Auth at {config['path']!r} has no @auth.authenticate handler"
            )
        self._params = _named_parameters(handler)
        if "request" in self._params:
            try:
                import starlette.requests  # noqa: F401
            except ImportError:
                raise ConfigError(
                    "auth.path: the authenticate handler takes 'request', a Starlette "
                    "Request: install starlette, or take 'headers'/'authorization' instead"
                ) from None
        self.auth, self._bridge, self._authenticate = auth, bridge, handler
        cache = config.get("cache") or {}
        if cache.get("cache_keys"):
            self._cache = _UserCache(
                [k.lower() for k in cache["cache_keys"]],
                ttl=float(cache.get("ttl_seconds", 60)),
                size=int(cache.get("max_size", 1000)),
            )
        _warn_uncovered(auth)

    # -- authentication -----------------------------------------------------------------------

    @hookimpl
    async def triograph_authenticate(self, request: AuthRequest) -> User:
        from langgraph_sdk import Auth

        key = self._cache.key(request.headers) if self._cache is not None else None
        if key is not None and self._cache is not None:
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        handler, bridge = self._authenticate, self._bridge
        assert handler is not None, "triograph_configure was not called"
        assert bridge is not None
        args = await self._arguments(request)
        try:
            if inspect.iscoroutinefunction(handler):
                result = await bridge.call(lambda: handler(**args))
            else:
                result = await trio.to_thread.run_sync(functools.partial(handler, **args))
        except Auth.exceptions.HTTPException as exc:
            raise AccessDenied(
                str(exc.detail), status_code=exc.status_code, headers=dict(exc.headers or {})
            ) from None
        user = user_of(result)
        if key is not None and self._cache is not None:
            self._cache.put(key, user)
        return user

    async def _arguments(self, request: AuthRequest) -> dict[str, Any]:
        """The values of the parameters the handler names; the body is read only if named."""
        params, scope = self._params, request.scope
        args: dict[str, Any] = {}
        body = await request.body() if params & {"body", "request"} else b""
        if "request" in params:
            if scope["type"] != "http":
                raise Forbidden(
                    "the authenticate handler takes 'request', which a WebSocket connection "
                    "does not have; take 'headers' or 'authorization' instead"
                )
            args["request"] = _starlette_request(scope, body)
        if "body" in params:
            try:
                args["body"] = orjson.loads(body) if body.strip() else None
            except orjson.JSONDecodeError:
                args["body"] = None
        simple: dict[str, Callable[[], Any]] = {
            "user": lambda: scope.get("user"),
            "scopes": list,
            "path": lambda: request.path,
            "method": lambda: request.method,
            "path_params": lambda: dict(request.path_params),
            "query_params": lambda: ImmutableMultiDict(
                [(k, v) for k, values in request.query_params.items() for v in values]
            ),
            "headers": lambda: dict(request.headers),
            "authorization": lambda: request.authorization,
            "scope": lambda: scope,
        }
        for name in params & simple.keys():
            args[name] = simple[name]()
        return args

    # -- authorization ------------------------------------------------------------------------

    @hookimpl
    async def triograph_authorize(self, context: AuthContext, value: dict[str, Any]) -> Any:
        from langgraph_sdk import Auth

        handler = self._handler(context.resource, context.action)
        if handler is None:
            return None
        ctx = Auth.types.AuthContext(
            user=context.user,
            permissions=context.permissions,
            resource=context.resource,  # type: ignore[arg-type]
            action=context.action,  # type: ignore[arg-type]
        )
        assert self._bridge is not None
        try:
            result = await self._bridge.call(lambda: handler(ctx=ctx, value=value))
        except Auth.exceptions.HTTPException as exc:
            raise AccessDenied(
                str(exc.detail), status_code=exc.status_code, headers=dict(exc.headers or {})
            ) from None
        except AssertionError as exc:
            raise Forbidden(str(exc) or "Forbidden") from None
        return True if result is None else result

    def _handler(self, resource: str, action: str) -> Callable[..., Any] | None:
        """The most specific handler, as the official server looks it up (the last one
        registered for a key wins)."""
        handlers: dict[tuple[str, str], list[Any]] = self.auth._handlers
        for key in ((resource, action), (resource, "*"), ("*", action), ("*", "*")):
            if handlers.get(key):
                return handlers[key][-1]  # type: ignore[no-any-return]
        globals_: list[Any] = self.auth._global_handlers
        return globals_[-1] if globals_ else None


def user_of(result: Any) -> User:
    """The user an ``authenticate`` handler returned: a string (the identity), a mapping or
    object with ``identity`` (``display_name``, ``is_authenticated``, ``permissions`` and
    any other fields kept), or a ``(permissions, user)`` pair. Anything else is a
    ``ValueError`` (the client gets a 401; the server logs it)."""
    if isinstance(result, tuple):
        if len(result) != 2:
            raise ValueError(f"expected (permissions, user), got a tuple of {len(result)}")
        permissions, result = result
    elif isinstance(result, Mapping):
        permissions = result.get("permissions") or ()
    else:
        permissions = getattr(result, "permissions", None) or ()
    if isinstance(result, User):
        return result
    if isinstance(result, str):
        return User(result, permissions=permissions)
    if isinstance(result, Mapping) and "identity" in result:
        return User(
            result["identity"],
            display_name=result.get("display_name"),
            is_authenticated=result.get("is_authenticated", True),
            permissions=permissions,
            fields=result,
        )
    identity = getattr(result, "identity", None)
    if isinstance(identity, str):
        return User(
            identity,
            display_name=getattr(result, "display_name", None),
            is_authenticated=getattr(result, "is_authenticated", True),
            permissions=permissions,
            fields=_fields_of(result),
            source=result,
        )
    raise ValueError(
        "the authenticate handler must return a string, or a dict or object with "
        f"'identity', or (permissions, user); got {type(result).__name__}"
    )


def _fields_of(user: Any) -> dict[str, Any]:
    """The fields of a user object: ``model_dump`` (pydantic) or ``dict()``, when it has them."""
    for method, kwargs in (("model_dump", {"mode": "json"}), ("dict", {})):
        dump = getattr(user, method, None)
        if callable(dump):
            try:
                fields = dump(**kwargs)
            except TypeError:
                continue
            if isinstance(fields, Mapping):
                return dict(fields)
    return {}


def _named_parameters(handler: Callable[..., Any]) -> frozenset[str]:
    """The parameters of ``authenticate`` that we fill; a required one we do not know is a
    ``ConfigError`` naming it and what is supported."""
    signature = inspect.signature(handler)
    unknown = [
        name
        for name, p in signature.parameters.items()
        if name not in PARAMETERS
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if unknown:
        raise ConfigError(
            f"auth.path: the authenticate handler takes {unknown}, which is not supported; "
            f"supported parameters: {', '.join(PARAMETERS)}"
        )
    return frozenset(name for name in signature.parameters if name in PARAMETERS)


def _starlette_request(scope: dict[str, Any], body: bytes) -> Any:
    """A Starlette ``Request`` over the scope, whose body is the one already read: it never
    awaits anything, so it works on the graph loop and in a worker thread alike."""
    from starlette.requests import Request

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _warn_uncovered(auth: Any) -> None:
    """Log the resources and actions no ``@auth.on`` handler covers (they are allowed: the
    official default), unless the ``Auth`` has no ``@auth.on`` handler at all."""
    handlers, global_ = auth._handlers, auth._global_handlers
    if not handlers and not global_:
        return
    if global_ or ("*", "*") in handlers:
        return
    missing = [
        f"{resource}.{action}"
        for resource, actions in RESOURCE_ACTIONS.items()
        for action in actions
        if not ({(resource, action), (resource, "*"), ("*", action)} & handlers.keys())
    ]
    if missing:
        log.warning(
            "custom auth: no @auth.on handler covers %s; these are allowed without "
            "authorization checks (add a global '@auth.on' that returns False to deny them)",
            ", ".join(missing),
        )


class _UserCache:
    """Users by the values of some request headers, for ``ttl`` seconds, at most ``size``
    (the least recently used go first)."""

    def __init__(self, names: list[str], *, ttl: float, size: int) -> None:
        self._names = [name.encode("latin-1") for name in names]
        self._ttl, self._size = ttl, size
        self._users: collections.OrderedDict[tuple[bytes | None, ...], tuple[float, User]] = (
            collections.OrderedDict()
        )

    def key(self, headers: Mapping[bytes, bytes]) -> tuple[bytes | None, ...] | None:
        values = tuple(headers.get(name) for name in self._names)
        return None if all(v is None for v in values) else values

    def get(self, key: tuple[bytes | None, ...]) -> User | None:
        entry = self._users.get(key)
        if entry is None:
            return None
        if entry[0] < trio.current_time():
            del self._users[key]
            return None
        self._users.move_to_end(key)
        return entry[1]

    def put(self, key: tuple[bytes | None, ...], user: User) -> None:
        self._users[key] = (trio.current_time() + self._ttl, user)
        self._users.move_to_end(key)
        while len(self._users) > self._size:
            self._users.popitem(last=False)
