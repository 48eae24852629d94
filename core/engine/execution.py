"""Executing one run: graph input and config from the run record, chunks to SSE events.

Everything here runs in the run's Trio task; the graph itself runs on the graph loop via
the bridge. A run executes purely from its stored record (``run.kwargs``), so a run read
back from storage can be executed again.
"""

from __future__ import annotations

import functools
import time
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
        #: the LangGraph modes ``_protocol_events`` asks ``astream`` for, for "protocol" emitters
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
        """Protocol channels come from every namespace of the graph as protocol events
        (``_protocol_events``), the other modes from ``astream`` as asked: one run cannot have
        both (a 422 naming them)."""
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
    if dispatcher.wants_protocol:  # every namespace, as StreamParts (see _protocol_events)
        stream_kwargs.update(stream_mode=dispatcher.protocol_modes, subgraphs=True, version="v2")
    if graph.checkpointer is not None:  # LangGraph warns about durability without one
        stream_kwargs["durability"] = kwargs.get("durability") or "async"
    graph_in = graph_input(run)

    def split(chunk: Any) -> tuple[tuple[str, ...], str, Any]:
        # subgraphs=True yields (ns, mode, data); without it, (mode, data) from the root
        return chunk if subgraphs else ((), *chunk)

    async def chunks() -> AsyncIterator[tuple[tuple[str, ...], str, Any]]:
        if dispatcher.wants_protocol:
            lifecycle = "lifecycle" in dispatcher.by_method
            async for event in _protocol_events(pregel, graph_in, config, stream_kwargs, lifecycle):
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


class _SubgraphLifecycle:
    """LangGraph's own subgraph lifecycle inference (``LifecycleTransformer``, what
    ``astream_events(version="v3")`` runs) fed the run's ``tasks`` events: what it pushes to
    its ``lifecycle`` channel is collected, as its stream mux would forward it."""

    def __init__(self) -> None:
        from langgraph.stream import LifecycleTransformer

        self.transformer = LifecycleTransformer(())
        self.pushed: list[Any] = []
        for channel in self.transformer.init().values():
            channel._wire(self.pushed.append)  # what StreamMux does with a native channel

    def events(self) -> list[dict[str, Any]]:
        """The lifecycle events pushed since the last call, as protocol events."""
        if not self.pushed:
            return []
        pushed = self.pushed.copy()
        self.pushed.clear()  # the same list: the channel appends to it
        ms = int(time.time() * 1000)
        return [
            {
                "type": "event",
                "method": "lifecycle",
                "params": {"namespace": [], "timestamp": ms, "data": p},
            }
            for p in pushed
        ]


@functools.cache
def _quiet_tools_handler() -> None:
    """LangGraph's handler of the ``tools`` stream mode (``StreamToolCallHandler``) reads
    tool events only, yet LangChain's callback dispatch hands it every LLM event too: per
    streamed token ~3.4 µs of CPU (measured in process on the benchmark's chat graph, a
    quarter of what the protocol run's graph costs more than a classic one), spent finding
    out that its inherited no-op ``on_llm_new_token`` is no coroutine. It is marked
    ``ignore_llm``, which changes nothing else, unless the installed LangGraph gives it an
    LLM hook of its own."""
    try:
        from langchain_core.callbacks import BaseCallbackHandler
        from langgraph.pregel._tools import StreamToolCallHandler
    except ImportError:
        return
    base = set(BaseCallbackHandler.__mro__)
    own = {n for cls in StreamToolCallHandler.__mro__ if cls not in base for n in vars(cls)}
    if not any(n.startswith(("on_llm", "on_chat_model", "ignore_")) for n in own):
        StreamToolCallHandler.ignore_llm = True  # type: ignore[assignment]


async def _protocol_events(
    pregel: Any, graph_in: Any, config: Any, stream_kwargs: dict[str, Any], lifecycle: bool
) -> AsyncIterator[dict[str, Any]]:
    """The thread protocol's events of a run, in LangGraph's protocol event shape
    (``{"type": "event", "method", "params": {namespace, timestamp, data, interrupts?}}``).

    ``astream_events(version="v3")`` would give them, but it routes every chat model through
    LangChain's content-block event path and every event through its stream mux: ~51 µs of
    CPU per streamed token on the benchmark's chat graph, against ~24 µs for the same
    ``astream`` (``version="v2"`` parts, every namespace) that v3 runs underneath, with the
    classic ``messages`` mode (measured in process, bench/README.md). So the server runs that
    ``astream`` itself and does the rest of v3's part that it needs: the parts become protocol
    events as v3 converts them, the subgraph lifecycle comes from LangGraph's own
    ``LifecycleTransformer`` (:class:`_SubgraphLifecycle`, ``lifecycle``: whether a channel
    reads it), before the ``tasks`` event it follows from as in v3's log, and the ``messages``
    channel turns the message chunks into content-block events itself
    (``plugins/protocol_channels.py``)."""
    _quiet_tools_handler()
    inference = _SubgraphLifecycle() if lifecycle else None
    try:
        async for part in pregel.astream(graph_in, config, **stream_kwargs):
            params: dict[str, Any] = {
                "namespace": list(part["ns"]),
                "timestamp": int(time.time() * 1000),
                "data": part["data"],
            }
            if "interrupts" in part:
                params["interrupts"] = part["interrupts"]
            event = {"type": "event", "method": part["type"], "params": params}
            if inference is not None and part["type"] == "tasks":
                inference.transformer.process(event)  # type: ignore[arg-type]
                for pushed in inference.events():
                    yield pushed
            yield event
    except Exception as exc:  # the subgraphs still open end as v3 ends them, then the error
        if inference is not None:
            inference.transformer.fail(exc)
            for pushed in inference.events():
                yield pushed
        raise
    if inference is not None:
        inference.transformer.finalize()
        for pushed in inference.events():
            yield pushed
