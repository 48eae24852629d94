"""The ``messages`` channel's shortcut for plain-text chunks gives what LangChain's own block
reading gives, and declines every chunk it would not read the same way."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models._compat_bridge import _iter_protocol_blocks
from langchain_core.messages import AIMessageChunk

from triograph.plugins.protocol_channels import _text_blocks

PLAIN = [
    AIMessageChunk(content="token"),
    AIMessageChunk(content=" "),
    AIMessageChunk(content=""),
    AIMessageChunk(content="", chunk_position="last"),
    AIMessageChunk(content="done", response_metadata={"finish_reason": "stop"}),
    AIMessageChunk(content="x", additional_kwargs={"other": 1}),
]
DECLINED = [
    AIMessageChunk(content=[{"type": "text", "text": "a", "index": 0}]),
    AIMessageChunk(content="a", response_metadata={"model_provider": "openai"}),
    AIMessageChunk(content="a", response_metadata={"model_provider": "anthropic"}),
    AIMessageChunk(content="", additional_kwargs={"reasoning_content": "hmm"}),
    AIMessageChunk(
        content="", tool_call_chunks=[{"name": "f", "args": "{", "id": "c", "index": 0}]
    ),
]


@pytest.mark.parametrize("chunk", PLAIN, ids=repr)
def test_plain_text_chunks_read_as_langchain_reads_them(chunk: Any) -> None:
    assert _text_blocks(chunk) == _iter_protocol_blocks(chunk)


@pytest.mark.parametrize("chunk", DECLINED, ids=repr)
def test_other_chunks_are_left_to_langchain(chunk: Any) -> None:
    assert _text_blocks(chunk) is None
