"""Assistants (contract §2): the system assistant of each graph, create / patch / delete
with versions, search, and what an assistant's graph looks like (drawing, schemas,
subgraphs).

Everything is read from and written to ``core.storage.assistants``; the service keeps
only the copies a stateless run may start from (:meth:`AssistantService.resolve`), which
the run's insert checks are current. A request is validated completely before anything
is written, so a 4xx changes nothing. ``config.configurable`` and ``context`` are one value
stored twice (§1.7): the stored assistant always holds them equal.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import attrs

from triograph.core.infra.auth import Filters, scoped
from triograph.core.infra.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    TriographError,
)
from triograph.core.infra.graphs import system_assistant_id
from triograph.core.infra.models import (
    ASSISTANT_FIELDS,
    JSON,
    MAX_OFFSET,
    Assistant,
    AssistantSearch,
    AssistantVersion,
    IfExists,
    bounded,
    check_page,
    check_select,
    copied,
    now,
    selected,
    to_wire,
    validate_uuid,
)
from triograph.core.resources.run_records import (
    BOTH_CONFIGURABLE_AND_CONTEXT,
    check_config,
    clean_configurable,
)
from triograph.core.resources.threads import strip_reserved

if TYPE_CHECKING:
    from triograph.core.infra.context import Core
    from triograph.core.infra.graphs import Graph

log = logging.getLogger("triograph.assistants")

#: assistants a process keeps copies of for stateless runs (``AssistantService.resolve``)
CACHED_ASSISTANTS = 256
#: configurable keys the server fills per run; not part of a graph's config schema
RUN_CONFIGURABLE = (
    "__pregel_checkpointer",
    "__pregel_store",
    "checkpoint_id",
    "checkpoint_ns",
    "thread_id",
)
#: the typed keys of a RunnableConfig: key -> (what is allowed, check); others pass through


# -- request bodies ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AssistantCreate:
    graph_id: str
    assistant_id: str | None = None
    config: dict[str, JSON] | None = None
    context: dict[str, JSON] | None = None
    metadata: dict[str, JSON] | None = None
    if_exists: IfExists | None = None
    name: str | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class AssistantPatch:
    """Fields left out (or null) keep their value; ``metadata`` is merged in."""

    graph_id: str | None = None
    config: dict[str, JSON] | None = None
    context: dict[str, JSON] | None = None
    metadata: dict[str, JSON] | None = None
    name: str | None = None
    description: str | None = None


@attrs.frozen(kw_only=True)
class AssistantCount:
    metadata: dict[str, JSON] | None = None
    graph_id: str | None = None
    name: str | None = None


@attrs.frozen(kw_only=True)
class VersionSearch:
    metadata: dict[str, JSON] | None = None
    limit: int = bounded(10, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)


@attrs.frozen(kw_only=True)
class VersionChoice:
    version: int


# -- config and context -----------------------------------------------------------------------


def _context_of(
    config: dict[str, Any] | None, context: dict[str, Any] | None, current: dict[str, Any]
) -> dict[str, Any]:
    """The context a request sets: its ``context``, else its ``config.configurable``, else
    ``current`` when it gave neither. Both non-empty is a 400 (contract §1.7)."""
    configurable: dict[str, Any] = (config or {}).get("configurable") or {}
    if configurable and context:
        raise BadRequest(BOTH_CONFIGURABLE_AND_CONTEXT)
    if context:
        return context
    if config is not None and "configurable" in config:
        return configurable
    return current if context is None else {}


def _settled(
    config: dict[str, Any], context: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``config`` with ``configurable`` set to ``context``, and ``context``; reserved keys
    stripped from both and from ``config.metadata`` (contract §1.6)."""
    context = clean_configurable(context)
    rest = {k: v for k, v in config.items() if k != "configurable"}
    if isinstance(rest.get("metadata"), dict):
        rest["metadata"] = strip_reserved(rest["metadata"])
    return ({**rest, "configurable": context} if context else rest), context


# -- graph introspection (runs on the graph loop) ---------------------------------------------


