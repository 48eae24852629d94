"""Authentication and authorization: who makes a request, and what they may do.

The decisions belong to plugins, through two hooks (:mod:`triograph.core.infra.hookspecs`):
``triograph_authenticate(request)`` says who an :class:`AuthRequest` comes from (a
:class:`User`), and ``triograph_authorize(context, value)`` whether that user may do an
action on a resource (:class:`AuthContext`), possibly editing ``value`` or answering with a
filter. The built-in plugin implementing them for a ``langgraph_sdk.Auth`` object is
``triograph.plugins.sdk_auth``; any other plugin may implement them instead.

This module holds what the server and those plugins exchange, and :class:`Access`, which
asks the plugins: the HTTP layer calls :meth:`Access.authenticate` once per request and runs
the request *acting as* the user (:func:`acting_as`, a context variable: each Trio task
started by the request inherits it); the resource services call :meth:`Access.authorize`
before they read or write, and hand the filter it returns to the storage queries. Code that
acts for nobody in particular (start-up, TTL sweeps, recovery) runs as no user and is never
asked about: without a current user every authorization allows everything.

A filter is matched against a resource's ``metadata``, as on the official server: ``{key:
value}`` and ``{key: {"$eq": value}}`` mean equality, ``{key: {"$contains": x}}`` that the
value is a list holding ``x`` (every item of ``x``, if ``x`` is a list), and ``$or`` /
``$and`` take a list of such filters. :func:`check_filters` checks that shape;
:func:`all_of` combines several.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from triograph.core.infra.errors import AccessDenied, Forbidden, PluginError

if TYPE_CHECKING:
    from triograph.core.infra.plugin_manager import Hooks

log = logging.getLogger("triograph.auth")

#: a filter: matched against a resource's metadata (see the module docstring)
Filters = dict[str, Any]
#: the resources and actions of ``triograph_authorize`` (runs are authorized on their thread)
RESOURCE_ACTIONS: dict[str, tuple[str, ...]] = {
    "assistants": ("create", "read", "update", "delete", "search"),
    "threads": ("create", "read", "update", "delete", "search", "create_run"),
    "crons": ("create", "read", "update", "delete", "search"),
    "store": ("put", "get", "search", "delete", "list_namespaces"),
}
_USER_KEYS = ("identity", "display_name", "is_authenticated", "permissions")
_OPERATORS = ("$eq", "$contains")


class User:
    """An authenticated user, as authorization plugins and graphs see it.

    It is what ``langgraph_sdk``'s ``BaseUser`` protocol asks for: ``identity``,
    ``display_name`` (the identity unless given), ``is_authenticated`` (true unless given)
    and ``permissions``, readable as attributes and as keys (``user["identity"]``), plus any
    further JSON fields (``user.email``, ``user["email"]``). ``source`` is the object the
    authentication plugin built the user from, if any: attributes the fields lack are read
    from it, but it is never stored. A run keeps :meth:`dict` and gets the user back with
    :meth:`from_dict`, so what survives a restart or crosses processes is the fields.
    """

    __slots__ = ("_fields", "source")

    def __init__(
        self,
        identity: str,
        *,
        display_name: str | None = None,
        is_authenticated: bool = True,
        permissions: Sequence[str] = (),
        fields: Mapping[str, Any] | None = None,
        source: Any = None,
    ) -> None:
        if not isinstance(identity, str) or not identity:
            raise ValueError(f"a user's identity must be a non-empty string, got {identity!r}")
        extra = {k: v for k, v in (fields or {}).items() if k not in _USER_KEYS}
        self._fields: dict[str, Any] = {
            **extra,
            "identity": identity,
            "display_name": identity if display_name is None else display_name,
            "is_authenticated": bool(is_authenticated),
            "permissions": [str(p) for p in permissions],
        }
        self.source = source

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> User:
        """A user from :meth:`dict` (what a run stores)."""
        return cls(
            data["identity"],
            display_name=data.get("display_name"),
            is_authenticated=data.get("is_authenticated", True),
            permissions=data.get("permissions") or (),
            fields=data,
        )

    @property
    def identity(self) -> str:
        return self._fields["identity"]  # type: ignore[no-any-return]

    @property
    def display_name(self) -> str:
        return self._fields["display_name"]  # type: ignore[no-any-return]

    @property
    def is_authenticated(self) -> bool:
        return self._fields["is_authenticated"]  # type: ignore[no-any-return]

    @property
    def permissions(self) -> list[str]:
        return list(self._fields["permissions"])

    def dict(self) -> dict[str, Any]:
        """Every field, JSON-able as the plugin gave them (a copy)."""
        return {**self._fields, "permissions": self.permissions}

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        source = object.__getattribute__(self, "source")
        if source is not None and not name.startswith("__"):
            return getattr(source, name)
        raise AttributeError(name)

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def get(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    def keys(self) -> Any:
        return self._fields.keys()

    def values(self) -> Any:
        return self._fields.values()

    def items(self) -> Any:
        return self._fields.items()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and other._fields == self._fields

    def __hash__(self) -> int:
        return hash(self.identity)

    def __repr__(self) -> str:
        return f"User({self.identity!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # copies and pickles keep the fields only, as a stored run does
        return (_user_from_dict, (self.dict(),))


def _user_from_dict(data: dict[str, Any]) -> User:
    return User.from_dict(data)


@attrs.frozen(kw_only=True)
class AuthRequest:
    """What ``triograph_authenticate`` gets: one HTTP request or WebSocket handshake.

    Built by the HTTP layer before the request reaches the API. Nothing here is decoded
    beyond what ASGI gives, except ``query_params`` (``parse_qsl``, all values kept).
    """

    #: the ASGI scope (``type`` is ``http`` or ``websocket``)
    scope: dict[str, Any]
    #: ``GET``, ``POST``...; ``GET`` for a WebSocket handshake
    method: str
    path: str
    #: the route's path parameters (``{"thread_id": ...}``); empty when no API route matches
    path_params: dict[str, str]
    #: the query string: name -> every value, in order
    query_params: dict[str, list[str]]
    #: request headers, lower-case names, as bytes (the last one wins for repeated names)
    headers: dict[bytes, bytes]
    #: ``await body()``: the request body, read once and handed on to the API unchanged
    body: Callable[[], Awaitable[bytes]]

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, decoded; None without one."""
        value = self.headers.get(b"authorization")
        return None if value is None else value.decode("latin-1")


