"""The thread-centric protocol's channels, each a stream mode registered like any other.

A run started through ``POST /threads/{id}/commands`` (``run.start``) streams the modes
``protocol:<channel>`` for every channel below. They consume LangGraph's stream parts as
protocol events (the shape of ``astream_events(version="v3")``, the pseudo LangGraph mode
``"protocol"``: see ``_protocol_events`` in ``core/engine/execution.py``) and return
events named ``protocol|<channel>|<namespace>...`` whose data is the protocol's ``params``
(``namespace``, ``timestamp``, ``data``, ``node`` where known); the supervisor puts them in
the thread's protocol log (:mod:`triograph.core.engine.event_log`), which numbers them.

What the server adds to LangGraph's events, as the official servers do:

- ``lifecycle``: a root ``started`` when the run begins and a root ``completed``,
  ``interrupted`` (it stopped at an interrupt) or ``failed`` (an error, or cancelled) when it
  ends; LangGraph's subgraph lifecycle events (its ``LifecycleTransformer``'s), which name
  the subgraph in ``data.namespace``, move to that namespace.
- ``input``: ``input.requested`` ``{interrupt_id, payload}`` per new interrupt (found on
  root ``values`` events); ``value`` repeats ``payload``, which the Python SDK 0.4.14 reads.
- ``messages``: content-block events made from LangGraph's classic ``messages`` mode with
  LangChain's conversion (those of ``astream_events(version="v3")``, at a fraction of its
  cost: :class:`MessagesChannel`); a message a node returned whole (no streaming model) is
  replayed as the same lifecycle (``message_to_events``).
- ``checkpoints``: cut to ``{id, parent_id, step, source}``.
- ``tasks``: LangGraph's own task events (a start with ``id``, ``name``, ``input``,
  ``triggers``; a result with ``id``, ``result``, ``error``, ``interrupts``), which v3's log
  leaves out (its lifecycle events are made of them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from triograph.core.engine.emitters import (
    EmitterFactory,
    Namespace,
    RunInfo,
    SSEEvent,
    StreamModeRegistry,
)
from triograph.core.engine.event_log import protocol_name
from triograph.core.infra.hookspecs import hookimpl


def _now() -> int:
    return int(time.time() * 1000)


class _Channel:
    """Forwards LangGraph's protocol events of one method as this channel's events."""

    channel: ClassVar[str]
    #: LangGraph's protocol methods this channel reads
    methods: ClassVar[frozenset[str]]
    langgraph_modes: ClassVar[frozenset[str]] = frozenset({"protocol"})
    #: the LangGraph stream modes ``astream_events(version="v3")`` must produce for it
    protocol_modes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        if data["method"] not in self.methods:
            return ()
        return self.convert(data["params"])

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        namespace = params["namespace"]
        out = {"namespace": namespace, "timestamp": params["timestamp"], "data": params["data"]}
        return ((protocol_name(self.channel, namespace), out),)


class ValuesChannel(_Channel):
    channel = "values"
    methods = frozenset({"values"})
    protocol_modes = ("values",)


class UpdatesChannel(_Channel):
    channel = "updates"
    methods = frozenset({"updates"})
    protocol_modes = ("updates",)


class ToolsChannel(_Channel):
    channel = "tools"
    methods = frozenset({"tools"})
    protocol_modes = ("tools",)


class CustomChannel(_Channel):
    channel = "custom"
    methods = frozenset({"custom"})
    protocol_modes = ("custom",)


class TasksChannel(_Channel):
    channel = "tasks"
    methods = frozenset({"tasks"})
    protocol_modes = ("tasks",)


class CheckpointsChannel(_Channel):
    channel = "checkpoints"
    methods = frozenset({"checkpoints"})
    protocol_modes = ("checkpoints",)

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        raw = params["data"]
        config = (raw.get("config") or {}).get("configurable") or {}
        parent = (raw.get("parent_config") or {}).get("configurable") or {}
        metadata = raw.get("metadata") or {}
        data: dict[str, Any] = {
            "id": config.get("checkpoint_id"),
            "step": metadata.get("step"),
            "source": metadata.get("source"),
        }
        if parent.get("checkpoint_id"):
            data["parent_id"] = parent["checkpoint_id"]
        namespace = params["namespace"]
        out = {"namespace": namespace, "timestamp": params["timestamp"], "data": data}
        return ((protocol_name(self.channel, namespace), out),)


class _Streamed:
    """A chat model's message being streamed: what its content-block events need so far
    (the state ``chunks_to_events`` of LangChain keeps across its loop)."""

    __slots__ = ("additional_kwargs", "blocks", "call", "response_metadata", "usage")

    def __init__(self, call: object) -> None:
        self.call = call  # keeps the call's metadata (the key, by identity) alive while open
        #: source-side block key -> (wire index, accumulated block)
        self.blocks: dict[Any, tuple[int, dict[str, Any]]] = {}
        self.usage: Any = None
        self.response_metadata: dict[str, Any] = {}
        self.additional_kwargs: dict[str, Any] = {}


_TEXT_KEY = ("__lc_no_index__", "text", 0)
_TEXT_ONLY = {_TEXT_KEY}


def _text_blocks(msg: Any) -> list[tuple[Any, dict[str, Any]]] | None:
    """The protocol blocks of a plain-text chunk without ``content_blocks`` (~6.5 µs a chunk),
    or None when the chunk is not one: string content, no provider translator
    (``model_provider``), no tool call chunks, no ``reasoning_content``. What LangChain's
    ``_iter_protocol_blocks`` returns then (tests/plugins/test_protocol_channels.py checks)."""
    content = msg.content
    if (
        type(content) is not str
        or msg.tool_call_chunks
        or msg.response_metadata.get("model_provider")
        or isinstance(msg.additional_kwargs.get("reasoning_content"), str)
    ):
        return None
    return [(_TEXT_KEY, {"type": "text", "text": content})] if content else []


def _streamed(metadata: Any, open_: bool) -> bool:
    """Whether a message chunk is a chat model's token (its call's metadata: LangChain's
    ``ls_`` keys of a chat model) rather than a chunk a node returned whole (its node's)."""
    return open_ or (
        isinstance(metadata, dict)
        and (
            "ls_model_type" in metadata or metadata.get("ls_integration") == "langchain_chat_model"
        )
    )


class MessagesChannel(_Channel):
    """Content-block events (``message-start``, ``content-block-start`` / ``-delta`` /
    ``-finish``, ``message-finish``) from LangGraph's classic ``messages`` mode: a streamed
    message's chunks (``AIMessageChunk``, one LLM call's chunks sharing one metadata dict,
    the last one ``chunk_position="last"``), or a whole message a node returned (a chunk
    too) or a model produced without streaming (``message_to_events``; tool results are not
    chat messages: skipped, as LangGraph's v3 stream does). The conversion is LangChain's
    (``chunks_to_events``, driven a chunk at a time with its own helpers), so the events are
    those of ``astream_events(version="v3")``; why the server does it, see
    ``_protocol_events`` in ``core/engine/execution.py``."""

    channel = "messages"
    methods = frozenset({"messages"})
    protocol_modes = ("messages",)

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        from langchain_core.language_models import _compat_bridge as bridge
        from langchain_core.messages import AIMessageChunk, BaseMessage, ToolMessage

        self._bridge = bridge
        self._types = (AIMessageChunk, BaseMessage, ToolMessage)
        #: the messages being streamed, by the identity of their LLM call's metadata
        self._open: dict[int, _Streamed] = {}

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        payload, metadata = params["data"]
        chunk_type, message_type, tool_type = self._types
        if isinstance(payload, chunk_type) and _streamed(metadata, id(metadata) in self._open):
            events = self._chunk(payload, metadata)
        elif isinstance(payload, message_type) and not isinstance(payload, tool_type):
            events = list(self._bridge.message_to_events(payload))
        else:
            return ()
        namespace, timestamp = params["namespace"], params["timestamp"]
        name = protocol_name(self.channel, namespace)
        node = metadata.get("langgraph_node") if isinstance(metadata, dict) else None
        out = []
        for event in events:
            item: dict[str, Any] = {"namespace": namespace, "timestamp": timestamp, "data": event}
            if node is not None:
                item["node"] = node
            out.append((name, item))
        return out

    def _chunk(self, msg: Any, call: object) -> list[Any]:
        """The events of one streamed chunk: the body of ``chunks_to_events``'s loop, and
        its ending when the chunk is the message's last."""
        bridge = self._bridge
        out: list[Any] = []
        state = self._open.get(id(call))
        if state is None:
            state = self._open[id(call)] = _Streamed(call)
            out.append(bridge._build_message_start(msg, None))
        # the classic path merged generation_info into response_metadata already
        if msg.response_metadata:
            merged = dict(msg.response_metadata)
            merged.pop(bridge.GATEWAY_METADATA_RESPONSE_KEY, None)
            state.response_metadata.update(merged)
        if msg.additional_kwargs:
            state.additional_kwargs = bridge.merge_dicts(
                state.additional_kwargs, msg.additional_kwargs
            )
        blocks = _text_blocks(msg)
        if blocks is not None and state.blocks.keys() == _TEXT_ONLY:
            # the next piece of a text block already started: what the loop below does
            # then (``_accumulate`` of text into text, ``_to_content_delta``), without it
            if blocks:
                text = blocks[0][1]["text"]
                index, block = state.blocks[_TEXT_KEY]
                block["text"] = block.get("text", "") + text
                out.append(
                    {
                        "event": "content-block-delta",
                        "index": index,
                        "delta": {"type": "text-delta", "text": text},
                    }
                )
            blocks = []
        for key, block in bridge._iter_protocol_blocks(msg) if blocks is None else blocks:
            known = state.blocks.get(key)
            if known is None:
                index = len(state.blocks)
                state.blocks[key] = (index, dict(block))
                content = bridge._start_skeleton(block)
                out.append({"event": "content-block-start", "index": index, "content": content})
            else:
                index = known[0]
                state.blocks[key] = (index, bridge._accumulate(known[1], block))
            delta = bridge._to_content_delta(block)
            if delta is not None:
                out.append({"event": "content-block-delta", "index": index, "delta": delta})
        if msg.usage_metadata:
            state.usage = bridge._accumulate_usage(state.usage, msg.usage_metadata)
        if msg.chunk_position == "last":
            del self._open[id(call)]
            for index, block in state.blocks.values():
                out.append(bridge._finalize_and_build_finish(index, block))
            out.append(
                bridge._build_message_finish(
                    usage=state.usage,
                    response_metadata=state.response_metadata,
                    additional_kwargs=state.additional_kwargs,
                )
            )
        return out


def _interrupt_fields(item: Any) -> tuple[str | None, Any]:
    if isinstance(item, dict):
        return item.get("id"), item.get("value")
    return getattr(item, "id", None), getattr(item, "value", None)


class InputChannel(_Channel):
    """``input.requested`` per interrupt, from root ``values`` events (deduplicated)."""

    channel = "input"
    methods = frozenset({"values"})
    protocol_modes = ("values",)

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        self._seen: set[str] = set()

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        if params["namespace"] or not params.get("interrupts"):
            return ()
        out = []
        for item in params["interrupts"]:
            interrupt_id, value = _interrupt_fields(item)
            if interrupt_id is None or interrupt_id in self._seen:
                continue
            self._seen.add(interrupt_id)
            data = {"interrupt_id": interrupt_id, "payload": value, "value": value}
            out.append(
                (
                    protocol_name(self.channel, ()),
                    {"namespace": [], "timestamp": params["timestamp"], "data": data},
                )
            )
        return out


class LifecycleChannel(_Channel):
    """Root ``started`` / terminal events of the run, and LangGraph's subgraph ones."""

    channel = "lifecycle"
    methods = frozenset({"lifecycle", "values"})
    protocol_modes = ("values", "tasks")

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        self._interrupted = False

    def _root(self, data: dict[str, Any]) -> SSEEvent:
        return (
            protocol_name(self.channel, ()),
            {"namespace": [], "timestamp": _now(), "data": data},
        )

    def begin(self) -> Iterable[SSEEvent]:
        return (self._root({"event": "started", "graph_name": self.info.graph_id}),)

    def end(self, outcome: str, error: dict[str, Any] | None) -> Iterable[SSEEvent]:
        graph = self.info.graph_id
        if outcome == "success":
            event = "interrupted" if self._interrupted else "completed"
            return (self._root({"event": event, "graph_name": graph}),)
        message = (error or {}).get("message") or (error or {}).get("error") or outcome
        return (self._root({"event": "failed", "graph_name": graph, "error": message}),)

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        method, params = data["method"], data["params"]
        if method == "values":
            if not params["namespace"] and params.get("interrupts"):
                self._interrupted = True
            return ()
        if method != "lifecycle":
            return ()
        return self.convert(params)

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        data = params["data"]
        if not isinstance(data, dict):
            return ()
        namespace = data.get("namespace", params["namespace"])
        data = {k: v for k, v in data.items() if k != "namespace"}
        out = {"namespace": namespace, "timestamp": params["timestamp"], "data": data}
        return ((protocol_name(self.channel, namespace), out),)


BUILTIN: dict[str, EmitterFactory] = {
    "protocol:values": ValuesChannel,
    "protocol:updates": UpdatesChannel,
    "protocol:messages": MessagesChannel,
    "protocol:tools": ToolsChannel,
    "protocol:lifecycle": LifecycleChannel,
    "protocol:custom": CustomChannel,
    "protocol:tasks": TasksChannel,
    "protocol:checkpoints": CheckpointsChannel,
    "protocol:input": InputChannel,
}


@hookimpl
def triograph_register_stream_modes(registry: StreamModeRegistry) -> None:
    for name, emitter in BUILTIN.items():
        registry.add(name, emitter)