def _or_none(graph: Any, what: str, make: Callable[[], dict[str, Any] | None]) -> Any:
    """A schema, or None when LangGraph cannot generate it (the reason is logged)."""
    try:
        return make()
    except Exception:
        log.warning("no %s for graph %r", what, getattr(graph, "name", graph), exc_info=True)
        return None


def _state_schema(graph: Any) -> dict[str, Any]:
    """Every stream channel as an optional field of its update type (``Any`` where that type
    has no JSON schema): the ``values`` clients see. Built as the official server does."""
    from langchain_core.utils.pydantic import create_model

    fields: dict[str, Any] = {}
    for name in graph.stream_channels_list:
        kind = graph.channels[name].UpdateType
        try:
            create_model(name, __root__=(kind, None)).model_json_schema()
        except Exception:
            kind = Any
        fields[name] = (kind, None)
    return create_model(graph.get_name("State"), **fields).model_json_schema()


def _config_schema(graph: Any) -> dict[str, Any]:
    """What ``config.configurable`` takes: since LangGraph 0.6 that is the context schema,
    without the keys the server fills per run; ``{}`` for a graph without one."""
    schema: dict[str, Any] | None = graph.get_context_jsonschema()
    if schema is None:
        return {}
    for key in RUN_CONFIGURABLE:
        schema.get("properties", {}).pop(key, None)
    return schema


def _graph_schemas(graph: Any) -> dict[str, Any]:
    """The five schemas of contract §2.7, each None when it cannot be generated."""
    return {
        "input_schema": _or_none(graph, "input schema", graph.get_input_jsonschema),
        "output_schema": _or_none(graph, "output schema", graph.get_output_jsonschema),
        "state_schema": _or_none(graph, "state schema", lambda: _state_schema(graph)),
        "config_schema": _or_none(graph, "config schema", lambda: _config_schema(graph)),
        "context_schema": _or_none(graph, "context schema", graph.get_context_jsonschema),
    }


