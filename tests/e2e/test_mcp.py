"""``/mcp``: the official ``mcp`` client over HTTP (the handshake era and the SDK's newer
per-request era), and the wire of the stateless transport with raw httpx."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.conftest import example_settings, start_server
from tests.sdk import Server

HANDSHAKE_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
JSON_AND_SSE = {"Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_client_lists_and_calls_tools(server: Server, mode: str) -> None:
    async with Client(server.url + "/mcp/", mode=mode) as client:
        assert client.server_info is not None
        assert client.server_info.name == "triograph"
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(server.core.graphs.graphs) == set(tools)  # one per assistant
        agent = tools["agent"]
        assert agent.title == "agent"
        assert agent.description == "Tool based on the agent assistant"
        assert agent.input_schema["type"] == "object"
        assert set(agent.input_schema["properties"]) == {"topic", "joke"}
        chat = tools["chat"].input_schema  # LangChain messages become the user's text
        assert chat["properties"]["messages"]["type"] == "string"
        assert "$defs" not in chat

        result = await client.call_tool("agent", {"topic": "cats"})
        assert result.is_error is False
        assert result.structured_content == {
            "topic": "cats and cats",
            "joke": "This is a joke about cats and cats",
        }
        assert '"joke":"This is a joke about cats and cats"' in result.content[0].text
        reply = await client.call_tool("chat", {"messages": "hello"})
        assert reply.structured_content["messages"][-1]["content"] == "hello there friend"

        failed = await client.call_tool("erroring", {})
        assert failed.is_error is True
        assert failed.content[0].text == "ValueError: boom from node"

        with pytest.raises(MCPError) as unknown:
            await client.call_tool("no_such_tool", {})
        assert unknown.value.error.code == -32602
        assert "no_such_tool" in unknown.value.error.message
    # a tools/call is a stateless run: nothing of it is left behind
    async with server.http() as h:
        assert (await h.post("/threads/search", json={})).json() == []


async def test_assistant_names_become_tool_names(server: Server) -> None:
    async with server.http() as h:
        for name in ("My Helper!", "My  Helper"):  # both sanitize to My_Helper
            r = await h.post(
                "/assistants",
                json={"graph_id": "agent", "name": name, "description": "helps"},
            )
            assert r.status_code == 200
    async with Client(server.url + "/mcp", mode="legacy") as client:
        tools = [t for t in (await client.list_tools()).tools if t.name.startswith("My")]
        assert [t.name for t in tools] == ["My_Helper"]  # the second is left out
        assert tools[0].description == "helps"
        result = await client.call_tool("My_Helper", {"topic": "x"})
        assert result.structured_content["topic"] == "x and cats"


async def rpc(server: Server, body: Any, headers: dict[str, str] | None = None) -> Any:
    async with server.http() as h:
        return await h.post("/mcp", json=body, headers={**JSON_AND_SSE, **(headers or {})})


@pytest.mark.parametrize("version", HANDSHAKE_VERSIONS)
async def test_initialize_negotiates_the_official_versions(server: Server, version: str) -> None:
    params = {
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    }
    r = await rpc(server, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert "mcp-session-id" not in r.headers  # stateless
    result = r.json()["result"]
    assert result["protocolVersion"] == version
    assert result["capabilities"]["tools"] == {"listChanged": False}
    assert result["serverInfo"]["name"] == "triograph"


async def test_the_wire_of_the_stateless_transport(server: Server) -> None:
    headers = {"MCP-Protocol-Version": "2025-06-18"}
    ping = await rpc(server, {"jsonrpc": "2.0", "id": 7, "method": "ping"}, headers)
    assert ping.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}
    listed = await rpc(server, {"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, headers)
    assert "agent" in {t["name"] for t in listed.json()["result"]["tools"]}
    unknown = await rpc(server, {"jsonrpc": "2.0", "id": 9, "method": "nope/nope"}, headers)
    assert unknown.json()["error"]["code"] == -32601
    note = await rpc(server, {"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
    assert note.status_code == 202
    async with server.http() as h:
        bad = await h.post(
            "/mcp",
            content=b"{not json",
            headers={**JSON_AND_SSE, "Content-Type": "application/json"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == -32700
        refused = await h.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "text/html", **headers},
        )
        assert refused.status_code == 406
        stream = await h.get("/mcp", headers=JSON_AND_SSE)
        assert stream.status_code == 405
        assert stream.headers["allow"] == "POST, DELETE"


async def test_disable_mcp(nursery: trio.Nursery) -> None:
    settings = example_settings(http={"disable_mcp": True})
    async for s in start_server(nursery, settings):
        async with s.http() as h:
            assert (await h.post("/mcp", json={}, headers=JSON_AND_SSE)).status_code == 404
            assert (await h.get("/info")).json()["flags"]["mcp"] is False
            paths = (await h.get("/openapi.json")).json()["paths"]
            assert "/mcp" not in paths


async def test_info_and_openapi_list_mcp(server: Server) -> None:
    async with server.http() as h:
        assert (await h.get("/info")).json()["flags"]["mcp"] is True
        operations = (await h.get("/openapi.json")).json()["paths"]["/mcp"]
        assert set(operations) == {"get", "post", "delete"}