@attrs.frozen(kw_only=True)
class AuthContext:
    """What ``triograph_authorize`` is asked about: ``user`` wants to do ``action`` on
    ``resource`` (one of :data:`RESOURCE_ACTIONS`)."""

    user: User
    resource: str
    action: str

    @property
    def permissions(self) -> list[str]:
        return self.user.permissions


_CURRENT_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar(
    "triograph_user", default=None
)


def current_user() -> User | None:
    """The user the current task acts for; None for the server itself (or without auth)."""
    return _CURRENT_USER.get()


@contextmanager
def acting_as(user: User | None) -> Iterator[None]:
    """Run the block (and every task it starts) as ``user``; None acts as the server."""
    token = _CURRENT_USER.set(user)
    try:
        yield
    finally:
        _CURRENT_USER.reset(token)


def check_filters(filters: Any, *, depth: int = 0) -> Filters:
    """``filters`` if it has the shape of the module docstring, else ``ValueError`` saying
    what is wrong (storage could not evaluate it: never guess, never fail open)."""
    if not isinstance(filters, dict):
        raise ValueError(f"a filter must be an object, got {type(filters).__name__}")
    for key, want in filters.items():
        if key in ("$or", "$and"):
            if not isinstance(want, list) or len(want) < 2 or depth >= 2:
                raise ValueError(
                    f"{key} takes a list of at least two filters, nested at most twice; "
                    f"got {want!r}"
                )
            for part in want:
                check_filters(part, depth=depth + 1)
        elif not isinstance(key, str) or key.startswith("$"):
            raise ValueError(f"unknown operator {key!r}")
        elif isinstance(want, dict) and (len(want) != 1 or next(iter(want)) not in _OPERATORS):
            raise ValueError(f"{key!r} takes a value or one of {_OPERATORS}, got {want!r}")
    return filters


