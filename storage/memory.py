"""The memory backend: dicts in this process, gone when it exits.

The default for ``triograph dev`` and for tests. Records are copied on the way in and out
so a caller mutating what it got changes nothing until it calls ``update``. Searches and
authorization filters are :mod:`triograph.storage.query`'s Python evaluator, the semantics
the SQL backends compile. Checkpoints and the store are LangGraph's in-memory ones, extended
(:mod:`triograph.storage.memory_graph`).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic

from triograph.core.infra.hookspecs import hookimpl
from triograph.core.infra.models import Assistant, AssistantVersion, Cron, Run, Thread, copied
from triograph.core.infra.models import Record as R
from triograph.core.infra.settings import Settings
from triograph.core.infra.storage import AssistantChanged, Cluster, StorageRegistry
from triograph.core.infra.store_config import store_index, store_ttl
from triograph.storage.memory_graph import MemoryCheckpointer, MemoryStore
from triograph.storage.query import Filters, allows, contains, page


def _page(
    rows: Iterable[R], sort_by: str, sort_order: str, limit: int, offset: int
) -> tuple[list[R], int]:
    found, total = page(rows, sort_by, sort_order, limit, offset)
    return [copied(r) for r in found], total


class _Repo(Generic[R]):
    """What every repository does the same way: records by key in ``rows`` (in insertion
    order), each visible through a filter when :meth:`_metadata` of it :func:`allows` it."""

    key: str

    def __init__(self) -> None:
        self.rows: dict[str, R] = {}

    def _metadata(self, record: R) -> dict[str, Any] | None:
        return getattr(record, "metadata", None)

    def _visible(self, key: str, filters: Filters | None) -> R | None:
        row = self.rows.get(key)
        if row is None or not allows(self._metadata(row), filters):
            return None
        return row

    async def get(self, key: str, *, filters: Filters | None = None) -> R | None:
        row = self._visible(key, filters)
        return None if row is None else copied(row)

    async def update(self, record: R, *, filters: Filters | None = None) -> None:
        key = getattr(record, self.key)
        if self._visible(key, filters) is not None:
            self.rows[key] = copied(record)

    async def delete(self, key: str, *, filters: Filters | None = None) -> bool:
        if self._visible(key, filters) is None:
            return False
        del self.rows[key]
        self._deleted(key)
        return True

    def _deleted(self, key: str) -> None:
        """What goes with the record ``key`` (cascades)."""

    def drop(self, predicate: Callable[[R], bool]) -> None:
        for key in [k for k, row in self.rows.items() if predicate(row)]:
            del self.rows[key]
            self._deleted(key)


class _Assistants(_Repo[Assistant]):
    key = "assistant_id"

    def __init__(self, crons: _Crons) -> None:
        super().__init__()
        self.versions_of: dict[str, dict[int, AssistantVersion]] = {}
        self._crons = crons

    def _record_version(self, assistant: Assistant) -> None:
        self.versions_of.setdefault(assistant.assistant_id, {})[assistant.version] = (
            AssistantVersion(
                assistant_id=assistant.assistant_id,
                version=assistant.version,
                graph_id=assistant.graph_id,
                config=copy.deepcopy(assistant.config),
                context=copy.deepcopy(assistant.context),
                metadata=copy.deepcopy(assistant.metadata),
                name=assistant.name,
                description=assistant.description,
                created_at=assistant.updated_at,
            )
        )

    async def create(self, assistant: Assistant) -> bool:
        if assistant.assistant_id in self.rows:
            return False
        self.rows[assistant.assistant_id] = copied(assistant)
        self._record_version(assistant)
        return True

    async def new_version(self, assistant: Assistant) -> Assistant:
        stored = copied(assistant)
        stored.version = max(self.versions_of.get(assistant.assistant_id, {0: None})) + 1
        self.rows[assistant.assistant_id] = stored
        self._record_version(stored)
        return copied(stored)

    async def get_version(self, assistant_id: str, version: int) -> AssistantVersion | None:
        row = self.versions_of.get(assistant_id, {}).get(version)
        return None if row is None else copied(row)

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[AssistantVersion]:
        rows = [
            v
            for v in self.versions_of.get(assistant_id, {}).values()
            if contains(v.metadata, metadata)
        ]
        return _page(rows, "version", "desc", limit, offset)[0]

    def _deleted(self, key: str) -> None:
        self.versions_of.pop(key, None)
        self._crons.drop(lambda c: c.assistant_id == key)

    async def search(
        self,
        *,
        graph_ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Assistant], int]:
        needle = name.lower() if name else None
        graphs = set(graph_ids) if graph_ids is not None else None
        rows = [
            a
            for a in self.rows.values()
            if (graphs is None or a.graph_id in graphs)
            and contains(a.metadata, metadata)
            and (needle is None or needle in a.name.lower())
            and allows(a.metadata, filters)
        ]
        return _page(rows, sort_by, sort_order, limit, offset)


class _Threads(_Repo[Thread]):
    key = "thread_id"

    def __init__(self, runs: _Runs, crons: _Crons) -> None:
        super().__init__()
        self._runs = runs
        self._crons = crons

    async def create(self, thread: Thread) -> bool:
        if thread.thread_id in self.rows:
            return False
        self.rows[thread.thread_id] = copied(thread)
        return True

    def _deleted(self, key: str) -> None:
        self._runs.drop(lambda r: r.thread_id == key)
        self._crons.drop(lambda c: c.thread_id == key)

    async def search(
        self,
        *,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Thread], int]:
        wanted = set(ids) if ids is not None else None
        rows = [
            t
            for t in self.rows.values()
            if (wanted is None or t.thread_id in wanted)
            and (status is None or t.status == status)
            and contains(t.metadata, metadata)
            and (not values or contains(t.values, values))
            and allows(t.metadata, filters)
        ]
        return _page(rows, sort_by, sort_order, limit, offset)

    async def expired(self, at: dt.datetime, *, limit: int = 100) -> list[Thread]:
        rows = [
            t
            for t in self.rows.values()
            if t.ttl and t.ttl.get("expires_at") and t.ttl["expires_at"] <= at
        ]
        rows.sort(key=lambda t: t.ttl["expires_at"])  # type: ignore[index]
        return [copied(t) for t in rows[:limit]]


class _Runs(_Repo[Run]):
    """Runs are filtered by their thread's metadata (they are authorized on it)."""

    key = "run_id"
    #: the thread and assistant rows, set by the storage once they exist
    threads: dict[str, Thread]
    assistants: dict[str, Assistant]

    def _metadata(self, record: Run) -> dict[str, Any] | None:
        thread = self.threads.get(record.thread_id)
        return None if thread is None else thread.metadata

    async def create(
        self, run: Run, *, thread: Thread | None = None, assistant: Assistant | None = None
    ) -> None:
        if assistant is not None:
            stored = self.assistants.get(run.assistant_id)
            if stored is None or stored.updated_at != assistant.updated_at:
                raise AssistantChanged(run.assistant_id)
        if thread is not None:
            self.threads[thread.thread_id] = copied(thread)
        self.rows[run.run_id] = copied(run)

    async def for_thread(
        self, thread_id: str, *, status: str | None = None, limit: int = 10, offset: int = 0
    ) -> list[Run]:
        rows = [
            r
            for r in self.rows.values()
            if r.thread_id == thread_id and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [copied(r) for r in rows[offset : offset + limit]]

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Run]:
        ids = set(run_ids) if run_ids is not None else None
        rows = [
            r
            for r in self.rows.values()
            if (statuses is None or r.status in statuses)
            and (thread_id is None or r.thread_id == thread_id)
            and (ids is None or r.run_id in ids)
            and allows(self._metadata(r), filters)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id))
        return [copied(r) for r in rows]


