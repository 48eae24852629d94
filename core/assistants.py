"""Assistants: the system assistant of each graph, lookup and search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triograph.core.errors import InvalidRequest, NotFound
from triograph.core.graphs import system_assistant_id
from triograph.core.models import Assistant, AssistantSearch, now, to_wire, validate_uuid

if TYPE_CHECKING:
    from triograph.core.context import Core

ASSISTANT_FIELDS = (
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
)


class AssistantService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def sync_system_assistants(self) -> None:
        """Upsert one assistant per graph (contract §2.1): insert if absent, else re-sync name
        and description only."""
        repo = self.core.storage.assistants
        for graph_id, loaded in self.core.graphs.graphs.items():
            assistant_id = system_assistant_id(graph_id)
            existing = await repo.get(assistant_id)
            if existing is None:
                await repo.create(
                    Assistant(
                        assistant_id=assistant_id,
                        graph_id=graph_id,
                        metadata={"created_by": "system"},
                        name=loaded.name,
                        description=loaded.description,
                    )
                )
            elif (existing.name, existing.description) != (loaded.name, loaded.description):
                existing.name, existing.description = loaded.name, loaded.description
                existing.updated_at = now()
                await repo.update(existing)

    async def get(self, assistant_id: str) -> Assistant:
        """By UUID only, as ``GET /assistants/{id}`` takes it; hidden if its graph is gone."""
        assistant_id = validate_uuid(assistant_id, "assistant")
        assistant = await self.core.storage.assistants.get(assistant_id)
        if assistant is None or assistant.graph_id not in self.core.graphs.graphs:
            raise NotFound("Not Found")
        return assistant

    async def resolve(self, value: str) -> Assistant:
        """A run's ``assistant_id``: a graph id or a UUID (contract §2.1)."""
        assistant_id = self.core.graphs.resolve_assistant_id(value)
        assistant = await self.core.storage.assistants.get(assistant_id)
        if assistant is None or assistant.graph_id not in self.core.graphs.graphs:
            raise NotFound("Thread or assistant not found.")
        return assistant

    async def search(self, query: AssistantSearch) -> tuple[list[dict[str, Any]], int]:
        if not 1 <= query.limit <= 1000:
            raise InvalidRequest(f"$.limit: {query.limit} is not between 1 and 1000")
        if query.offset < 0:
            raise InvalidRequest(f"$.offset: {query.offset} is less than 0")
        bad = [f for f in query.select or () if f not in ASSISTANT_FIELDS]
        if bad:
            raise InvalidRequest(
                f"$.select: invalid fields {bad}; allowed: {list(ASSISTANT_FIELDS)}"
            )
        if query.graph_id is not None:
            self.core.graphs.get(query.graph_id)
        graph_ids = (
            [query.graph_id] if query.graph_id is not None else list(self.core.graphs.graphs)
        )
        rows, total = await self.core.storage.assistants.search(
            graph_ids=graph_ids,
            metadata=query.metadata,
            name=query.name,
            sort_by=query.sort_by or "created_at",
            sort_order=query.sort_order or "desc",
            limit=query.limit,
            offset=query.offset,
        )
        visible = [to_wire(a) for a in rows]
        if query.select:
            visible = [{k: row[k] for k in query.select} for row in visible]
        return visible, total
