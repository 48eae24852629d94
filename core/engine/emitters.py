"""Stream-mode emitters: the protocol and its registry.

A stream mode on the wire (``"values"``, ``"messages-tuple"``, ...) is served by an emitter
registered under that name through ``triograph_register_stream_modes``. For each run, the
supervisor builds one emitter per requested mode and asks LangGraph for the union of the
LangGraph stream modes they consume. Every chunk LangGraph produces is handed, in
production order, to the emitters that consume its LangGraph mode; each returns the SSE
events ``(name, data)`` it makes of it. ``"events"`` is the pseudo-mode for
``astream_events(version="v2")`` dicts, and ``"protocol"`` the one for the thread-centric
protocol's events (in the shape of ``astream_events(version="v3")``: ``{"type": "event",
"method", "params"}`` dicts, whose LangGraph modes the emitters name in ``protocol_modes``;
a ``messages`` one carries LangGraph's classic ``(message chunk, metadata)``).

An emitter may also implement ``begin()`` (events before the run's first chunk) and
``end(outcome, error)`` (events once the outcome is known, before the run's final status is
stored); the protocol's ``lifecycle`` channel uses both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

import attrs

from triograph.core.infra.registry import Registry

#: LangGraph's own stream modes, plus "events" (``astream_events`` v2 dicts) and "protocol"
#: (the stream parts of every namespace as protocol events, see ``execution._protocol_events``).
LANGGRAPH_MODES = frozenset(
    {
        "values",
        "updates",
        "messages",
        "custom",
        "tasks",
        "checkpoints",
        "debug",
        "events",
        "protocol",
    }
)
#: LangGraph modes a "protocol" emitter may ask for
PROTOCOL_MODES = frozenset(
    {"values", "updates", "messages", "custom", "tasks", "checkpoints", "tools"}
)
#: the methods of LangGraph's protocol events: a "protocol" emitter names those it reads in
#: ``methods`` (it gets only those), else it gets them all
PROTOCOL_METHODS = frozenset(
    {"values", "updates", "messages", "custom", "tasks", "checkpoints", "tools", "lifecycle"}
)
#: the outcomes ``end`` is told: a cancelled run is "interrupted" (as its status says)
Outcome = str

Namespace = tuple[str, ...]
SSEEvent = tuple[str, Any]


@attrs.frozen(kw_only=True)
class RunInfo:
    """What an emitter may know about the run it serves."""

    run_id: str
    thread_id: str
    assistant_id: str
    graph_id: str
    stream_subgraphs: bool
    temporary: bool


class StreamEmitter(Protocol):
    """Turns LangGraph chunks into SSE events for one run and one wire mode.

    Instances live for one run and may keep state across chunks (the legacy ``messages``
    mode accumulates tokens per message id). ``emit`` runs in the run's Trio task; it must
    not block or await, and an exception it raises fails the run like a graph error would.
    """

    #: LangGraph stream modes (see ``LANGGRAPH_MODES``) whose chunks this emitter wants.
    #: An emitter may also set ``observes``, a subset of them: for a chunk of those modes,
    #: its events come after those of the other emitters (the legacy ``messages`` mode
    #: completes a message after the ``values`` event that holds it).
    langgraph_modes: ClassVar[frozenset[str]]

    def emit(self, ns: Namespace, mode: str, data: Any) -> Iterable[SSEEvent]:
        """Return the events for one chunk; ``ns`` is ``()`` for the root graph."""
        ...


EmitterFactory = Callable[[RunInfo], StreamEmitter]


class StreamModeRegistry(Registry[EmitterFactory]):
    """Wire stream-mode name -> emitter factory (usually the emitter class itself)."""

    def __init__(self) -> None:
        super().__init__("stream mode")

    def validate(self, modes: list[str]) -> list[str]:
        """The modes, de-duplicated in order, or a 422 naming the bad one and the allowed ones."""
        out: list[str] = []
        for mode in modes:
            self.get(mode)
            if mode not in out:
                out.append(mode)
        return out


def event_name(mode: str, ns: Namespace) -> str:
    """``values`` for the root graph, ``values|child:<task id>|...`` inside subgraphs."""
    return "|".join((mode, *ns)) if ns else mode
