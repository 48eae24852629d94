"""Graphs from ``langgraph.json``: loading them, and getting one ready for a run.

A graph spec's attribute may be a compiled graph, an uncompiled ``StateGraph`` (compiled
here), or a factory: a callable taking the run's config (or nothing), sync or async,
called anew for every run. Each graph id becomes a system assistant whose id is
``uuid5(6ba7b821-9dad-11d1-80b4-00c04fd430c8, graph_id)``, exactly as the official server
derives it (contract §2.1; note the namespace is *not* ``uuid.NAMESPACE_URL``).
"""

from __future__ import annotations

import inspect
import os
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from triograph.core.infra.errors import ConfigError, InvalidRequest, NotFound
from triograph.core.infra.settings import import_object

if TYPE_CHECKING:
    from typing import TypeAlias

    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.pregel import Pregel
    from langgraph.store.base import BaseStore

    Graph: TypeAlias = Pregel[Any, Any, Any, Any]

    from triograph.core.infra.graph_bridge import GraphBridge
    from triograph.core.infra.settings import GraphSpec, Settings

ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


def system_assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(ASSISTANT_NAMESPACE, graph_id))


@attrs.define(kw_only=True)
class LoadedGraph:
    graph_id: str
    description: str | None
    #: a compiled graph, or None when ``factory`` builds one per run
    graph: Graph | None
    factory: Callable[..., Any] | None
    name: str
    #: the compiled graph with the storage's checkpointer and store attached
    stateful: Graph | None = None
    #: the same without a checkpointer, for temporary (stateless) runs
    stateless: Graph | None = None


class GraphRegistry:
    """The graphs this server serves, by graph id."""

    def __init__(self, settings: Settings) -> None:
        self.graphs: dict[str, LoadedGraph] = {}
        for dep in settings.dependencies:
            path = str((settings.base_dir / dep).resolve())
            if path not in sys.path:
                sys.path.insert(0, path)
        for key, value in settings.env.items():
            os.environ.setdefault(key, value)
        for spec in settings.graphs:
            self.graphs[spec.graph_id] = _load(spec, settings)
        self.by_assistant_id = {system_assistant_id(g): g for g in self.graphs}

    def attach(self, checkpointer: BaseCheckpointSaver[Any], store: BaseStore) -> None:
        """Give every compiled graph the storage's checkpointer and store."""
        for loaded in self.graphs.values():
            if loaded.graph is not None:
                loaded.stateful = loaded.graph.copy({"checkpointer": checkpointer, "store": store})
                loaded.stateless = loaded.graph.copy({"checkpointer": None, "store": store})
        self._checkpointer, self._store = checkpointer, store

    def get(self, graph_id: str) -> LoadedGraph:
        try:
            return self.graphs[graph_id]
        except KeyError:
            raise NotFound(
                f"Graph '{graph_id}' not found. Expected one of: {sorted(self.graphs)}"
            ) from None

    def resolve_assistant_id(self, value: str) -> str:
        """A graph id or an assistant UUID -> the assistant UUID (contract §2.1)."""
        if value in self.graphs:
            return system_assistant_id(value)
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise InvalidRequest(
                f"Invalid assistant: '{value}'. Must be either:\n- A valid assistant UUID, or\n"
                f"- One of the registered graphs: {', '.join(self.graphs)}"
            ) from None

    async def build(
        self, bridge: GraphBridge, graph_id: str, config: dict[str, Any], *, temporary: bool
    ) -> Graph:
        """The graph ready for one run: factories are called now, on the graph loop."""
        loaded = self.get(graph_id)
        if loaded.graph is not None:
            ready = loaded.stateless if temporary else loaded.stateful
            assert ready is not None, "attach() was not called"
            return ready
        assert loaded.factory is not None
        factory = loaded.factory

        async def make() -> Any:
            params = inspect.signature(factory).parameters
            result = factory(config) if params else factory()
            if inspect.isawaitable(result):
                result = await result
            return result

        graph = _compiled(await bridge.call(make), graph_id)
        checkpointer = None if temporary else self._checkpointer
        return graph.copy({"checkpointer": checkpointer, "store": self._store})


def _load(spec: GraphSpec, settings: Settings) -> LoadedGraph:
    obj = import_object(spec.path, settings.base_dir, what=f"graph {spec.graph_id!r}")
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    if isinstance(obj, StateGraph):
        obj = obj.compile()
    if isinstance(obj, Pregel):
        name = obj.name if obj.name and obj.name != "LangGraph" else spec.graph_id
        return LoadedGraph(
            graph_id=spec.graph_id, description=spec.description, graph=obj, factory=None, name=name
        )
    if callable(obj):
        return LoadedGraph(
            graph_id=spec.graph_id,
            description=spec.description,
            graph=None,
            factory=obj,
            name=spec.graph_id,
        )
    raise ConfigError(
        f"graph {spec.graph_id!r}: {spec.path!r} is a {type(obj).__name__}, expected a compiled "
        "graph, a StateGraph or a factory"
    )


def _compiled(obj: Any, graph_id: str) -> Graph:
    from langgraph.graph import StateGraph
    from langgraph.pregel import Pregel

    if isinstance(obj, StateGraph):
        obj = obj.compile()
    if not isinstance(obj, Pregel):
        raise ConfigError(f"graph {graph_id!r}: the factory returned {type(obj).__name__}")
    return obj
