"""The memory backend: dicts in this process, gone when it exits.

The default for ``triograph dev`` and for tests. Records are copied on the way in and out
so a caller mutating what it got changes nothing until it calls ``update``. Checkpoints
live in LangGraph's ``InMemorySaver`` (extended to delete by run, for rollback) and the
store in ``InMemoryStore``; both are used on the graph loop only.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from triograph.core.hookspecs import hookimpl
from triograph.core.models import Assistant, Run, Thread
from triograph.core.storage import StorageRegistry

R = TypeVar("R", Assistant, Thread, Run)


def _copy(record: R) -> R:
    return attrs.evolve(record)


def contains(haystack: Any, needle: dict[str, Any] | None) -> bool:
    """JSON containment (``@>``): each key of ``needle`` is in ``haystack``, values contained."""
    if not needle:
        return True
    if not isinstance(haystack, dict):
        return False
    for key, want in needle.items():
        if key not in haystack:
            return False
        have = haystack[key]
        if isinstance(want, dict):
            if not contains(have, want):
                return False
        elif have != want:
            return False
    return True


def page(rows: Iterable[R], sort_by: str, sort_order: str, limit: int, offset: int) -> list[R]:
    ordered = sorted(rows, key=lambda r: getattr(r, sort_by), reverse=sort_order == "desc")
    return [_copy(r) for r in ordered[offset : offset + limit]]


class MemoryCheckpointer(InMemorySaver):
    """``InMemorySaver`` that can also delete the checkpoints written by given runs."""

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        wanted = set(run_ids)
        for thread_id, namespaces in self.storage.items():
            for ns, checkpoints in namespaces.items():
                for checkpoint_id, (_, metadata, _) in list(checkpoints.items()):
                    if self.serde.loads_typed(metadata).get("run_id") in wanted:
                        del checkpoints[checkpoint_id]
                        self.writes.pop((thread_id, ns, checkpoint_id), None)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.delete_for_runs(run_ids)


class _Assistants:
    def __init__(self) -> None:
        self.rows: dict[str, Assistant] = {}

    async def put(self, assistant: Assistant) -> None:
        self.rows[assistant.assistant_id] = _copy(assistant)

    async def get(self, assistant_id: str) -> Assistant | None:
        row = self.rows.get(assistant_id)
        return None if row is None else _copy(row)

    async def delete(self, assistant_id: str) -> bool:
        return self.rows.pop(assistant_id, None) is not None

    async def search(
        self,
        *,
        graph_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        name: str | None = None,
        sort_by: str = "created_at",
        sort_order: str = "desc",
        limit: int = 10,
        offset: int = 0,
    ) -> tuple[list[Assistant], int]:
        needle = name.lower() if name else None
        rows = [
            a
            for a in self.rows.values()
            if (graph_id is None or a.graph_id == graph_id)
            and contains(a.metadata, metadata)
            and (needle is None or needle in a.name.lower())
        ]
        return page(rows, sort_by, sort_order, limit, offset), len(rows)


class _Threads:
    def __init__(self, runs: _Runs) -> None:
        self.rows: dict[str, Thread] = {}
        self._runs = runs

    async def create(self, thread: Thread) -> bool:
        if thread.thread_id in self.rows:
            return False
        self.rows[thread.thread_id] = _copy(thread)
        return True

    async def get(self, thread_id: str) -> Thread | None:
        row = self.rows.get(thread_id)
        return None if row is None else _copy(row)

    async def update(self, thread: Thread) -> None:
        if thread.thread_id in self.rows:
            self.rows[thread.thread_id] = _copy(thread)

    async def delete(self, thread_id: str) -> bool:
        if self.rows.pop(thread_id, None) is None:
            return False
        self._runs.drop_thread(thread_id)
        return True


class _Runs:
    def __init__(self) -> None:
        self.rows: dict[str, Run] = {}

    def drop_thread(self, thread_id: str) -> None:
        for run_id in [r.run_id for r in self.rows.values() if r.thread_id == thread_id]:
            del self.rows[run_id]

    async def create(self, run: Run) -> None:
        self.rows[run.run_id] = _copy(run)

    async def get(self, run_id: str) -> Run | None:
        row = self.rows.get(run_id)
        return None if row is None else _copy(row)

    async def update(self, run: Run) -> None:
        if run.run_id in self.rows:
            self.rows[run.run_id] = _copy(run)

    async def delete(self, run_id: str) -> bool:
        return self.rows.pop(run_id, None) is not None

    async def for_thread(
        self, thread_id: str, *, status: str | None = None, limit: int = 10, offset: int = 0
    ) -> list[Run]:
        rows = [
            r
            for r in self.rows.values()
            if r.thread_id == thread_id and (status is None or r.status == status)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [_copy(r) for r in rows[offset : offset + limit]]

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
    ) -> list[Run]:
        ids = set(run_ids) if run_ids is not None else None
        rows = [
            r
            for r in self.rows.values()
            if (statuses is None or r.status in statuses)
            and (thread_id is None or r.thread_id == thread_id)
            and (ids is None or r.run_id in ids)
        ]
        rows.sort(key=lambda r: (r.created_at, r.run_id))
        return [_copy(r) for r in rows]


class MemoryStorage:
    """Everything in dicts; see the module docstring."""

    name = "memory"

    def __init__(self) -> None:
        self.assistants = _Assistants()
        self.runs = _Runs()
        self.threads = _Threads(self.runs)
        self._checkpointer = MemoryCheckpointer()
        self._store = InMemoryStore()

    @property
    def checkpointer(self) -> MemoryCheckpointer:
        return self._checkpointer

    @property
    def store(self) -> InMemoryStore:
        return self._store

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the metadata tables, for tests and debugging."""
        return copy.deepcopy(
            {
                "threads": self.threads.rows,
                "runs": self.runs.rows,
                "assistants": self.assistants.rows,
            }
        )


@asynccontextmanager
async def open_memory_storage(spec: str) -> AsyncIterator[MemoryStorage]:
    yield MemoryStorage()


@hookimpl
def triograph_register_storage(registry: StorageRegistry) -> None:
    registry.add("memory", open_memory_storage)
