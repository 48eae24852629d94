"""MCP tools: each assistant is a tool, and calling it runs the assistant's graph.

The protocol itself (JSON-RPC, ``initialize`` and the protocol versions, the Streamable HTTP
transport) is the official ``mcp`` SDK's: :func:`mcp_server` builds its low-level
``Server`` with two handlers, and ``core.http.routes.mcp`` serves it statelessly at
``/mcp``. What is ours is the mapping, after the official server's:

* ``tools/list``: one tool per assistant, in pages of :data:`PAGE`. The tool's name is the
  assistant's name with whitespace turned to ``_`` and anything outside ``[A-Za-z0-9_.-]``
  dropped (at most 128 characters; a second assistant with the same tool name is left out);
  its title is the assistant's name, its description the assistant's (or "Tool based on the
  X assistant"), its input schema the graph's input JSON schema, in which every property
  holding LangChain messages becomes a plain string (the user's message: LangGraph's
  ``add_messages`` turns a string into a human message).
* ``tools/call``: a stateless run of the assistant ``tools/list`` shows under that name (the
  official server refuses a name two assistants share, though it lists it), the arguments
  as its input, waited for; the result is its output as JSON text (and as
  ``structuredContent`` when it is an object), or ``isError`` with the error when the run
  failed or was refused. An unknown tool is a JSON-RPC error (``-32602``).
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import TYPE_CHECKING, Any

import mcp_types as types
import orjson
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from triograph.core.infra.errors import TriographError
from triograph.core.infra.models import AssistantSearch, RunCreate, structure

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from triograph.core.infra.context import Core

#: tools per ``tools/list`` page
PAGE = 100
#: assistants searched for the one a ``tools/call`` names
MAX_ASSISTANTS = 1000
MESSAGE_TEXT = "The user message to send to the agent."
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def tool_name(assistant_name: str) -> str:
    """An assistant's name as an MCP tool name (see the module docstring)."""
    return _NOT_IN_NAME.sub("", re.sub(r"\s+", "_", assistant_name))[:128]


def tool_schema(input_schema: dict[str, Any] | None) -> dict[str, Any]:
    """A graph's input JSON schema as a tool's ``inputSchema``: message-list properties
    become a string, LangChain message definitions are dropped, ``type: object`` is set."""
    schema = dict(input_schema or {})
    defs = schema.get("$defs") or {}
    messages = {name for name in defs if name.endswith(("Message", "MessageChunk"))}
    if messages:
        props = dict(schema.get("properties") or {})
        for key, prop in props.items():
            if _refers_to(prop, messages):
                props[key] = {"type": "string", "description": MESSAGE_TEXT}
        schema["properties"] = props
        kept = _used(props, {name: d for name, d in defs.items() if name not in messages})
        if kept:
            schema["$defs"] = kept
        else:
            schema.pop("$defs", None)
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def _used(root: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """The ``defs`` that ``root`` refers to, directly or through other definitions."""
    used: dict[str, Any] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        for name, definition in defs.items():
            if name not in used and _refers_to(node, {name}):
                used[name] = definition
                todo.append(definition)
    return used


def _refers_to(node: Any, names: set[str]) -> bool:
    """Whether ``node`` holds a ``$ref`` to one of the ``$defs`` ``names``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.rpartition("/")[2] in names:
            return True
        return any(_refers_to(value, names) for value in node.values())
    if isinstance(node, list):
        return any(_refers_to(value, names) for value in node)
    return False


def mcp_server(core: Core) -> Server[Any]:
    """The SDK's server for ``core``'s assistants; its handlers run in the transport's task
    group (not a request's context), so they reach the services through ``core``."""
    version = _version()

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        cursor = params.cursor if params is not None else None
        try:
            offset = int(cursor or 0)
        except ValueError:
            raise MCPError(types.INVALID_PARAMS, f"invalid cursor {cursor!r}") from None
        rows, _ = await core.assistants.search(AssistantSearch(limit=PAGE, offset=offset))
        tools, seen = [], set()
        for row in rows:
            name = tool_name(row.get("name") or row["graph_id"])
            if not name or name in seen:
                continue
            seen.add(name)
            try:
                schemas = await core.assistants.schemas(row["assistant_id"])
            except TriographError:
                continue  # a graph whose schema cannot be built is no tool
            tools.append(
                types.Tool(
                    name=name,
                    title=row.get("name"),
                    description=row.get("description")
                    or f"Tool based on the {row.get('name')} assistant",
                    input_schema=tool_schema(schemas.get("input_schema")),
                    annotations=types.ToolAnnotations(
                        read_only_hint=False,
                        destructive_hint=False,
                        idempotent_hint=False,
                        open_world_hint=True,
                    ),
                )
            )
        more = len(rows) == PAGE
        return types.ListToolsResult(tools=tools, next_cursor=str(offset + PAGE) if more else None)

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        rows, _ = await core.assistants.search(AssistantSearch(limit=MAX_ASSISTANTS))
        # the first with that name, in the order tools/list shows (and keeps) them
        matches = [row for row in rows if tool_name(row.get("name") or "") == params.name]
        if not matches:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name!r}")
        try:
            body = structure(
                {"assistant_id": matches[0]["assistant_id"], "input": params.arguments or {}},
                RunCreate,
            )
            run, handle = await core.runs.create(None, body)
            await handle.done.wait()
            output = orjson.loads(await core.runs.result(run, handle))
        except TriographError as exc:
            return _failed(exc.message)
        if isinstance(output, dict) and "__error__" in output:
            error = output["__error__"]
            return _failed(f"{error.get('error')}: {error.get('message')}")
        return types.CallToolResult(
            content=[types.TextContent(text=orjson.dumps(output).decode())],
            structured_content=output if isinstance(output, dict) else None,
        )

    return Server(
        "triograph",
        version=version,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def _failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _version() -> str:
    try:
        return metadata.version("triograph")
    except metadata.PackageNotFoundError:
        return "0"
