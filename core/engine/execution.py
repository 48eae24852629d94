"""Executing one run: graph input and config from the run record, chunks to SSE events.

Everything here runs in the run's Trio task; the graph itself runs on the graph loop via
the bridge. A run executes purely from its stored record (``run.kwargs``), so a run read
back from storage can be executed again.
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import attrs

from triograph.core.engine.emitters import (
    PROTOCOL_METHODS,
    PROTOCOL_MODES,
    RunInfo,
    StreamEmitter,
)
from triograph.core.infra import encoding
from triograph.core.infra.auth import User
from triograph.core.infra.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from triograph.core.engine.emitters import StreamModeRegistry
    from triograph.core.infra.graphs import Graph
    from triograph.core.infra.models import Run


@attrs.define
class RunOutput:
    """What ``/wait``, ``/join`` and ``cancel?wait`` answer, gathered from published events."""

    last_values: bytes | None = None
    interrupt_chunks: list[Any] = attrs.Factory(list)
    error: dict[str, str] | None = None

    def observe(self, name: str, payload: Any, encoded: bytes) -> None:
        if name == "values":
            self.last_values = encoded
        is_state = name in ("values", "updates") and isinstance(payload, dict)
        if is_state and payload.get("__interrupt__"):
            self.interrupt_chunks.append(payload)

    def body(self, fallback: Any) -> bytes:
        """Contract §5.5: error, else interrupts, else last values, else ``fallback``."""
        if self.error is not None:
            return encoding.dumps({"__error__": self.error})
        if self.interrupt_chunks:
            ids = [
                {_interrupt_id(i) for i in chunk["__interrupt__"]}
                for chunk in self.interrupt_chunks
            ]
            if all(s == ids[-1] for s in ids):
                return encoding.dumps(self.interrupt_chunks[-1])
            seen: dict[Any, Any] = {}
            for chunk in self.interrupt_chunks:
                for item in chunk["__interrupt__"]:
                    seen.setdefault(_interrupt_id(item), item)
            return encoding.dumps({"__interrupt__": list(seen.values())})
        if self.last_values is not None:
            return self.last_values
        return encoding.dumps(fallback)


def _interrupt_id(item: Any) -> Any:
    return getattr(item, "id", None) or (item.get("id") if isinstance(item, dict) else repr(item))


def _observes(mode: str, emitter: StreamEmitter) -> bool:
    return mode in getattr(emitter, "observes", ())


class Dispatcher:
    """Routes LangGraph chunks to the emitters of the requested wire modes, in order."""

    def __init__(self, registry: StreamModeRegistry, modes: list[str], info: RunInfo) -> None:
        self.emitters: list[StreamEmitter] = [registry.get(m)(info) for m in modes]
        self.by_mode: dict[str, list[StreamEmitter]] = defaultdict(list)
        for emitter in self.emitters:
            for lg_mode in emitter.langgraph_modes:
                self.by_mode[lg_mode].append(emitter)
        for lg_mode, emitters in self.by_mode.items():  # observers of a mode speak last
            emitters.sort(key=functools.partial(_observes, lg_mode))
        self.langgraph_modes = [m for m in self.by_mode if m not in ("events", "protocol")]
        self.wants_events = "events" in self.by_mode
        self.wants_protocol = "protocol" in self.by_mode
        #: "protocol" emitters by the protocol methods they read (``methods``; all if absent)
        self.by_method: dict[str, list[StreamEmitter]] = defaultdict(list)
        for emitter in self.by_mode.get("protocol", ()):
            for method in getattr(emitter, "methods", PROTOCOL_METHODS):
                self.by_method[method].append(emitter)
        #: what ``astream_events(version="v3")`` is asked to stream for "protocol" emitters
        self.protocol_modes = sorted(
            {m for e in self.by_mode.get("protocol", ()) for m in getattr(e, "protocol_modes", ())}
            & PROTOCOL_MODES
        )

    @staticmethod
    def uses_protocol(registry: StreamModeRegistry, modes: Iterable[str]) -> bool:
        """Whether ``modes`` are the thread protocol's channels."""
        return any("protocol" in getattr(registry.get(m), "langgraph_modes", ()) for m in modes)

    @staticmethod
    def check(registry: StreamModeRegistry, modes: list[str]) -> None:
        """Protocol channels come from ``astream_events(version="v3")``, the other modes from
        ``astream``: one run cannot have both (a 422 naming them)."""
        kinds = {"protocol" in getattr(registry.get(m), "langgraph_modes", ()) for m in modes}
        if len(kinds) > 1:
            raise InvalidRequest(
                f"stream_mode {modes}: the thread protocol's channels cannot be combined with "
                "other stream modes in one run"
            )

    def dispatch(self, ns: tuple[str, ...], mode: str, data: Any) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        if mode == "protocol":  # a protocol event goes to the emitters of its method only
            emitters = self.by_method.get(data["method"], ())
        else:
            emitters = self.by_mode.get(mode, ())
        for emitter in emitters:
            out.extend(emitter.emit(ns, mode, data))
        return out

    def begin(self) -> list[tuple[str, Any]]:
        """The emitters' events before the first chunk (``begin()``, where they have it)."""
        out: list[tuple[str, Any]] = []
        for emitter in self.emitters:
            begin = getattr(emitter, "begin", None)
            if begin is not None:
                out.extend(begin())
        return out

    def end(self, outcome: str, error: dict[str, Any] | None) -> list[tuple[str, Any]]:
        """The emitters' events once the outcome is known (``end()``, where they have it)."""
        out: list[tuple[str, Any]] = []
        for emitter in self.emitters:
            end = getattr(emitter, "end", None)
            if end is not None:
                out.extend(end(outcome, error))
        return out


