"""The repositories of ``core/infra/storage.py``, written once for every SQL backend.

Each runs its statements through an :class:`~triograph.storage.sql.SqlEngine` (reads in a
read transaction, writes in a write transaction) on the :class:`~triograph.storage.tables.Tables`
of the engine's dialect. Searches, their totals and authorization filters are conditions of
the query (:class:`~triograph.storage.query.Where`); a run is filtered by its thread's
metadata. Deletes cascade through the schema's foreign keys: a thread takes its runs and
crons, an assistant its versions and crons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Generic

import attrs

from triograph.core.infra.models import Assistant, AssistantVersion, Cron, Run, Thread, copied
from triograph.core.infra.models import Record as R
from triograph.core.infra.storage import AssistantChanged
from triograph.storage.query import Filters, Where
from triograph.storage.sql import Connection, SqlEngine
from triograph.storage.tables import Table, Tables


class Repo(Generic[R]):
    """What every repository does the same way, on ``table``."""

    table: Table[R]

    def __init__(self, engine: SqlEngine, tables: Tables) -> None:
        self._engine = engine
        self._tables = tables
        self.table = self._table(tables)

    def _table(self, tables: Tables) -> Table[R]:
        raise NotImplementedError

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        """``where``, and ``filters`` on the record's metadata."""
        return where.allowed('"metadata"', filters)

    async def get(self, key: str, *, filters: Filters | None = None) -> R | None:
        if not filters:
            return await self._engine.read(lambda conn: self.table.get(conn, key), single=True)
        found = await self._rows(self._scoped(self.table.where(key), filters), "")
        return found[0] if found else None

    async def update(self, record: R, *, filters: Filters | None = None) -> None:
        where = self._scoped(self.table.where(getattr(record, self.table.key[0])), filters)
        await self._engine.write(lambda conn: self.table.replace(conn, record, where), single=True)

    async def delete(self, key: str, *, filters: Filters | None = None) -> bool:
        where = self._scoped(self.table.where(key), filters)
        return await self._engine.write(lambda conn: self.table.delete(conn, where), single=True)

    async def _insert(self, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        return await self._engine.write(
            lambda conn: self.table.insert_new(conn, record), single=True
        )

    async def _put(self, record: R) -> None:
        await self._engine.write(lambda conn: self.table.put(conn, record), single=True)

    async def _page(
        self, where: Where, sort_by: str, sort_order: str, limit: int, offset: int
    ) -> tuple[list[R], int]:
        return await self._engine.read(
            lambda conn: self.table.page(conn, where, sort_by, sort_order, limit, offset)
        )

    async def _rows(self, where: Where, tail: str, *params: Any) -> list[R]:
        return await self._engine.read(
            lambda conn: self.table.rows(conn, where, tail, *params), single=True
        )

    def _by_insertion(self, column: str) -> str:
        """``ORDER BY`` ``column``, then insertion order, ``LIMIT`` a parameter."""
        d = self._engine.dialect
        return f"ORDER BY {column}, {d.insertion} LIMIT {d.mark}"


def version_of(assistant: Assistant) -> AssistantVersion:
    """The version row of what ``assistant`` points at, created when it was updated."""
    fields = attrs.fields(AssistantVersion)
    same = {f.name: getattr(assistant, f.name) for f in fields if f.name != "created_at"}
    return AssistantVersion(**same, created_at=assistant.updated_at)


class Assistants(Repo[Assistant]):
    def _table(self, tables: Tables) -> Table[Assistant]:
        return tables.assistants

    async def create(self, assistant: Assistant) -> bool:
        tables = self._tables

        def insert(conn: Connection) -> bool:
            created = tables.assistants.insert_new(conn, assistant)
            if created:
                tables.versions.put(conn, version_of(assistant))
            return created

        return await self._engine.write(insert)

    async def new_version(self, assistant: Assistant) -> Assistant:
        tables, d = self._tables, self._engine.dialect

        def store(conn: Connection) -> Assistant:
            d.lock_versions(conn, assistant.assistant_id)  # it may not exist yet
            stored = copied(assistant)
            stored.version = conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM assistant_versions "
                f"WHERE assistant_id = {d.mark}",
                (assistant.assistant_id,),
            ).fetchone()[0]
            tables.assistants.put(conn, stored)
            tables.versions.put(conn, version_of(stored))
            return stored

        return await self._engine.write(store)

    async def get_version(self, assistant_id: str, version: int) -> AssistantVersion | None:
        versions = self._tables.versions
        return await self._engine.read(
            lambda conn: versions.get(conn, assistant_id, version), single=True
        )

    async def versions(
        self,
        assistant_id: str,
        *,
        metadata: dict[str, Any] | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[AssistantVersion]:
        versions = self._tables.versions
        where = versions.where().eq("assistant_id", assistant_id).contains("metadata", metadata)
        page = await self._engine.read(
            lambda conn: versions.page(conn, where, "version", "desc", limit, offset)
        )
        return page[0]

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
        where = self.table.where().within("graph_id", graph_ids).contains("metadata", metadata)
        if name:  # lowered by Python, as the memory backend compares
            where.add(self._engine.dialect.has_substring("name_lower"), name.lower())
        return await self._page(self._scoped(where, filters), sort_by, sort_order, limit, offset)


class Threads(Repo[Thread]):
    def _table(self, tables: Tables) -> Table[Thread]:
        return tables.threads

    async def create(self, thread: Thread) -> bool:
        return await self._insert(thread)

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
        where = self.table.where().within("thread_id", ids).eq("status", status)
        where.contains("metadata", metadata).contains("values", values)
        return await self._page(self._scoped(where, filters), sort_by, sort_order, limit, offset)

    async def expired(self, at: dt.datetime, *, limit: int = 100) -> list[Thread]:
        d = self._engine.dialect
        where = self.table.where().add(f"expires_at <= {d.mark}", d.column(at))
        return await self._rows(where, self._by_insertion("expires_at"), limit)


class Runs(Repo[Run]):
    """Runs are filtered by their thread's metadata (they are authorized on it)."""

    def _table(self, tables: Tables) -> Table[Run]:
        return tables.runs

    def _scoped(self, where: Where, filters: Filters | None) -> Where:
        if not filters:
            return where
        inner = Where(where.dialect).allowed("threads.metadata", filters)
        return where.add(
            f"thread_id IN (SELECT thread_id FROM threads WHERE {inner})", *inner.params
        )

    async def create(
        self, run: Run, *, thread: Thread | None = None, assistant: Assistant | None = None
    ) -> None:
        if thread is None and assistant is None:
            await self._put(run)
            return
        tables, d = self._tables, self._engine.dialect

        def insert(conn: Connection) -> None:
            if assistant is not None:
                found = conn.execute(
                    f"SELECT 1 FROM assistants WHERE assistant_id = {d.mark} "
                    f"AND updated_at = {d.mark}",
                    (run.assistant_id, d.column(assistant.updated_at)),
                ).fetchone()
                if found is None:
                    raise AssistantChanged(run.assistant_id)
            if thread is not None:
                tables.threads.put(conn, thread)
            tables.runs.put(conn, run)

        await self._engine.write(insert)

    async def for_thread(
        self, thread_id: str, *, status: str | None = None, limit: int = 10, offset: int = 0
    ) -> list[Run]:
        mark = self._engine.dialect.mark
        where = self.table.where().eq("thread_id", thread_id).eq("status", status)
        tail = f"ORDER BY created_at DESC, run_id DESC LIMIT {mark} OFFSET {mark}"
        return await self._rows(where, tail, limit, offset)

    async def search(
        self,
        *,
        statuses: Sequence[str] | None = None,
        thread_id: str | None = None,
        run_ids: Sequence[str] | None = None,
        filters: Filters | None = None,
    ) -> list[Run]:
        where = self.table.where().within("status", statuses).eq("thread_id", thread_id)
        where = self._scoped(where.within("run_id", run_ids), filters)
        return await self._rows(where, "ORDER BY created_at, run_id")


class Crons(Repo[Cron]):
    def _table(self, tables: Tables) -> Table[Cron]:
        return tables.crons

    async def create(self, cron: Cron) -> None:
        await self._put(cron)

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
        where = self.table.where().eq("assistant_id", assistant_id).eq("thread_id", thread_id)
        where.eq("enabled", enabled).contains("metadata", metadata)
        return await self._page(self._scoped(where, filters), sort_by, sort_order, limit, offset)

    async def due(self, at: dt.datetime, *, limit: int = 100) -> list[Cron]:
        where = self.table.where().add("enabled")
        where.add(f"next_run_date <= {self._engine.dialect.mark}", self._engine.dialect.column(at))
        return await self._rows(where, self._by_insertion("next_run_date"), limit)
