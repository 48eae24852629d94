"""A custom ``http.app`` mounted beside the API (``examples/custom_app``), and the
``http.disable_*`` flags: precedence, fall-through to the API (the SDK keeps working),
streaming in both directions, failures, lifespans and bad configuration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
from werkzeug.routing import Map

from tests.conftest import EXAMPLES, example_settings, start_server
from tests.sdk import Server
from triograph.core.http.app import CustomApp, create_app
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import GraphBridge
from triograph.core.infra.limits import Limits
from triograph.core.infra.settings import Settings, load_settings

CONFIG = EXAMPLES / "custom_app" / "langgraph.json"
THIS = "tests.e2e.test_custom_app"


@pytest.fixture
async def custom(nursery: trio.Nursery) -> AsyncIterator[Server]:
    async for server in start_server(nursery, load_settings(CONFIG, shutdown_grace=0.5)):
        yield server


def with_app(spec: Any, **http: Any) -> Settings:
    return attrs.evolve(load_settings(CONFIG), http={"app": spec, **http})


# -- apps for the tests (loaded by module path, as ``http.app`` would) ---------------------------

LIFESPAN_LOG: list[str] = []


async def greedy(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads every request body, then answers 404 (JSON) for all but ``/mine``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            LIFESPAN_LOG.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    status = 200 if scope["path"] == "/mine" else 404
    payload = json.dumps({"mine": status == 200, "read": len(body)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class HeaderAndRewrite:
    """Pure ASGI middleware: every response gets ``x-wrapped: yes``; ``?stop`` answers at
    once; a ``POST /runs/wait`` has its input's ``topic`` replaced with the ``x-topic``
    header's value (the body rewritten before the API reads it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if b"stop" in scope["query_string"]:
            from starlette.responses import JSONResponse

            await JSONResponse({"stopped": True})(scope, receive, send)
            return

        async def send_wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"x-wrapped", b"yes")]}
            await send(message)

        topic = dict(scope["headers"]).get(b"x-topic")
        if topic is None or scope["path"] != "/runs/wait":
            await self.app(scope, receive, send_wrapped)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        payload = json.loads(body)
        payload["input"]["topic"] = topic.decode()
        new_body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(new_body)).encode()))
        sent = False

        async def new_receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": new_body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app({**scope, "headers": headers}, new_receive, send_wrapped)


def _wrapping_app() -> Any:
    from langgraph_sdk import get_client
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def via_sdk(request: Request) -> JSONResponse:
        """Calls back into this server through the SDK's in-process client (no URL)."""
        client = get_client()
        result = await client.runs.wait(None, "agent", input={"topic": "loops"})
        return JSONResponse({"result": result})

    async def get_only(request: Request) -> JSONResponse:
        return JSONResponse({"get": True})

    return Starlette(
        routes=[Route("/via-sdk", via_sdk), Route("/get-only", get_only)],
        middleware=[Middleware(HeaderAndRewrite)],
    )


wrapping = _wrapping_app()


async def no_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http", "only HTTP here"
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def failing_startup(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})


NOT_AN_APP = 42


# -- the example ----------------------------------------------------------------------------------


async def test_custom_routes_run_on_the_graph_loop_with_lifespan_state(custom: Server) -> None:
    async with custom.http() as http:
        r = await http.get("/hello")
    assert r.status_code == 200
    assert r.json() == {"hello": "hello from the lifespan", "thread": "triograph-graph-loop"}


async def test_custom_routes_take_precedence_over_the_api(custom: Server) -> None:
    async with custom.http() as http:
        shadowed = await http.get("/ok")
        root = await http.get("/")
        info = await http.get("/info")
    assert shadowed.json() == {"ok": True, "custom": True}
    assert root.json()["ok"] is True
    assert "custom" not in root.json()  # not shadowed
    flags = info.json()["flags"]
    assert flags["custom_app"] is True
    assert flags["assistants"] is True
    assert flags["crons"] is True
    assert flags["store_index"] is False


