"""A custom HTTP app mounted beside the API: ``"http": {"app": "./app.py:app"}``.

Its routes take precedence over the server's: ``GET /ok`` here answers instead of the
built-in health check. Whatever it does not route goes to the API (through the app's
middleware, if it has any), so the SDKs keep working against the same server. Like
graphs, it runs on the server's asyncio graph loop, and its lifespan runs with the
server's.
"""

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
    yield {"greeting": "hello from the lifespan"}  # every request's ``request.state``


async def hello(request: Request) -> JSONResponse:
    return JSONResponse(
        {"hello": request.state.greeting, "thread": threading.current_thread().name}
    )


async def ok(request: Request) -> JSONResponse:
    """Shadows the server's own ``GET /ok``."""
    return JSONResponse({"ok": True, "custom": True})


async def count(request: Request) -> StreamingResponse:
    """``0\\n1\\n...`` up to ``n``, one chunk at a time."""
    n = int(request.query_params.get("n", "3"))

    async def numbers() -> AsyncIterator[str]:
        for i in range(n):
            yield f"{i}\n"
            await asyncio.sleep(0)

    return StreamingResponse(numbers(), media_type="text/plain")


async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type=request.headers.get("content-type", "text/plain"))


async def boom(request: Request) -> Response:
    raise RuntimeError("boom from the custom app")


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/ok", ok),
        Route("/count", count),
        Route("/echo", echo, methods=["POST"]),
        Route("/boom", boom),
    ],
    lifespan=lifespan,
)
