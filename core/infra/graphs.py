"""Graphs from ``langgraph.json``: loading them, and getting one ready for a run.

A graph spec's attribute may be a compiled graph, an uncompiled ``StateGraph`` (compiled
here), or a factory called anew for every run (and every read of a thread's state or an
assistant's graph), the shapes the official server documents: it takes nothing, the
run's config, a ``langgraph_sdk.runtime.ServerRuntime`` (a parameter annotated so), or
both (the runtime is the annotated one, else the second); it returns the graph, is async,
or is a context manager (sync or async) whose set-up and tear-down surround the run.
Each graph id becomes a system assistant whose id is
``uuid5(6ba7b821-9dad-11d1-80b4-00c04fd430c8, graph_id)``, exactly as the official server
derives it (contract §2.1; note the namespace is *not* ``uuid.NAMESPACE_URL``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import sys
import typing
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, get_args, get_origin

import attrs
import trio

from triograph.core.infra.auth import current_user
from triograph.core.infra.errors import ConfigError, InvalidRequest, NotFound
from triograph.core.infra.graph_bridge import CLEANUP_TIMEOUT, GraphBridge
from triograph.core.infra.settings import import_object

if TYPE_CHECKING:
    from typing import TypeAlias

    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.pregel import Pregel
    from langgraph.store.base import BaseStore

    Graph: TypeAlias = Pregel[Any, Any, Any, Any]

    from triograph.core.infra.settings import GraphSpec, Settings

ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


@functools.cache  # a few graphs, asked on every request that names one
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
        self,
        bridge: GraphBridge,
        graph_id: str,
        config: dict[str, Any],
        *,
        temporary: bool,
        access: str = "assistants.read",
    ) -> Graph:
        """The graph for a read (``access``: ``assistants.read``, ``threads.read``,
        ``threads.update``): a factory's context manager is left again at once."""
        async with self.opened(
            bridge, graph_id, config, temporary=temporary, access=access, user=current_user()
        ) as graph:
            return graph

    @contextlib.asynccontextmanager
    async def opened(
        self,
        bridge: GraphBridge,
        graph_id: str,
        config: dict[str, Any],
        *,
        temporary: bool,
        access: str = "threads.create_run",
        context: Any = None,
        user: Any = None,
    ) -> AsyncIterator[Graph]:
        """The graph ready for one run, for the block: factories are called now, on the
        graph loop, with the server runtime of ``access`` (the run's ``context`` and
        ``user``); a factory's context manager is left (on the graph loop) when the block
        ends, however it ends."""
        loaded = self.get(graph_id)
        if loaded.graph is not None:
            ready = loaded.stateless if temporary else loaded.stateful
            assert ready is not None, "attach() was not called"
            yield ready
            return
        assert loaded.factory is not None
        factory = loaded.factory
        runtime = _server_runtime(access, self._store, user, context)
        leave: list[Callable[[], Any]] = []

        async def make() -> Any:
            result = factory(*_factory_arguments(factory, config, runtime))
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aenter__") and hasattr(result, "__aexit__"):
                manager = result
                result = await manager.__aenter__()
                leave.append(lambda: manager.__aexit__(None, None, None))
            elif hasattr(result, "__enter__") and hasattr(result, "__exit__"):
                sync_manager = result
                result = sync_manager.__enter__()

                async def sync_exit() -> None:
                    sync_manager.__exit__(None, None, None)

                leave.append(sync_exit)
            return result

        try:
            graph = _compiled(await bridge.call(make), graph_id)
            checkpointer = None if temporary else self._checkpointer
            yield graph.copy({"checkpointer": checkpointer, "store": self._store})
        finally:
            if leave:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                    await bridge.call(leave[0])


#: what a factory's parameter annotation may name to get the server runtime
_RUNTIME_NAMES = {"ServerRuntime", "_ExecutionRuntime", "_ReadRuntime"}


def _is_runtime(annotation: Any) -> bool:
    """Whether a factory parameter's annotation is ``ServerRuntime`` (or ``ServerRuntime[C]``,
    a runtime class, ``Annotated[ServerRuntime, ...]``, or such a name as a string)."""
    if annotation is inspect.Parameter.empty:
        return False
    if isinstance(annotation, str):
        return annotation.split("[", 1)[0].rsplit(".", 1)[-1] in _RUNTIME_NAMES
    if getattr(annotation, "__name__", None) in _RUNTIME_NAMES:
        return True
    origin = get_origin(annotation)
    if origin is not None:
        return _is_runtime(origin) or any(_is_runtime(a) for a in get_args(annotation)[:1])
    return False


def _factory_parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        return list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature: called without arguments
        return []


def _factory_arguments(factory: Callable[..., Any], config: Any, runtime: Any) -> list[Any]:
    """The positional arguments for ``factory``: see the module docstring."""
    params = _factory_parameters(factory)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # names only imported for type checking: the raw annotations
        hints = {}
    runtime_at = [i for i, p in enumerate(params) if _is_runtime(hints.get(p.name, p.annotation))]
    if len(params) == 1:
        return [runtime if runtime_at else config]
    if len(params) == 2:
        at = runtime_at[0] if len(runtime_at) == 1 else 1
        return [runtime if i == at else config for i in range(2)]
    return []


def _check_factory(graph_id: str, factory: Callable[..., Any]) -> None:
    params = _factory_parameters(factory)
    if len(params) > 2:
        raise ConfigError(
            f"graph {graph_id!r}: a factory takes at most 2 parameters (the run's config "
            f"and a ServerRuntime), got {[p.name for p in params]}"
        )


def _server_runtime(access: str, store: Any, user: Any, context: Any) -> Any:
    """The ``langgraph_sdk.runtime.ServerRuntime`` a factory gets: the execution variant
    (with the run's ``context``) for a run, the read variant otherwise."""
    from langgraph_sdk.runtime import _ExecutionRuntime, _ReadRuntime

    if access == "threads.create_run":
        context = dict(context) if isinstance(context, dict) else context
        return _ExecutionRuntime(
            access_context=access,  # type: ignore[arg-type]
            user=user,
            store=store,
            context=context,
        )
    return _ReadRuntime(access_context=access, user=user, store=store)  # type: ignore[arg-type]


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
        _check_factory(spec.graph_id, obj)
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
