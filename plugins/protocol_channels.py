"""The thread-centric protocol's channels, each a stream mode registered like any other.

A run started through ``POST /threads/{id}/commands`` (``run.start``) streams the modes
``protocol:<channel>`` for every channel below. They consume LangGraph's own protocol events
(``astream_events(version="v3")``, the pseudo LangGraph mode ``"protocol"``) and return
events named ``protocol|<channel>|<namespace>...`` whose data is the protocol's ``params``
(``namespace``, ``timestamp``, ``data``, ``node`` where known); the supervisor puts them in
the thread's protocol log (:mod:`triograph.core.engine.event_log`), which numbers them.

What the server adds to LangGraph's events, as the official servers do:

- ``lifecycle``: a root ``started`` when the run begins and a root ``completed``,
  ``interrupted`` (it stopped at an interrupt) or ``failed`` (an error, or cancelled) when it
  ends; LangGraph's subgraph lifecycle events, which it emits at the root scope naming the
  subgraph in ``data.namespace``, move to that namespace.
- ``input``: ``input.requested`` ``{interrupt_id, payload}`` per new interrupt (found on
  root ``values`` events); ``value`` repeats ``payload``, which the Python SDK 0.4.14 reads.
- ``messages``: content-block events as LangGraph streams them; a message a node returned
  whole (no streaming model) is replayed as the same lifecycle (``message_to_events``).
- ``checkpoints``: cut to ``{id, parent_id, step, source}``.
- ``tasks``: LangGraph's own task events (a start with ``id``, ``name``, ``input``,
  ``triggers``; a result with ``id``, ``result``, ``error``, ``interrupts``), which its
  subgraph transformer folds into lifecycle events and drops from the log: the run's stream
  transformer relays them (``core/engine/execution.py``, ``_wanting``).
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


class MessagesChannel(_Channel):
    channel = "messages"
    methods = frozenset({"messages"})
    protocol_modes = ("messages",)

    def convert(self, params: dict[str, Any]) -> Iterable[SSEEvent]:
        payload, metadata = params["data"]
        namespace, timestamp = params["namespace"], params["timestamp"]
        name = protocol_name(self.channel, namespace)
        node = metadata.get("langgraph_node") if isinstance(metadata, dict) else None
        if isinstance(payload, dict) and "event" in payload:
            events: Iterable[Any] = (payload,)
        else:  # a whole message a node returned: its content-block lifecycle, at once
            from langchain_core.language_models._compat_bridge import message_to_events
            from langchain_core.messages import BaseMessage

            if not isinstance(payload, BaseMessage):
                return ()
            events = message_to_events(payload)
        out = []
        for event in events:
            item: dict[str, Any] = {"namespace": namespace, "timestamp": timestamp, "data": event}
            if node is not None:
                item["node"] = node
            out.append((name, item))
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
