"""triograph-apikey: static API keys, one user per key, each user owning what they create.

Authentication and authorization are two hooks of ``triograph.core.infra.hookspecs``, and
this plugin implements both, with no ``langgraph_sdk.Auth`` involved:

* ``triograph_configure`` reads ``TRIOGRAPH_API_KEYS`` (``user:key`` pairs separated by
  commas) and refuses to start without it;
* ``triograph_authenticate`` takes the key from ``x-api-key`` or ``Authorization: Bearer``
  and answers with its user (keys are compared by their SHA-256, so the lookup time says
  nothing about how much of a wrong key was right);
* ``triograph_authorize`` stamps ``metadata.owner`` on what a user creates and answers with
  the filter ``{"owner": user}``, so every read, search, count, change and delete sees only
  the user's own; store items go under a namespace of the user's name.

The hooks are plain functions: they never block (no I/O), so they run in the request's Trio
task as they are.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from triograph.core.infra.auth import User
from triograph.core.infra.errors import AccessDenied, ConfigError
from triograph.core.infra.hookspecs import hookimpl

if TYPE_CHECKING:
    from triograph.core.infra.auth import AuthContext, AuthRequest
    from triograph.core.infra.graph_bridge import GraphBridge
    from triograph.core.infra.settings import Settings

__all__ = ["KEYS_ENV", "parse_keys"]

#: the environment variable holding ``user:key`` pairs
KEYS_ENV = "TRIOGRAPH_API_KEYS"

#: SHA-256 of each key -> its user; filled by ``triograph_configure``
_users: dict[bytes, str] = {}


def parse_keys(text: str) -> dict[bytes, str]:
    """``"alice:k1,bob:k2"`` -> {sha256(k1): "alice", ...}; a malformed pair, a short key or a
    key given twice is a ``ConfigError``."""
    users: dict[bytes, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        user, sep, key = pair.partition(":")
        if not sep or not user or len(key) < 16:
            raise ConfigError(
                f"{KEYS_ENV}: each entry is 'user:key' with a key of 16 characters or more; "
                f"got {pair.split(':')[0]!r}"
            )
        digest = hashlib.sha256(key.encode()).digest()
        if digest in users:
            raise ConfigError(f"{KEYS_ENV}: users {users[digest]!r} and {user!r} share a key")
        users[digest] = user
    return users


@hookimpl
def triograph_configure(settings: Settings, bridge: GraphBridge) -> None:
    users = parse_keys(os.environ.get(KEYS_ENV, ""))
    if not users:
        raise ConfigError(f"the API-key plugin is installed but {KEYS_ENV} names no key")
    _users.clear()
    _users.update(users)


@hookimpl
def triograph_authenticate(request: AuthRequest) -> User:
    key = request.headers.get(b"x-api-key")
    scheme, _, token = (request.authorization or "").partition(" ")
    if key is None and scheme.lower() == "bearer" and token:
        key = token.encode()
    if not key:
        raise AccessDenied("Missing API key", headers={"WWW-Authenticate": "Bearer"})
    user = _users.get(hashlib.sha256(key).digest())
    if user is None:
        raise AccessDenied("Invalid API key")
    return User(user)


@hookimpl
def triograph_authorize(context: AuthContext, value: dict[str, Any]) -> Any:
    owner = context.user.identity
    if context.resource == "store":
        value["namespace"] = (owner, *(value.get("namespace") or ()))
        return True
    metadata = value.get("metadata")
    if isinstance(metadata, dict):
        metadata["owner"] = owner
    elif context.action == "create":
        value["metadata"] = {"owner": owner}
    return {"owner": owner}
