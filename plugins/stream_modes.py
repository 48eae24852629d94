"""The nine built-in stream modes, each an emitter registered under its wire name.

Wire shapes follow contract §6.3-6.5: ``values``, ``updates``, ``custom``, ``tasks``,
``checkpoints`` and ``debug`` forward LangGraph's chunk (``debug`` checkpoint payloads gain
``checkpoint``/``parent_checkpoint`` refs); ``messages-tuple`` sends ``[chunk, metadata]``
as ``messages``; the legacy ``messages`` mode accumulates tokens per message id into
``messages/metadata``, ``messages/partial`` and ``messages/complete`` (never namespaced);
``events`` forwards ``astream_events`` v2 dicts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from triograph.core.engine.emitters import (
    EmitterFactory,
    Namespace,
    RunInfo,
    SSEEvent,
    StreamModeRegistry,
    event_name,
)
from triograph.core.engine.snapshots import checkpoint_ref
from triograph.core.infra.hookspecs import hookimpl


class _Forward:
    """Forwards one LangGraph mode's chunks as events named after the wire mode."""

    wire_name: ClassVar[str]
    langgraph_modes: ClassVar[frozenset[str]]

    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        return ((event_name(self.wire_name, ns), data),)


class ValuesEmitter(_Forward):
    wire_name = "values"
    langgraph_modes = frozenset({"values"})


class UpdatesEmitter(_Forward):
    wire_name = "updates"
    langgraph_modes = frozenset({"updates"})


class CustomEmitter(_Forward):
    wire_name = "custom"
    langgraph_modes = frozenset({"custom"})


class TasksEmitter(_Forward):
    """``tasks``: LangGraph's chunks; a task's start carries ``interrupts: []`` too, as its
    result does (the JS server's shape, which its clients read)."""

    wire_name = "tasks"
    langgraph_modes = frozenset({"tasks"})

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        if isinstance(data, dict) and "triggers" in data and "interrupts" not in data:
            data = {**data, "interrupts": []}
        return ((event_name(self.wire_name, ns), data),)


class CheckpointsEmitter(_Forward):
    wire_name = "checkpoints"
    langgraph_modes = frozenset({"checkpoints"})


class DebugEmitter(_Forward):
    wire_name = "debug"
    langgraph_modes = frozenset({"debug"})

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        if isinstance(data, dict) and data.get("type") == "checkpoint":
            payload = dict(data["payload"])
            # the debug stream carries the plain three-key refs (contract §6.3)
            payload["checkpoint"] = checkpoint_ref(payload.get("config"), with_map=False)
            payload["parent_checkpoint"] = checkpoint_ref(
                payload.get("parent_config"), with_map=False
            )
            data = {**data, "payload": payload}
        return ((event_name(self.wire_name, ns), data),)


class MessagesTupleEmitter(_Forward):
    """``messages-tuple``: one ``messages`` event per LangGraph message chunk."""

    wire_name = "messages"
    langgraph_modes = frozenset({"messages"})

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        message, metadata = data
        return ((event_name("messages", ns), [message, metadata]),)


class MessagesEmitter:
    """Legacy ``messages``: the full message so far, per message id (contract §6.4); once a
    message is in the state (a ``values`` chunk holds it), ``messages/complete`` with it,
    once per message id, as the JS server sends it (the official Python server never
    completes a streamed message)."""

    langgraph_modes: ClassVar[frozenset[str]] = frozenset({"messages", "values"})
    observes: ClassVar[frozenset[str]] = frozenset({"values"})

    def __init__(self, info: RunInfo) -> None:
        self.info = info
        self._messages: dict[str, Any] = {}
        self._completed: set[str] = set()

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        from langchain_core.messages import BaseMessageChunk, message_chunk_to_message

        if mode == "values":
            return self._complete(data)
        message, metadata = data
        msg_id = getattr(message, "id", None) or ""
        events: list[SSEEvent] = []
        seen = self._messages.get(msg_id)
        if seen is None:
            events.append(("messages/metadata", {msg_id: {"metadata": metadata}}))
        if isinstance(message, BaseMessageChunk):
            total = message if seen is None else seen + message
            self._messages[msg_id] = total
            events.append(("messages/partial", [message_chunk_to_message(total)]))
        elif msg_id not in self._completed:
            self._messages[msg_id] = message
            if msg_id:
                self._completed.add(msg_id)
            events.append(("messages/complete", [message]))
        return events

    def _complete(self, values: Any) -> list[SSEEvent]:
        messages = values.get("messages") if isinstance(values, dict) else None
        if not isinstance(messages, list):
            messages = [messages] if messages is not None else []
        new = []
        for message in messages:
            msg_id = getattr(message, "id", None)
            if msg_id is None and isinstance(message, dict):
                msg_id = message.get("id")
            if not msg_id or msg_id in self._completed:
                continue
            self._completed.add(msg_id)
            new.append(message)
        return [("messages/complete", new)] if new else []


class EventsEmitter:
    """``events``: LangChain ``astream_events`` v2 dicts, as they come."""

    langgraph_modes: ClassVar[frozenset[str]] = frozenset({"events"})

    def __init__(self, info: RunInfo) -> None:
        self.info = info

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        return (("events", data),)


BUILTIN: dict[str, EmitterFactory] = {
    "values": ValuesEmitter,
    "updates": UpdatesEmitter,
    "custom": CustomEmitter,
    "tasks": TasksEmitter,
    "checkpoints": CheckpointsEmitter,
    "debug": DebugEmitter,
    "messages-tuple": MessagesTupleEmitter,
    "messages": MessagesEmitter,
    "events": EventsEmitter,
}


@hookimpl
def triograph_register_stream_modes(registry: StreamModeRegistry) -> None:
    for name, emitter in BUILTIN.items():
        registry.add(name, emitter)
