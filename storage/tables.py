"""Records as rows, for every SQL backend (one :class:`Tables` per dialect).

A record is one row: its JSON document (``doc``), plus the fields searches filter and sort
on as columns, and the fields matched by containment (``metadata``, a thread's ``values``)
as JSON columns of their own, kept out of the document. Columns hold what the dialect makes
of a value (:meth:`Dialect.column <triograph.storage.sql.Dialect.column>`); a record is
read back from the document and the JSON columns only.

The schema (``MIGRATIONS`` of each backend) has these tables and columns, plus the column
keeping insertion order (``Dialect.insertion``), which breaks ties in every sort.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Generic

import attrs

from triograph.core.infra.models import Assistant, AssistantVersion, Cron, Run, Thread, converter
from triograph.core.infra.models import Record as R
from triograph.storage.query import Where
from triograph.storage.sql import Connection, Dialect


class Table(Generic[R]):
    """How records of ``cls`` are rows of ``name``: ``columns`` (fields searched and sorted
    on, or computed by ``derived``), ``json`` (JSON columns) and ``doc``."""

    def __init__(
        self,
        dialect: Dialect,
        name: str,
        cls: type[R],
        key: tuple[str, ...],
        columns: tuple[str, ...],
        json: tuple[str, ...] = (),
        derived: dict[str, Callable[[R], Any]] | None = None,
    ) -> None:
        self.dialect = d = dialect
        self.name = name
        self.cls: type[R] = cls
        self.key = key
        self.columns = columns
        self.json = json
        self.derived: dict[str, Callable[[R], Any]] = derived or {}
        self.stored = [f'"{c}"' for c in (*columns, *json, "doc")]
        marks = [d.mark] * len(columns) + [d.json_mark] * (len(json) + 1)
        self.values = ", ".join(marks)
        self.match_key = " AND ".join(f'"{k}" = {d.mark}' for k in key)
        self.insert = f"INSERT INTO {name} ({', '.join(self.stored)}) VALUES ({self.values})"
        self.upsert = f"{self.insert} ON CONFLICT ({', '.join(key)}) DO UPDATE SET " + ", ".join(
            f"{c} = excluded.{c}" for c in self.stored
        )
        self.update = f"UPDATE {name} SET " + ", ".join(
            f"{c} = {m}" for c, m in zip(self.stored, marks, strict=True)
        )
        #: what :meth:`load` takes: the JSON columns, then the document
        self.loaded = ", ".join(self.stored[len(columns) :])
        self.select = f"SELECT {self.loaded} FROM {name}"
        self.by_key = f"{self.select} WHERE {self.match_key}"

    def row(self, record: R) -> list[Any]:
        fields = attrs.asdict(record, recurse=False)
        values: list[Any] = [self.dialect.column(self.column(record, c)) for c in self.columns]
        dumps = self.dialect.dumps
        values += [dumps(fields.pop(c)) for c in self.json]
        return [*values, dumps(fields)]

    def column(self, record: R, name: str) -> Any:
        derive = self.derived.get(name)
        return getattr(record, name) if derive is None else derive(record)

    def load(self, row: Sequence[Any]) -> R:
        """The record of a row selected by :attr:`select`."""
        document = self.dialect.document
        data = document(row[-1])
        for name, value in zip(self.json, row, strict=False):
            data[name] = document(value)
        record: R = converter.structure(data, self.cls)
        return record

    def where(self, key: Any = None) -> Where:
        """Conditions in this dialect: the row of ``key`` (a one-column key), if given."""
        where = Where(self.dialect.json)
        return where if key is None else where.eq(self.key[0], key)

    def get(self, conn: Connection, *key: Any) -> R | None:
        row = conn.execute(self.by_key, key).fetchone()
        return None if row is None else self.load(row)

    def insert_new(self, conn: Connection, record: R) -> bool:
        """Insert unless the key exists; whether it did."""
        inserted = conn.execute(f"{self.insert} ON CONFLICT DO NOTHING", self.row(record))
        return bool(inserted.rowcount > 0)

    def put(self, conn: Connection, record: R) -> None:
        """Insert or replace in place (the row keeps its place in insertion order)."""
        conn.execute(self.upsert, self.row(record))

    def replace(self, conn: Connection, record: R, where: Where) -> None:
        """Update the row ``where`` selects, if there is one."""
        conn.execute(f"{self.update} WHERE {where}", [*self.row(record), *where.params])

    def delete(self, conn: Connection, where: Where) -> bool:
        deleted = conn.execute(f"DELETE FROM {self.name} WHERE {where}", where.params)
        return bool(deleted.rowcount > 0)

    def page(
        self,
        conn: Connection,
        where: Where,
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
    ) -> tuple[list[R], int]:
        """One sorted page of matches and their number (see ``storage.query``)."""
        if sort_by not in self.columns:
            raise ValueError(f"cannot sort {self.name} by {sort_by!r}")
        d = self.dialect
        rows = []
        if limit:
            order = d.order(sort_by, sort_order == "desc")
            rows = conn.execute(
                f"SELECT {self.loaded}, COUNT(*) OVER () FROM {self.name} WHERE {where} "
                f"ORDER BY {order}, {d.insertion} LIMIT {d.mark} OFFSET {d.mark}",
                [*where.params, limit, offset],
            ).fetchall()
        if rows:
            return [self.load(r[:-1]) for r in rows], rows[0][-1]
        total = conn.execute(f"SELECT COUNT(*) FROM {self.name} WHERE {where}", where.params)
        return [], total.fetchone()[0]

    def rows(self, conn: Connection, where: Where, tail: str, *params: Any) -> list[R]:
        """The rows ``where`` selects, ``tail`` (``ORDER BY``, ``LIMIT``) taking ``params``."""
        found = conn.execute(f"{self.select} WHERE {where} {tail}", [*where.params, *params])
        return [self.load(r) for r in found]


class ThreadTable(Table[Thread]):
    """A thread's ``ttl.expires_at`` is a datetime again once read (JSON has none)."""

    def load(self, row: Sequence[Any]) -> Thread:
        thread = super().load(row)
        if thread.ttl and isinstance(thread.ttl.get("expires_at"), str):
            thread.ttl["expires_at"] = dt.datetime.fromisoformat(thread.ttl["expires_at"])
        return thread