def graph_input(run: Run) -> Any:
    """The run's ``input``, or a LangGraph ``Command`` built from its ``command``."""
    command = run.kwargs.get("command")
    return command_from(command) if command else run.kwargs.get("input")


def command_from(command: dict[str, Any]) -> Any:
    """A LangGraph ``Command`` from a request's ``command`` object (``goto`` items are node
    names or ``{"node", "input"}`` sends)."""
    from langgraph.types import Command, Send

    goto = command.get("goto")
    if goto is not None:
        goto = [
            Send(g["node"], g.get("input")) if isinstance(g, dict) else g
            for g in (goto if isinstance(goto, list) else [goto])
        ]
    return Command(
        update=command.get("update"),
        resume=command.get("resume"),
        goto=goto if goto is not None else (),
    )


def graph_config(run: Run) -> dict[str, Any]:
    config: dict[str, Any] = dict(run.kwargs.get("config") or {})
    config["configurable"] = dict(config.get("configurable") or {})
    user = config["configurable"].get("langgraph_auth_user")
    if isinstance(user, dict):  # stored as its fields: the graph gets the user object back
        config["configurable"]["langgraph_auth_user"] = User.from_dict(user)
    config["metadata"] = {
        **(config.get("metadata") or {}),
        **run.metadata,
        "run_id": run.run_id,
        "run_attempt": run.attempt,
    }
    config["run_id"] = uuid.UUID(run.run_id)
    # the root of astream_events is named after the graph id, as on the official server
    config.setdefault("run_name", config["configurable"].get("graph_id"))
    return config


def graph_context(graph: Graph, context: dict[str, Any] | None) -> Any:
    """The run context, with keys the graph's context schema does not declare dropped; an
    absent context still builds the schema, so its defaults apply."""
    schema = getattr(graph.builder, "context_schema", None) if hasattr(graph, "builder") else None
    if schema is None:
        return context or None
    context = context or {}
    fields: set[str] | None = None
    if attrs.has(schema):
        fields = {f.name for f in attrs.fields(schema)}
    elif hasattr(schema, "__dataclass_fields__"):
        fields = set(schema.__dataclass_fields__)
    elif hasattr(schema, "model_fields"):
        fields = set(schema.model_fields)
    elif hasattr(schema, "__annotations__"):
        fields = set(schema.__annotations__)
    if fields is None:
        return context
    kept = {k: v for k, v in context.items() if k in fields}
    if isinstance(schema, type) and not (
        hasattr(schema, "__annotations__") and issubclass(schema, dict)
    ):
        try:
            return schema(**kept)
        except Exception:  # a schema we cannot build from the dict: hand over the dict
            return kept
    return kept