async def test_everything_else_falls_through_to_the_api(custom: Server) -> None:
    assistants = await custom.sync(lambda c: c.assistants.search())
    assert {a["graph_id"] for a in assistants} == {"agent", "slow"}
    thread = await custom.sync(lambda c: c.threads.create(metadata={"via": "custom"}))
    result = await custom.sync(
        lambda c: c.runs.wait(thread["thread_id"], "agent", input={"topic": "dogs"})
    )
    assert result["joke"] == "This is a joke about dogs and cats"
    parts = await custom.sync(
        lambda c: list(c.runs.stream(None, "agent", input={"topic": "x"}, stream_mode="updates"))
    )
    assert [p.event for p in parts] == ["metadata", "updates", "updates"]
    async with custom.http() as http:
        api_404 = await http.get("/threads/00000000-0000-4000-8000-000000000000")
        api_405 = await http.put("/threads/search")
        own_404 = await http.get("/nowhere")
    assert api_404.status_code == 404
    assert "detail" in api_404.json()  # the API's answer
    assert api_405.status_code == 405
    assert "POST" in api_405.headers["allow"]
    assert own_404.status_code == 404
    assert own_404.json() == {"detail": "Not Found"}  # no route here: the API's answer


async def test_streaming_in_both_directions(custom: Server) -> None:
    chunks = [bytes([65 + i % 26]) * 65536 for i in range(16)]  # 1 MiB, sent chunked

    async def upload() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    async with custom.http() as http:
        echoed = await http.post(
            "/echo", content=upload(), headers={"content-type": "application/octet-stream"}
        )
        received: list[bytes] = []
        async with http.stream("GET", "/count", params={"n": 200}) as response:
            async for piece in response.aiter_bytes():
                received.append(piece)
    assert echoed.status_code == 200
    assert echoed.content == b"".join(chunks)
    assert echoed.headers["content-type"] == "application/octet-stream"
    assert b"".join(received) == "".join(f"{i}\n" for i in range(200)).encode()


async def test_a_failing_custom_route_is_a_500_and_the_server_goes_on(custom: Server) -> None:
    async with custom.http() as http:
        boom = await http.get("/boom")
        after = await http.get("/hello")
    assert boom.status_code == 500
    assert boom.text == "Internal Server Error"
    assert after.status_code == 200
    assert (await custom.sync(lambda c: c.threads.create()))["status"] == "idle"


# -- other apps -----------------------------------------------------------------------------------


async def test_a_body_read_before_a_404_is_replayed_to_the_api(nursery: trio.Nursery) -> None:
    LIFESPAN_LOG.clear()
    # a body of several reads (100 KB of metadata: over the default metadata limit)
    settings = attrs.evolve(with_app(f"{THIS}:greedy"), limits=Limits(max_metadata_bytes=2**20))
    async for server in start_server(nursery, settings):
        assert LIFESPAN_LOG == ["lifespan.startup"]
        thread = await server.sync(lambda c: c.threads.create(metadata={"big": "x" * 100_000}))
        assert len(thread["metadata"]["big"]) == 100_000
        async with server.http() as http:
            mine = await http.post("/mine", content=b"abc")
            other = await http.post("/elsewhere", content=b"abcd")
        assert mine.json() == {"mine": True, "read": 3}
        assert other.status_code == 404  # not an API path: the custom app's 404 is final
        assert other.json() == {"mine": False, "read": 4}
        await server.shutdown()
    assert LIFESPAN_LOG == ["lifespan.startup", "lifespan.shutdown"]


async def test_a_starlette_app_wraps_the_whole_api(nursery: trio.Nursery) -> None:
    """As on the official server: the app's middleware runs for the API's routes too (and
    may answer for them, or rewrite the body the API gets), and its routes can call the
    API through the SDK's in-process client."""
    async for server in start_server(nursery, with_app(f"{THIS}:wrapping")):
        async with server.http() as http:
            info = await http.get("/info")
            stopped = await http.get("/info?stop")
            missing = await http.get("/nowhere")
            rewritten = await http.post(
                "/runs/wait",
                json={"assistant_id": "agent", "input": {"topic": "dogs"}},
                headers={"x-topic": "owls"},
            )
            looped = await http.get("/via-sdk")
            streamed = await http.post(
                "/runs/stream",
                json={"assistant_id": "agent", "input": {"topic": "x"}, "stream_mode": "updates"},
            )
        assert info.status_code == 200
        assert info.headers["x-wrapped"] == "yes"
        assert "flags" in info.json()
        assert stopped.json() == {"stopped": True}
        assert (missing.status_code, missing.headers["x-wrapped"]) == (404, "yes")
        assert missing.json() == {"detail": "Not Found"}
        assert rewritten.json()["joke"] == "This is a joke about owls and cats"
        assert looped.json()["result"]["joke"] == "This is a joke about loops and cats"
        assert streamed.headers["x-wrapped"] == "yes"
        assert [line for line in streamed.text.splitlines() if line.startswith("event:")] == [
            "event: metadata",
            "event: updates",
            "event: updates",
        ]
        # through the SDK too
        tid = (await server.sync(lambda c: c.threads.create()))["thread_id"]
        result = await server.sync(
            lambda c, tid=tid: c.runs.wait(tid, "agent", input={"topic": "cats"})
        )
        assert result["joke"] == "This is a joke about cats and cats"