class _Crons(_Repo[Cron]):
    key = "cron_id"

    async def create(self, cron: Cron) -> None:
        self.rows[cron.cron_id] = copied(cron)

    async def search(
        self,
        *,
        assistant_id: str | None = None,
        thread_id: str | None = None,
        enabled: bool | None = None,
        metadata: dict[str, Any] | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
        filters: Filters | None = None,
    ) -> tuple[list[Cron], int]:
        rows = [
            c
            for c in self.rows.values()
            if (assistant_id is None or c.assistant_id == assistant_id)
            and (thread_id is None or c.thread_id == thread_id)
            and (enabled is None or c.enabled == enabled)
            and contains(c.metadata, metadata)
            and allows(c.metadata, filters)
        ]
        return _page(rows, sort_by, sort_order, limit, offset)

    async def due(self, at: dt.datetime, *, limit: int = 100) -> list[Cron]:
        rows = [
            c
            for c in self.rows.values()
            if c.enabled and c.next_run_date is not None and c.next_run_date <= at
        ]
        rows.sort(key=lambda c: c.next_run_date)  # type: ignore[arg-type,return-value]
        return [copied(c) for c in rows[:limit]]


class MemoryStorage:
    """Everything in dicts; see the module docstring."""

    name = "memory"
    cluster: Cluster | None = None  # one process at a time

    def __init__(self, settings: Settings | None = None) -> None:
        self.crons = _Crons()
        self.assistants = _Assistants(self.crons)
        self.runs = _Runs()
        self.threads = _Threads(self.runs, self.crons)
        self.runs.threads = self.threads.rows
        self.runs.assistants = self.assistants.rows
        self._checkpointer = MemoryCheckpointer()
        self._store = (
            MemoryStore(index=store_index(settings), ttl=store_ttl(settings))
            if settings is not None
            else MemoryStore()
        )

    @property
    def checkpointer(self) -> MemoryCheckpointer:
        return self._checkpointer

    @property
    def store(self) -> MemoryStore:
        return self._store

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the metadata tables, for tests and debugging."""
        return copy.deepcopy(
            {
                "threads": self.threads.rows,
                "runs": self.runs.rows,
                "assistants": self.assistants.rows,
                "assistant_versions": self.assistants.versions_of,
                "crons": self.crons.rows,
            }
        )


@asynccontextmanager
async def open_memory_storage(spec: str, settings: Settings) -> AsyncIterator[MemoryStorage]:
    yield MemoryStorage(settings)


@hookimpl
def triograph_register_storage(registry: StorageRegistry) -> None:
    registry.add("memory", open_memory_storage)