def chunk_source(
    graph: Graph, run: Run, dispatcher: Dispatcher
) -> Callable[[], AsyncIterator[tuple[tuple[str, ...], str, Any]]]:
    """A factory (called on the graph loop) of ``(ns, mode, data)`` chunks for this run."""
    kwargs = run.kwargs
    config: Any = graph_config(run)
    pregel: Any = graph  # LangGraph's overloads do not cover a dynamic stream_mode list
    subgraphs = bool(kwargs.get("subgraphs"))
    stream_kwargs: dict[str, Any] = {
        "stream_mode": dispatcher.langgraph_modes or ["values"],
        "subgraphs": subgraphs,
        "interrupt_before": kwargs.get("interrupt_before"),
        "interrupt_after": kwargs.get("interrupt_after"),
        "context": graph_context(graph, kwargs.get("context")),
    }
    if dispatcher.wants_protocol:  # v3 owns stream_mode (its transformers') and subgraphs
        del stream_kwargs["stream_mode"], stream_kwargs["subgraphs"]
        relay = "tasks" in dispatcher.by_method
        stream_kwargs["transformers"] = [_wanting(dispatcher.protocol_modes, relay_tasks=relay)]
    if graph.checkpointer is not None:  # LangGraph warns about durability without one
        stream_kwargs["durability"] = kwargs.get("durability") or "async"
    graph_in = graph_input(run)

    def split(chunk: Any) -> tuple[tuple[str, ...], str, Any]:
        # subgraphs=True yields (ns, mode, data); without it, (mode, data) from the root
        return chunk if subgraphs else ((), *chunk)

    async def chunks() -> AsyncIterator[tuple[tuple[str, ...], str, Any]]:
        if dispatcher.wants_protocol:
            async for event in _protocol_events(pregel, graph_in, config, stream_kwargs):
                yield (), "protocol", event
            return
        if not dispatcher.wants_events:
            async for chunk in pregel.astream(graph_in, config, **stream_kwargs):
                yield split(chunk)
            return
        root = str(config["run_id"])
        async for event in pregel.astream_events(graph_in, config, version="v2", **stream_kwargs):
            if event["event"] == "on_chain_stream" and event["run_id"] == root:
                yield split(event["data"]["chunk"])
            else:
                yield (), "events", event

    return chunks


#: the custom channel ``_wanting`` relays LangGraph's ``tasks`` events on
TASKS_RELAY = "triograph_tasks"


def _wanting(modes: list[str], *, relay_tasks: bool = False) -> Any:
    """A LangGraph stream transformer that asks for ``modes`` and projects nothing: the
    server reads the raw protocol events, every channel of them.

    With ``relay_tasks``, it also hands on the ``tasks`` events, which LangGraph's own
    subgraph transformer folds into its lifecycle events and drops from the event log:
    each one's params go out at its place in the log as an event of the named channel
    :data:`TASKS_RELAY` (a transformer's channel, which LangGraph forwards into the log as
    ``custom:triograph_tasks``), and :func:`_protocol_events` turns it back into a ``tasks``
    event."""
    from langgraph.stream import StreamChannel, StreamTransformer

    class Wanting(StreamTransformer):
        required_stream_modes = tuple(modes)

        def init(self) -> dict[str, Any]:
            if not relay_tasks:
                return {}
            self.tasks: Any = StreamChannel(TASKS_RELAY)
            return {TASKS_RELAY: self.tasks}

        def process(self, event: Any) -> bool:
            if relay_tasks and event["method"] == "tasks":
                self.tasks.push(event["params"])
            return True

    return Wanting


async def _protocol_events(
    pregel: Any, graph_in: Any, config: Any, stream_kwargs: dict[str, Any]
) -> AsyncIterator[Any]:
    """The protocol events of ``astream_events(version="v3")`` (LangGraph calls it beta)."""
    import warnings

    # LangGraph warns on every call that v3 is beta; the filter is (re)put first each time,
    # as test harnesses reset the filters (catch_warnings would race other threads)
    warnings.filterwarnings("ignore", message="The v3 streaming protocol")
    run = await pregel.astream_events(graph_in, config, version="v3", **stream_kwargs)
    relayed = f"custom:{TASKS_RELAY}"
    async for event in run:
        if event["method"] == relayed:  # a tasks event (see _wanting)
            event = {**event, "method": "tasks", "params": event["params"]["data"]}
        yield event