def all_of(*filters: Filters | None) -> Filters | None:
    """The filter that holds when each of ``filters`` holds (None: no filter at all). The
    keys of one filter must all hold already, so filters with no key in common are merged
    into one (and repeated ones dropped): ``$and`` only where they overlap, keeping the
    nesting as shallow as storage accepts."""
    present: list[Filters] = []
    for f in filters:
        if f and f not in present:
            present.append(f)
    merged: Filters = {}
    for f in present:
        if merged.keys() & f.keys():
            return {"$and": present}
        merged.update(f)
    return merged or None


def scoped(filters: Filters | None) -> dict[str, Any]:
    """The keyword arguments that restrict a repository call to ``filters``: none without
    one, so a call on behalf of nobody in particular stays the plain call."""
    return {"filters": filters} if filters else {}


class Access:
    """Asks the auth plugins; one per app (``core.access``).

    ``enabled`` is true as soon as a plugin implements ``triograph_authenticate``: then every
    request except the public ones must authenticate. Authorization without authentication
    would authorize nobody, so a plugin implementing only ``triograph_authorize`` is a
    configuration error (:meth:`check`).
    """

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks
        self.enabled = hooks.has("triograph_authenticate")
        self._authorizes = hooks.has("triograph_authorize")

    def check(self) -> None:
        """Raise ``PluginError`` when plugins authorize but none authenticates."""
        if self._authorizes and not self.enabled:
            names = self.hooks.plugin_names("triograph_authorize")
            raise PluginError(
                ", ".join(names),
                "implements triograph_authorize, but no plugin implements "
                "triograph_authenticate: requests would never have a user to authorize",
            )

    async def authenticate(self, request: AuthRequest) -> User:
        """The user ``request`` comes from, or ``AccessDenied`` (401 unless a plugin chose
        another status). A plugin that fails otherwise is logged; the client gets a plain
        401, never the plugin's message."""
        try:
            user = await self.hooks.decide("triograph_authenticate", request=request)
        except AccessDenied:
            raise
        except Exception:
            log.exception("authentication of %s %s failed", request.method, request.path)
            raise AccessDenied() from None
        if user is None:
            raise AccessDenied()
        if not isinstance(user, User):
            log.error("triograph_authenticate returned %r, not a User", type(user).__name__)
            raise AccessDenied()
        return user

    async def authorize(self, resource: str, action: str, value: dict[str, Any]) -> Filters | None:
        """May the current user do ``action`` on ``resource``? Every plugin implementing
        ``triograph_authorize`` is asked (each may edit ``value`` in place, which the caller
        then applies); ``False`` from any is a 403, and the filters they return are combined
        (all must hold). Returns the filter, or None when nothing restricts the user (or
        no user is current: the server acting for itself)."""
        user = current_user()
        if user is None or not self._authorizes:
            return None
        context = AuthContext(user=user, resource=resource, action=action)
        answers = await self.hooks.collect("triograph_authorize", context=context, value=value)
        filters: list[Filters] = []
        for plugin, answer in answers:
            if answer is False:
                raise Forbidden()
            if isinstance(answer, dict):
                try:
                    filters.append(check_filters(answer))
                except ValueError as exc:
                    raise PluginError(plugin, f"{resource}.{action}: {exc}") from None
            elif answer is not None and answer is not True:
                raise PluginError(
                    plugin,
                    f"triograph_authorize({resource}.{action}) returned "
                    f"{type(answer).__name__}; expected True, False, None or a filter object",
                )
        return all_of(*filters)
