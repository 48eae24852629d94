"""Custom auth in tests: the example ``examples/auth/auth.py`` (HS256 JWTs, owner-only
resources, per-user store namespaces) on the examples' graphs, and tokens for it."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
import trio

from tests.conftest import EXAMPLES, example_settings, start_server
from tests.sdk import Server
from triograph.core.infra.settings import Settings

SECRET = "test-secret-of-at-least-32-bytes-for-hs256!"
EXAMPLE_AUTH = f"{EXAMPLES / 'auth' / 'auth.py'}:auth"


def token(sub: str, *, secret: str = SECRET, ttl: float = 600, **claims: Any) -> str:
    """A signed HS256 token for ``sub`` that expires ``ttl`` seconds from now."""
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, secret, "HS256")


def bearer(sub: str, **kwargs: Any) -> dict[str, str]:
    """``Authorization`` headers for ``sub``."""
    return {"Authorization": f"Bearer {token(sub, **kwargs)}"}


def auth_settings(path: str = EXAMPLE_AUTH, **overrides: Any) -> Settings:
    """The examples' settings with ``auth`` (the example's unless ``path``); sets the
    example's ``JWT_SECRET``."""
    os.environ["JWT_SECRET"] = SECRET
    auth = overrides.pop("auth", {"path": path})
    return example_settings(auth=auth, **overrides)


@asynccontextmanager
async def auth_server(nursery: trio.Nursery, **overrides: Any) -> AsyncIterator[Server]:
    """A server with the example auth (see :func:`auth_settings`) for the block."""
    settings = auth_settings(heartbeat_interval=1.0, shutdown_grace=0.5, **overrides)
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        yield server
