"""MCP, A2A and ``/metrics`` under custom auth: refused without credentials, and with them
the tool call and the A2A task run as the caller (not as the server)."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx2
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.auth import auth_settings
from tests.conftest import ROOT, start_server
from tests.sdk import Server
from triograph.core.infra.settings import GraphSpec

WHO = GraphSpec(graph_id="whoami", path=f"{ROOT / 'tests' / 'authapps.py'}:who_graph")
#: authenticates ``Bearer user:<name>``, authorizes everything (and records what it was asked)
RECORDING = f"{ROOT / 'tests' / 'authapps.py'}:recording"
ALICE = {"Authorization": "Bearer user:alice"}


@asynccontextmanager
async def serving(nursery: trio.Nursery) -> Any:
    settings = auth_settings(RECORDING, shutdown_grace=0.5)
    settings = attrs.evolve(settings, graphs=(*settings.graphs, WHO))
    async with asynccontextmanager(start_server)(nursery, settings) as server:
        yield server


async def whoami_id(server: Server) -> str:
    async with server.http(headers=ALICE) as h:
        rows = (await h.post("/assistants/search", json={"graph_id": "whoami"})).json()
    return rows[0]["assistant_id"]


async def test_refused_without_credentials(nursery: trio.Nursery) -> None:
    async with serving(nursery) as server, server.http() as h:
        assistant = await whoami_id(server)
        mcp = await h.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert mcp.status_code == 401
        a2a = await h.post(f"/a2a/{assistant}", json={"jsonrpc": "2.0", "id": 1, "method": "x"})
        assert a2a.status_code == 401
        assert (await h.get("/metrics")).status_code == 401
        assert (await h.get(f"/threads/{uuid.uuid4()}/storage")).status_code == 401
        for path in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"):
            assert (await h.get(path)).status_code == 200, path  # the docs page's own files


async def test_mcp_tools_run_as_the_caller(nursery: trio.Nursery) -> None:
    async with (
        serving(nursery) as server,
        httpx2.AsyncClient(headers=ALICE) as http,
        Client(streamable_http_client(server.url + "/mcp", http_client=http)) as client,
    ):
        result = await client.call_tool("whoami", {})
    assert result.is_error is False
    assert result.structured_content["who"]["identity"] == "alice"


async def test_a2a_tasks_run_as_the_caller(nursery: trio.Nursery) -> None:
    async with serving(nursery) as server:
        assistant = await whoami_id(server)
        async with server.http(headers=ALICE) as h:
            body = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "message/send",
                "params": {
                    "message": {
                        "kind": "message",
                        "messageId": str(uuid.uuid4()),
                        "role": "user",
                        "parts": [{"kind": "data", "data": {}}],
                    }
                },
            }
            task = (await h.post(f"/a2a/{assistant}", json=body)).json()["result"]
    assert task["status"]["state"] == "completed"
    assert task["artifacts"][0]["parts"][0]["data"]["who"]["identity"] == "alice"