class AssistantService:
    def __init__(self, core: Core) -> None:
        self.core = core
        #: the assistants last read by id, for ``resolve(cached=True)``, oldest first
        self._copies: dict[str, Assistant] = {}

    # -- system assistants --------------------------------------------------------------------

    async def sync_system_assistants(self) -> None:
        """Upsert one assistant per graph (contract §2.1) with its ``LANGGRAPH_CONFIG``
        defaults: insert if absent, else re-sync name, description, config and context
        (the deployment owns these assistants; their other fields are left alone)."""
        repo = self.core.storage.assistants
        for graph_id, loaded in self.core.graphs.graphs.items():
            config, context = self._system_config(graph_id)
            wanted: dict[str, Any] = {
                "name": loaded.name,
                "description": loaded.description,
                "config": config,
                "context": context,
            }
            assistant_id = system_assistant_id(graph_id)
            existing = await repo.get(assistant_id)
            if existing is None:
                stamp = now()
                await repo.create(
                    Assistant(
                        assistant_id=assistant_id,
                        graph_id=graph_id,
                        metadata={"created_by": "system"},
                        created_at=stamp,
                        updated_at=stamp,
                        **wanted,
                    )
                )
            elif any(getattr(existing, key) != value for key, value in wanted.items()):
                await repo.update(attrs.evolve(existing, **wanted, updated_at=now()))

    def check_system_configs(self) -> None:
        """Raise ``ConfigError`` for a bad ``LANGGRAPH_CONFIG`` entry (before serving)."""
        for graph_id in self.core.graphs.graphs:
            self._system_config(graph_id)

    def _system_config(self, graph_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """``LANGGRAPH_CONFIG``'s entry for a graph: a config that may also hold ``context``."""
        config = dict(self.core.settings.graph_configs.get(graph_id) or {})
        context = config.pop("context", None)
        try:
            check_config(config, field=f"LANGGRAPH_CONFIG.{graph_id}")
            if not isinstance(context, dict | None):
                raise InvalidRequest(f"LANGGRAPH_CONFIG.{graph_id}.context: expected an object")
            return _settled(config, _context_of(config, context, {}))
        except TriographError as exc:
            raise ConfigError(f"LANGGRAPH_CONFIG for graph {graph_id!r}: {exc.message}") from None

    # -- lookup -------------------------------------------------------------------------------

    async def _visible(
        self,
        assistant_id: str,
        missing: str = "Assistant {} not found",
        *,
        action: str = "read",
        allowed: Filters | EllipsisType | None = ...,
    ) -> Assistant:
        """By UUID only, if the user may do ``action`` on it (``assistants.<action>``; or
        with the filter ``allowed`` already decided); an assistant whose graph is not served
        here, or that the user may not see, does not exist."""
        assistant_id = validate_uuid(assistant_id, "assistant")
        if allowed is ...:
            allowed = await self.authorize(action, assistant_id=assistant_id)
        assistant = await self.core.storage.assistants.get(assistant_id, **scoped(allowed))
        if assistant is None or assistant.graph_id not in self.core.graphs.graphs:
            raise NotFound(missing.format(assistant_id))
        return assistant

    async def authorize(self, verb: str, **value: Any) -> Filters | None:
        """The filter the current user's ``assistants.<verb>`` leaves (403 if refused)."""
        return await self.core.access.authorize("assistants", verb, value)

    async def get(self, assistant_id: str) -> Assistant:
        """``GET /assistants/{id}``: by UUID only."""
        return await self._visible(assistant_id)

    async def resolve(self, value: str, *, cached: bool = False) -> Assistant:
        """A run's ``assistant_id``: a graph id or a UUID (contract §2.1). A graph's own
        assistant is everyone's, as on the official server; any other needs
        ``assistants.read``.

        With ``cached``, the copy this process read last may answer without a read: the
        caller stores its run with ``runs.create(..., assistant=...)``, which checks in the
        same write that the assistant is still stored as that copy (else
        ``AssistantChanged``: resolve again without ``cached``). Another process's update
        is seen that way, with no message between processes to miss or wait for."""
        assistant_id = self.core.graphs.resolve_assistant_id(value)
        copy = self._copies.get(assistant_id) if cached else None
        if copy is not None:
            assistant: Assistant | None = copied(copy)
        else:
            assistant = await self.core.storage.assistants.get(assistant_id)
            self._keep(assistant_id, assistant)
        if assistant is not None and assistant.metadata.get("created_by") != "system":
            allowed = await self.authorize("read", assistant_id=assistant_id)
            if allowed is not None:
                assistant = await self.core.storage.assistants.get(assistant_id, **scoped(allowed))
        if assistant is None or assistant.graph_id not in self.core.graphs.graphs:
            raise NotFound("Thread or assistant not found.")
        return assistant

    def _keep(self, assistant_id: str, assistant: Assistant | None) -> None:
        """Remember the assistant as read (forget it if absent), up to
        :data:`CACHED_ASSISTANTS` of them, dropping the oldest."""
        self._copies.pop(assistant_id, None)
        if assistant is None:
            return
        if len(self._copies) >= CACHED_ASSISTANTS:
            del self._copies[next(iter(self._copies))]
        self._copies[assistant_id] = copied(assistant)

    # -- create, patch, delete ----------------------------------------------------------------

    async def create(self, body: AssistantCreate) -> Assistant:
        assistant_id = (
            str(uuid.uuid4())
            if body.assistant_id is None
            else validate_uuid(body.assistant_id, "assistant")
        )
        check_config(body.config)
        config, context = _settled(body.config or {}, _context_of(body.config, body.context, {}))
        self.core.graphs.get(body.graph_id)
        value: dict[str, Any] = {
            "assistant_id": assistant_id,
            "graph_id": body.graph_id,
            "config": config,
            "context": context,
            "metadata": strip_reserved(body.metadata),
            "if_exists": body.if_exists or "raise",
            "name": body.name or "Untitled",
        }
        allowed = await self.authorize("create", **value)
        stamp = now()
        assistant = Assistant(
            assistant_id=assistant_id,
            graph_id=body.graph_id,
            config=config,
            context=context,
            metadata=strip_reserved(value.get("metadata")),
            name=body.name or "Untitled",
            description=body.description,
            created_at=stamp,
            updated_at=stamp,
        )
        repo = self.core.storage.assistants
        if await repo.create(assistant):
            return assistant
        existing = await repo.get(assistant_id, **scoped(allowed))  # another's: a conflict
        if existing is not None and (body.if_exists or "raise") == "do_nothing":
            return existing
        raise Conflict(f"Assistant {assistant_id} already exists")

    async def update(self, assistant_id: str, body: AssistantPatch) -> Assistant:
        """A new version on every call (contract §2.5): ``config`` and ``context`` replace,
        ``metadata`` merges, ``graph_id`` may move to another served graph."""
        check_config(body.config)
        if body.graph_id is not None:
            self.core.graphs.get(body.graph_id)
        value: dict[str, Any] = {
            "assistant_id": validate_uuid(assistant_id, "assistant"),
            "graph_id": body.graph_id,
            "config": body.config or {},
            "context": body.context,
            "metadata": strip_reserved(body.metadata),
            "name": body.name,
        }
        allowed = await self.authorize("update", **value)
        current = await self._visible(assistant_id, allowed=allowed)
        context = _context_of(body.config, body.context, current.context)
        config, context = _settled(current.config if body.config is None else body.config, context)
        changed = attrs.evolve(
            current,
            graph_id=body.graph_id or current.graph_id,
            config=config,
            context=context,
            metadata={**current.metadata, **strip_reserved(value.get("metadata"))},
            name=current.name if body.name is None else body.name,
            description=current.description if body.description is None else body.description,
            updated_at=now(),
        )
        stored = await self.core.storage.assistants.new_version(changed)
        self._copies.pop(current.assistant_id, None)  # saves this process a failed insert
        return stored

    async def delete(self, assistant_id: str, *, delete_threads: bool = False) -> None:
        """Interrupt the assistant's runs in flight, delete its threads if asked (those whose
        ``metadata.assistant_id`` is this one), then the assistant with its versions and
        crons (the repository cascades)."""
        assistant = await self._visible(
            assistant_id, "Assistant with ID {} not found", action="delete"
        )
        assistant_id = assistant.assistant_id
        for handle in self.core.supervisor.all_in_flight():
            if handle.run.assistant_id == assistant_id:
                handle.cancel("interrupt", f"assistant {assistant_id} was deleted")
        if delete_threads:  # those the user may delete
            threads = self.core.storage.threads
            owned = {"assistant_id": assistant_id}
            mine = scoped(await self.core.threads.authorize("delete", metadata=owned))
            _, total = await threads.search(metadata=owned, limit=0, **mine)
            rows, _ = await threads.search(metadata=owned, limit=total, **mine)
            for thread in rows:
                with contextlib.suppress(NotFound):  # deleted meanwhile
                    await self.core.threads.delete(thread.thread_id)
        await self.core.storage.assistants.delete(assistant_id)
        self._copies.pop(assistant_id, None)

    # -- versions -----------------------------------------------------------------------------

    async def versions(self, assistant_id: str, query: VersionSearch) -> list[AssistantVersion]:
        """Newest first; ``metadata`` is a containment filter."""
        check_page(query.limit, query.offset)
        assistant = await self._visible(assistant_id)
        return await self.core.storage.assistants.versions(
            assistant.assistant_id, metadata=query.metadata, limit=query.limit, offset=query.offset
        )

    async def set_latest(self, assistant_id: str, version: int) -> Assistant:
        """Point the assistant at ``version``, restoring everything that version holds
        (graph and context too: contract §13.8). The next patch numbers on from the highest."""
        allowed = await self.authorize(
            "update", assistant_id=validate_uuid(assistant_id, "assistant"), version=version
        )
        assistant = await self._visible(assistant_id, allowed=allowed)
        row = await self.core.storage.assistants.get_version(assistant.assistant_id, version)
        if row is None:
            raise NotFound(f"Version {version} not found for assistant {assistant.assistant_id}")
        self.core.graphs.get(row.graph_id)  # a version on a graph not served here stays old
        restored = attrs.evolve(
            assistant,
            graph_id=row.graph_id,
            config=row.config,
            context=row.context,
            metadata=row.metadata,
            name=row.name,
            description=row.description,
            version=row.version,
            updated_at=now(),
        )
        await self.core.storage.assistants.update(restored)
        self._copies.pop(assistant.assistant_id, None)
        return restored

    # -- search -------------------------------------------------------------------------------

    def _graph_ids(self, graph_id: str | None) -> list[str]:
        """The graphs to search: the one asked for (404 if not served), else all served."""
        if graph_id is None:
            return list(self.core.graphs.graphs)
        self.core.graphs.get(graph_id)
        return [graph_id]

    async def search(self, query: AssistantSearch) -> tuple[list[dict[str, Any]], int]:
        """One page, as wire dicts cut down to ``select``, and the number of matches."""
        check_page(query.limit, query.offset)
        check_select(query.select, ASSISTANT_FIELDS)
        graph_ids = self._graph_ids(query.graph_id)
        metadata, allowed = await self._search(query.graph_id, query.metadata, query)
        rows, total = await self.core.storage.assistants.search(
            graph_ids=graph_ids,
            metadata=metadata,
            **scoped(allowed),
            name=query.name,
            sort_by=query.sort_by or "created_at",
            sort_order=query.sort_order or "desc",
            limit=query.limit,
            offset=query.offset,
        )
        return selected([to_wire(a) for a in rows], query.select), total

    async def count(self, query: AssistantCount) -> int:
        graph_ids = self._graph_ids(query.graph_id)
        metadata, allowed = await self._search(query.graph_id, query.metadata, None)
        _, total = await self.core.storage.assistants.search(
            graph_ids=graph_ids, metadata=metadata, name=query.name, limit=0, **scoped(allowed)
        )
        return total

    async def _search(
        self, graph_id: str | None, metadata: dict[str, Any] | None, page: AssistantSearch | None
    ) -> tuple[dict[str, Any] | None, Filters | None]:
        """``assistants.search``: the ``metadata`` criterion as the handlers left it, and
        the filter."""
        value: dict[str, Any] = {
            "graph_id": graph_id,
            "metadata": dict(metadata or {}),
            "limit": page.limit if page is not None else 0,
            "offset": page.offset if page is not None else 0,
        }
        allowed = await self.authorize("search", **value)
        return value.get("metadata") or None, allowed

    # -- the graph behind an assistant --------------------------------------------------------

    async def _graph(self, assistant: Assistant) -> Graph:
        """The assistant's graph; a factory is built with the assistant's config."""
        return await self.core.graphs.build(
            self.core.bridge, assistant.graph_id, dict(assistant.config), temporary=False
        )

    async def drawing(self, assistant_id: str, *, xray: bool | int) -> dict[str, Any]:
        """The drawable graph (``xray``: expand subgraphs, all levels or this many); ``id``
        may also be a graph id. Node ``data.id`` (a Python class path) is left out."""
        if assistant_id in self.core.graphs.graphs:
            assistant_id = system_assistant_id(assistant_id)
        graph = await self._graph(await self._visible(assistant_id))

        async def draw() -> dict[str, Any]:
            return (await graph.aget_graph(xray=xray)).to_json()

        try:
            drawn = await self.core.bridge.call(draw)
        except NotImplementedError:
            raise InvalidRequest("The graph does not support visualization") from None
        for node in drawn.get("nodes", []):
            if isinstance(node.get("data"), dict):
                node["data"].pop("id", None)
        return drawn

    async def schemas(self, assistant_id: str) -> dict[str, Any]:
        assistant = await self._visible(assistant_id)
        graph = await self._graph(assistant)

        async def make() -> dict[str, Any]:
            return _graph_schemas(graph)

        return {"graph_id": assistant.graph_id, **await self.core.bridge.call(make)}

    async def subgraphs(
        self, assistant_id: str, *, namespace: str | None, recurse: bool
    ) -> dict[str, Any]:
        """Namespace (``parent|child`` when recursing) -> the schemas of that subgraph;
        ``namespace`` picks one. ``{}`` when there is none."""
        graph = await self._graph(await self._visible(assistant_id))

        async def collect() -> dict[str, Any]:
            found = graph.aget_subgraphs(namespace=namespace, recurse=recurse)
            return {ns: _graph_schemas(sub) async for ns, sub in found}

        return await self.core.bridge.call(collect)