@attrs.frozen
class Tables:
    """Every table, in one dialect."""

    assistants: Table[Assistant]
    versions: Table[AssistantVersion]
    threads: ThreadTable
    runs: Table[Run]
    crons: Table[Cron]

    @classmethod
    def of(cls, dialect: Dialect) -> Tables:
        return cls(
            assistants=Table(
                dialect,
                "assistants",
                Assistant,
                ("assistant_id",),
                ("assistant_id", "graph_id", "name", "name_lower", "created_at", "updated_at"),
                ("metadata",),
                {"name_lower": lambda a: a.name.lower()},  # Python's lower, beyond ASCII
            ),
            versions=Table(
                dialect,
                "assistant_versions",
                AssistantVersion,
                ("assistant_id", "version"),
                ("assistant_id", "version"),
                ("metadata",),
            ),
            threads=ThreadTable(
                dialect,
                "threads",
                Thread,
                ("thread_id",),
                (
                    "thread_id",
                    "status",
                    "created_at",
                    "updated_at",
                    "state_updated_at",
                    "expires_at",
                ),
                ("metadata", "values"),
                {"expires_at": lambda t: (t.ttl or {}).get("expires_at")},
            ),
            runs=Table(
                dialect,
                "runs",
                Run,
                ("run_id",),
                ("run_id", "thread_id", "status", "created_at", "updated_at"),
            ),
            crons=Table(
                dialect,
                "crons",
                Cron,
                ("cron_id",),
                (
                    "cron_id",
                    "assistant_id",
                    "thread_id",
                    "enabled",
                    "next_run_date",
                    "end_time",
                    "created_at",
                    "updated_at",
                ),
                ("metadata",),
            ),
        )
