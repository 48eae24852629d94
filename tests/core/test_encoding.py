"""The JSON of LangChain's messages: what ``model_dump()`` gives, for every message class
(the server reads a message's stored fields instead of dumping it, see ``encoding``)."""

from __future__ import annotations

import inspect
from typing import Any

import orjson
import pytest
from langchain_core import messages as lc_messages
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
)
from pydantic import field_serializer

from triograph.core.infra import encoding

TOOL_CALL = {"name": "add", "args": {"a": 1}, "id": "call-1", "type": "tool_call"}
USAGE = {
    "input_tokens": 3,
    "output_tokens": 4,
    "total_tokens": 7,
    "input_token_details": {"cache_read": 1},
}

MESSAGES: list[BaseMessage] = [
    HumanMessage(content="hi", id="h1", name="ann"),
    HumanMessage(
        content=[{"type": "text", "text": "look"}, {"type": "image", "url": "http://x/y.png"}],
        additional_kwargs={"k": [1, 2]},
        priority=3,  # an extra field: BaseMessage allows them
    ),
    SystemMessage(content="be brief", response_metadata={"nested": {"a": (1, 2)}}),
    AIMessage(content="", tool_calls=[TOOL_CALL], usage_metadata=USAGE, id="a1"),  # type: ignore[list-item,unused-ignore]
    AIMessage(
        content="x",
        invalid_tool_calls=[
            {
                "name": "f",
                "args": "{bad",
                "id": "c2",
                "error": "no JSON",
                "type": "invalid_tool_call",
            }
        ],
    ),
    AIMessageChunk(content="tok", id="lc_run--1", chunk_position="last"),
    AIMessageChunk(
        content="",
        tool_call_chunks=[
            {"name": "add", "args": '{"a"', "id": "c1", "index": 0, "type": "tool_call_chunk"}
        ],
    ),
    ToolMessage(content="3", tool_call_id="call-1", artifact={"rows": [1]}, status="error"),
    ToolMessageChunk(content="3", tool_call_id="call-1"),
    ChatMessage(content="hey", role="critic"),
    FunctionMessage(content="{}", name="f"),
    RemoveMessage(id="gone"),
]


def test_every_message_class_of_langchain_is_sampled() -> None:
    classes = {
        cls
        for _, cls in inspect.getmembers(lc_messages, inspect.isclass)
        if issubclass(cls, BaseMessage) and not inspect.isabstract(cls)
    }
    sampled = {type(m) for m in MESSAGES}
    # the base classes and the chunks of messages that no model streams
    left = {c.__name__ for c in classes - sampled} - {
        "BaseMessage",
        "BaseMessageChunk",
        "HumanMessageChunk",
        "SystemMessageChunk",
        "ChatMessageChunk",
        "FunctionMessageChunk",
    }
    assert not left, f"message classes with no sample here: {sorted(left)}"


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_message_encodes_as_its_model_dump(message: BaseMessage) -> None:
    expected = orjson.dumps(message.model_dump(), default=encoding.default)
    assert encoding.dumps(message) == expected
    assert encoding.dumps([message, {"step": 1}]) == b"[" + expected + b',{"step":1}]'


class Redacted(AIMessage):
    """A user's message class with a serializer of its own: dumped by pydantic."""

    @field_serializer("content")
    def _hide(self, content: Any) -> str:
        return "<redacted>"


def test_a_message_class_with_a_serializer_is_dumped_by_pydantic() -> None:
    assert orjson.loads(encoding.dumps(Redacted(content="secret")))["content"] == "<redacted>"
