"""The ``messages`` channel of the thread protocol against LangGraph's own: the server makes
the content-block events from the classic ``messages`` stream (plugins/protocol_channels.py),
and they must be those ``astream_events(version="v3")`` gives for the same graph, run here in
process as the reference: text tokens, tool-call chunks (their ``tool-call-delta`` args, the
parsed call on ``content-block-finish``), usage and finish metadata, a whole message a node
returns (a message chunk too, and a tool result, which is not a chat message), a model inside a
subgraph (its namespace), a reply with reasoning content."""

from __future__ import annotations

import asyncio  # noqa: TID251 (the reference stream runs on its own asyncio loop)
import importlib.util
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

from tests.conftest import example_settings, start_server
from tests.e2e.test_protocol import command, read_events, root_terminal
from tests.sdk import Server
from triograph.core.infra.settings import GraphSpec

GRAPH = '''
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _chunks() -> list[AIMessageChunk]:
    return [
        AIMessageChunk(content="let me "),
        AIMessageChunk(content="add"),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": "add", "args": '{"a": 1', "id": "call_1", "index": 0}],
        ),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": None, "args": ', "b": 2}', "id": None, "index": 0}],
        ),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": "mul", "args": '{"x": ', "id": "call_2", "index": 1}],
        ),
        AIMessageChunk(
            content="",
            tool_call_chunks=[{"name": None, "args": "3}", "id": None, "index": 1}],
            usage_metadata={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
            response_metadata={"finish_reason": "tool_calls", "model_name": "fake-tools"},
        ),
    ]


class ToolStreamer(BaseChatModel):
    """Streams some text, then two tool calls whose arguments come in pieces."""

    @property
    def _llm_type(self) -> str:
        return "tool-streamer"

    def _generate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
        merged = _chunks()[0]
        for chunk in _chunks()[1:]:
            merged = merged + chunk
        return ChatResult(generations=[ChatGeneration(message=merged)])

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in _chunks():
            yield ChatGenerationChunk(message=chunk)


async def tools(state: State) -> State:
    return {"messages": [await ToolStreamer().ainvoke(state["messages"])]}


async def thinking(state: State) -> State:
    reply = AIMessage(content="sure", additional_kwargs={"reasoning_content": "easy"})
    model = GenericFakeChatModel(messages=iter([reply]))
    return {"messages": [await model.ainvoke(state["messages"])]}


def whole(state: State) -> State:
    done = ToolMessage(content="3", tool_call_id="call_1")
    chunk = AIMessageChunk(content="a chunk, whole", id="whole-2")  # never streamed
    return {"messages": [done, AIMessage(content="the sum is 3", id="whole-1"), chunk]}


async def chat(state: State) -> State:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="hello there friend")]))
    return {"messages": [await model.ainvoke(state["messages"])]}


inner = StateGraph(State).add_node(chat).add_edge(START, "chat").add_edge("chat", END).compile()
graph = (
    StateGraph(State)
    .add_node(tools)
    .add_node(thinking)
    .add_node(whole)
    .add_node("inner", inner)
    .add_edge(START, "tools")
    .add_edge("tools", "thinking")
    .add_edge("thinking", "whole")
    .add_edge("whole", "inner")
    .add_edge("inner", END)
    .compile()
)
'''
INPUT = {"messages": [{"role": "user", "content": "add 1 and 2"}]}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
async def graph_path(tmp_path: Any) -> Any:
    path = tmp_path / "streams.py"
    path.write_text(GRAPH)
    return path


@pytest.fixture
async def streams_server(nursery: trio.Nursery, graph_path: Any) -> AsyncIterator[Server]:
    settings = example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    spec = GraphSpec(graph_id="streams", path=f"{graph_path}:graph")
    async for s in start_server(nursery, attrs.evolve(settings, graphs=(*settings.graphs, spec))):
        yield s


def normalized(namespace: list[str], node: str | None, data: Any) -> str:
    """One messages event, run-specific ids (run ids, task ids) replaced by their order of
    appearance is not needed: by a placeholder."""
    return UUID.sub("<id>", json.dumps([namespace, node, data]))


def reference(path: Any) -> list[str]:
    """The messages events of ``astream_events(version="v3")`` for the graph, in process."""
    import warnings

    spec = importlib.util.spec_from_file_location("streams_reference", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def main() -> list[str]:
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = await module.graph.astream_events(INPUT, version="v3")
        async for event in run:
            if event["method"] != "messages":
                continue
            params = event["params"]
            payload, metadata = params["data"]
            events: list[Any]
            if not (isinstance(payload, dict) and "event" in payload):
                from langchain_core.language_models._compat_bridge import message_to_events
                from langchain_core.messages import ToolMessage

                if isinstance(payload, ToolMessage):
                    continue
                events = list(message_to_events(payload))
            else:
                events = [payload]
            node = metadata.get("langgraph_node")
            out.extend(normalized(params["namespace"], node, e) for e in events)
        return out

    return asyncio.run(main())


async def test_messages_channel_matches_langgraphs_v3_stream(
    streams_server: Server, graph_path: Any
) -> None:
    tid = str(uuid.uuid4())
    start = {"id": 1, "method": "run.start", "params": {"assistant_id": "streams", "input": INPUT}}
    status, body = await command(streams_server, tid, start)
    assert status == 200, body
    events = await read_events(
        streams_server, tid, {"channels": ["messages", "lifecycle"]}, until=root_terminal
    )
    got = [
        normalized(e["params"]["namespace"], e["params"].get("node"), e["params"]["data"])
        for e in events
        if e["method"] == "messages"
    ]
    expected = await trio.to_thread.run_sync(reference, graph_path)
    assert got == expected
    # what the comparison covers, spelled out
    data = [e["params"]["data"] for e in events if e["method"] == "messages"]
    kinds = [d["event"] for d in data]
    assert kinds.count("message-start") == kinds.count("message-finish") == 5
    deltas = [d["delta"] for d in data if d["event"] == "content-block-delta"]
    assert {"type": "tool-call-delta", "args": ', "b": 2}'} in deltas
    assert {"type": "reasoning-delta", "reasoning": "easy"} in deltas
    finished = [d["content"] for d in data if d["event"] == "content-block-finish"]
    assert {"type": "tool_call", "id": "call_1", "name": "add", "args": {"a": 1, "b": 2}} in (
        finished
    )
    assert {"type": "text", "text": "the sum is 3"} in finished  # the whole message
    assert {"type": "text", "text": "a chunk, whole"} in finished  # a whole chunk: finished
    assert not any(f.get("text") == "3" for f in finished)  # the tool result is not one
    usage = [d["usage"] for d in data if d["event"] == "message-finish" and "usage" in d]
    assert usage == [{"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}]
    inner = [e for e in events if e["method"] == "messages" and e["params"]["namespace"]]
    assert inner
    assert all(e["params"]["namespace"][0].startswith("inner:") for e in inner)