async def test_the_custom_routes_are_in_the_openapi_document(custom: Server) -> None:
    async with custom.http() as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    assert paths["/hello"]["get"]["tags"] == ["custom"]
    assert paths["/echo"]["post"]["summary"] == "echo"  # no docstring: the route's name
    assert "head" not in paths["/hello"]
    assert paths["/ok"]["get"]["summary"] == "Shadows the server's own ``GET /ok``."
    assert "/threads/{thread_id}/state" in paths  # the API's stay


async def test_a_body_the_custom_app_does_not_read_leaves_the_connection_usable(
    nursery: trio.Nursery,
) -> None:
    """A custom route that answers without reading the request body (a 405 here): the
    rest of the body is read, so the next request on the connection is answered (it hung
    until ``limits.body_timeout`` before)."""
    settings = attrs.evolve(with_app(f"{THIS}:wrapping"), limits=Limits(body_timeout=3600))
    async for server in start_server(nursery, settings):
        async with server.http() as http:
            with trio.fail_after(30):
                refused = await http.post("/get-only", content=b"x" * 100_000)
                after = await http.get("/get-only")
        assert refused.status_code == 405
        assert after.json() == {"get": True}


async def test_an_app_without_lifespan_support_is_served(nursery: trio.Nursery) -> None:
    async for server in start_server(nursery, with_app(f"{THIS}:no_lifespan")):
        assert len(await server.sync(lambda c: c.assistants.search())) == 2


async def test_a_failed_custom_startup_is_a_config_error() -> None:
    async with GraphBridge().open() as bridge:
        mount = CustomApp(failing_startup, no_lifespan, Map(), bridge)
        with pytest.raises(ConfigError, match="no database"):
            async with mount.lifespan():
                pytest.fail("the server must not start")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("./missing.py:app", "cannot load"),
        ("./app.py:nothing", "nothing"),
        ("no_colon", "is not"),
        (42, "is not"),
        (f"{THIS}:NOT_AN_APP", "not an ASGI app"),
    ],
)
def test_a_bad_http_app_is_a_config_error(spec: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app(with_app(spec))


def test_disable_flags_leave_out_their_routes() -> None:
    def rules(**http: Any) -> set[str]:
        return {rule.rule for rule in create_app(example_settings(http=http)).url_map.iter_rules()}

    everything = rules()
    groups = {
        "assistants": "/assistants/search",
        "threads": "/threads/<thread_id>/state",
        "runs": "/threads/<thread_id>/runs",
        "store": "/store/items",
        "meta": "/openapi.json",
        "mcp": "/mcp",
        "a2a": "/a2a/<assistant_id>",
    }
    assert {"/ok", "/info", "/docs", "/runs/crons", *groups.values()} <= everything
    for group, rule in groups.items():
        left = rules(**{f"disable_{group}": True})
        assert rule not in left, group
        assert set(groups.values()) - {rule} <= left, group  # only that group goes
        assert {"/ok", "/"} <= left, "the health check always stays"
    assert "/runs/crons" not in rules(disable_runs=True)
    assert "/info" not in rules(disable_meta=True)
    assert "/metrics" not in rules(disable_meta=True)
    assert rules(**{f"disable_{g}": True for g in groups}) == {"/ok", "/"}
    with pytest.raises(ConfigError, match="disable_runs"):
        create_app(example_settings(http={"disable_runs": "yes"}))
