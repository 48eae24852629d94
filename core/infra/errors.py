"""The one error tree of triograph.

Domain code raises these; only the error handler installed by the app factory turns them
into HTTP responses (``{"detail": message}`` with ``status_code``)::

    TriographError                 500  base class
    ├── InvalidRequest             422  a field is malformed or not allowed
    ├── BadRequest                 400  well-formed but contradictory (configurable + context)
    ├── AccessDenied               401  not authenticated (an auth plugin may pick the status)
    │   └── Forbidden              403  authenticated, but not allowed to do this
    ├── NotFound                   404  unknown assistant, thread, run or graph
    ├── Conflict                   409  already exists, thread busy, multitask "reject"
    ├── ConfigError                500  langgraph.json or a graph cannot be loaded
    ├── NotAvailable               500  an option that names a feature this build lacks
    └── PluginError                500  a plugin misbehaved; names the plugin

``code`` is a short machine-readable name, like h11's ``error_status_hint`` carries the
status next to the exception instead of in a table far away.
"""

from __future__ import annotations

from typing import Any


class TriographError(Exception):
    """Base class: a failure with a message meant for the client."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(TriographError):
    status_code = 422
    code = "invalid_request"


class BadRequest(TriographError):
    status_code = 400
    code = "bad_request"


class AccessDenied(TriographError):
    """Authentication or authorization refused the request. ``status_code`` and ``headers``
    may be set per instance: an auth plugin answers with the status it chose (a 401 with
    ``WWW-Authenticate``, say)."""

    status_code = 401
    code = "access_denied"

    def __init__(
        self,
        message: str = "Unauthorized",
        *,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.headers = dict(headers or {})


class Forbidden(AccessDenied):
    """Authorization refused: the user is known but may not do this."""

    status_code = 403
    code = "forbidden"

    def __init__(self, message: str = "Forbidden", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class NotFound(TriographError):
    status_code = 404
    code = "not_found"


class Conflict(TriographError):
    status_code = 409
    code = "conflict"


class ConfigError(TriographError):
    status_code = 500
    code = "config_error"


class NotAvailable(TriographError):
    status_code = 500
    code = "not_available"


class PluginError(TriographError):
    status_code = 500
    code = "plugin_error"

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plugin {plugin!r}: {message}")
        self.plugin = plugin
