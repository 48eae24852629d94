"""Custom auth with signed tokens: each user sees and changes only what they own.

Written against ``langgraph_sdk.Auth`` as the official server's docs describe it, so the
same file works there and on triograph. Clients send ``Authorization: Bearer <JWT>``, a
token signed with HS256 and the secret in ``JWT_SECRET`` (``sub`` is the user;
``permissions`` and ``name`` are optional claims). Needs ``pip install pyjwt``.
"""

import os

import jwt
from langgraph_sdk import Auth

auth = Auth()
SECRET = os.environ["JWT_SECRET"]  # no default: a server without its secret must not start


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    """Who is calling: the ``sub`` of a valid, unexpired token."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="Missing bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["sub"]})
    except jwt.ExpiredSignatureError:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Token expired") from None
    except jwt.InvalidTokenError:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid token") from None
    return {
        "identity": claims["sub"],
        "display_name": claims.get("name", claims["sub"]),
        "permissions": claims.get("permissions", []),
    }


@auth.on
async def owner_only(ctx: Auth.types.AuthContext, value: dict) -> Auth.types.FilterType:
    """Threads, runs, assistants and crons: stamp the creator as ``owner``, and show each
    user only what they own."""
    filters = {"owner": ctx.user.identity}
    metadata = value.setdefault("metadata", {})
    if metadata is None:
        metadata = value["metadata"] = {}
    metadata.update(filters)
    return filters


@auth.on.store()
async def own_namespace(ctx: Auth.types.AuthContext, value: dict) -> None:
    """Store items: each user's live under their identity, so nobody reaches another's."""
    value["namespace"] = (ctx.user.identity, *(value.get("namespace") or ()))
