"""``langgraph_sdk.Auth`` objects for the auth tests (``"auth": {"path":
"tests.authapps:<name>"}``), and a graph that reports who it runs for.

Tokens here are not JWTs: ``Bearer user:<identity>`` is a user, anything else is refused,
so each test says plainly who it is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph_sdk import Auth
from typing_extensions import TypedDict

HTTPException = Auth.exceptions.HTTPException


def identity_of(authorization: str | None) -> str:
    scheme, _, rest = (authorization or "").partition(" ")
    kind, _, name = rest.partition(":")
    if scheme != "Bearer" or kind != "user" or not name:
        raise HTTPException(401, "who are you?", headers={"WWW-Authenticate": "Bearer"})
    return name


# -- recording: every parameter authenticate may take, every authorization asked ----------------

recording = Auth()
SEEN: list[dict[str, Any]] = []
ASKED: list[tuple[str, str, dict[str, Any]]] = []


@recording.authenticate
async def _record(
    request: Any,
    body: Any,
    headers: dict[bytes, bytes],
    authorization: str | None,
    method: str,
    path: str,
    path_params: dict[str, str],
    query_params: Any,
    scope: dict[str, Any],
) -> dict[str, Any]:
    SEEN.append(
        {
            "body": body,
            "request_body": await request.body(),
            "request_path": request.url.path,
            "header": headers.get(b"x-probe"),
            "authorization": authorization,
            "method": method,
            "path": path,
            "path_params": path_params,
            "query": query_params.get("q"),
            "scope_type": scope["type"],
            "thread": threading.current_thread().name,  # the graph loop's
        }
    )
    name = identity_of(authorization)
    return {"identity": name, "permissions": ["read", "write"], "team": "blue"}


@recording.on
async def _ask(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    ASKED.append((ctx.resource, ctx.action, dict(value)))
    assert ctx.user.identity == ctx.user["identity"]
    assert ctx.permissions == ["read", "write"]
    assert ctx.user.team == "blue"


# -- threads: sync handlers in worker threads, async ones on an asyncio loop -------------------

blocking = Auth()
#: set to let a blocked ``x-block`` request through
RELEASE = threading.Event()
THREADS: list[str] = []


@blocking.authenticate  # type: ignore[type-var]  # sync handlers are supported too
def _blocking(headers: dict[bytes, bytes]) -> str:
    THREADS.append(threading.current_thread().name)
    if b"x-block" in headers:
        RELEASE.wait(30)
    return "blocker"


asyncio_native = Auth()
_lock: asyncio.Lock | None = None


@asyncio_native.authenticate
async def _asyncio_native(authorization: str | None) -> Auth.types.MinimalUserDict:
    """Uses asyncio the way handlers written for the official server do."""
    global _lock
    _lock = _lock or asyncio.Lock()
    async with _lock:
        await asyncio.sleep(0.001)
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0, result="done"))
        assert await task == "done"
    return {"identity": identity_of(authorization), "display_name": "Native"}


# -- failures ------------------------------------------------------------------------------------

failing = Auth()


@failing.authenticate
async def _failing(headers: dict[bytes, bytes]) -> Any:
    how = headers.get(b"x-fail", b"").decode()
    if how == "crash":
        raise RuntimeError("the database password is hunter2")
    if how == "rate":
        raise HTTPException(429, "slow down", headers={"Retry-After": "7"})
    if how == "forbidden":
        raise HTTPException(403, "banned")
    if how == "nobody":
        return None
    if how == "tuple":
        return (["admin"], {"identity": "tupled", "email": "t@example.com"})
    if how == "object":
        return _UserObject()
    return "someone"


class _UserObject:
    identity = "objecty"
    is_authenticated = True
    permissions = ("p1",)

    def shout(self) -> str:
        return "HI"

    def dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "level": 3}


@failing.on.threads.create
async def _deny_create(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> Any:
    metadata = value.get("metadata") or {}
    if metadata.get("deny") == "false":
        return False
    if metadata.get("deny") == "assert":
        raise AssertionError("not your thread")
    if metadata.get("deny") == "teapot":
        raise HTTPException(418, "I'm a teapot")
    if metadata.get("deny") == "junk":
        return 42
    if metadata.get("deny") == "badfilter":
        return {"$nonsense": 1}
    assert ctx.user.identity in ("someone", "tupled", "objecty")
    if ctx.user.identity == "objecty":
        value["metadata"] = {**metadata, "shouted": ctx.user.shout()}
    return True


# -- not an Auth at all, and an Auth without authenticate ----------------------------------------

not_an_auth = {"path": "nope"}
no_authenticate = Auth()


@no_authenticate.on
async def _only_on(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    return None


unsupported_parameter = Auth()


@unsupported_parameter.authenticate
async def _needs_db(db: Any) -> str:
    return "x"


# -- a graph that says who it runs for -----------------------------------------------------------


class WhoState(TypedDict, total=False):
    who: dict[str, Any]


def whoami(state: WhoState, config: RunnableConfig, runtime: Runtime[Any]) -> WhoState:
    configurable = config.get("configurable") or {}
    user = configurable.get("langgraph_auth_user")
    server_user = runtime.server_info.user if runtime.server_info else None
    return {
        "who": {
            "identity": user.identity if user is not None else None,
            "by_key": user["identity"] if user is not None else None,
            "fields": dict(user) if user is not None else None,
            "user_id": configurable.get("langgraph_auth_user_id"),
            "permissions": configurable.get("langgraph_auth_permissions"),
            "runtime": server_user.identity if server_user is not None else None,
            "headers": {k: v for k, v in configurable.items() if k.startswith("x-")},
            "authorization": configurable.get("authorization"),
            "at": time.time(),
        }
    }


who_graph = StateGraph(WhoState).add_node(whoami).add_edge(START, "whoami")
who_graph = who_graph.add_edge("whoami", END).compile()


# -- the official docs' tutorial, in its own shape ----------------------------------------------

tutorial = Auth()
TUTORIAL_TOKENS = {"user1-token": {"id": "user1", "name": "Alice"}, "user2-token": {"id": "user2"}}


@tutorial.authenticate
async def _get_current_user(authorization: str | None) -> Auth.types.MinimalUserDict:
    assert authorization
    scheme, token = authorization.split()
    assert scheme.lower() == "bearer"
    if token not in TUTORIAL_TOKENS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="Invalid token")
    user_data = TUTORIAL_TOKENS[token]
    return {"identity": user_data["id"]}


@tutorial.on.threads.create
async def _on_thread_create(
    ctx: Auth.types.AuthContext,
    value: Auth.types.on.threads.create.value,  # type: ignore[valid-type]  # the docs spell it so
) -> None:
    metadata = value.setdefault("metadata", {})
    metadata["owner"] = ctx.user.identity


@tutorial.on.threads.read
async def _on_thread_read(
    ctx: Auth.types.AuthContext,
    value: Auth.types.on.threads.read.value,  # type: ignore[valid-type]
) -> Auth.types.FilterType:
    return {"owner": ctx.user.identity}


@tutorial.on.assistants
async def _on_assistants(ctx: Auth.types.AuthContext, value: Any) -> None:
    raise Auth.exceptions.HTTPException(
        status_code=403, detail="User lacks the required permissions."
    )


@tutorial.on.store()
async def _authorize_store(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> None:
    namespace: tuple[str, ...] = value["namespace"]
    assert namespace[0] == ctx.user.identity, "Not authorized"


# -- a custom http.app route that reads the user, as Starlette apps do -------------------------


async def _me(request: Any) -> Any:
    from starlette.responses import JSONResponse

    user = request.user
    return JSONResponse(
        {"identity": user.identity, "display": user.display_name, "scopes": request.auth.scopes}
    )


async def _me_socket(websocket: Any) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.user.identity)
    await websocket.close()


def _custom_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute

    return Starlette(routes=[Route("/me", _me), WebSocketRoute("/me/socket", _me_socket)])


custom_app = _custom_app()


# -- per-user refusals without filters (the thread protocol's test) --------------------------------

refusing = Auth()


@refusing.authenticate
async def _refusing(authorization: str | None) -> str:
    return identity_of(authorization)


@refusing.on.threads.create_run
async def _runs_not_for_bob(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> bool:
    return ctx.user.identity != "bob"


@refusing.on.threads.read
async def _reads_not_for_bob(ctx: Auth.types.AuthContext, value: dict[str, Any]) -> bool:
    return ctx.user.identity != "bob"
