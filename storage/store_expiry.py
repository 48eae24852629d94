"""What the SQL backends' stores add to LangGraph's: the memory store's TTL semantics, on a
clock, and its semantic searches that go on with unindexed items.

LangGraph's SQLite and Postgres stores sweep expired items in a background task on the
database's clock, or not at all. :class:`ExpiringStore`, mixed in before LangGraph's store
class, does instead what ``MemoryStore`` (:mod:`triograph.storage.memory`) does: an expired
item is deleted before anything could see it (the item itself before a get, every expired
item before a search or a namespace listing, and every ``sweep_interval_minutes`` on any
operation), with expiries set and refreshed on ``clock`` (tests move it instead of
waiting). Each backend says how a time is stored, how an expiry is set and refreshed and
which items have vectors; the operations LangGraph's class sees carry no TTL work
(:func:`untimed`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from langgraph.store.base import (
    BaseStore,
    GetOp,
    IndexConfig,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)

from triograph.core.infra.store_config import SweepSchedule

#: SQL and its parameters
Statement = tuple[str, Sequence[Any]]


def untimed(op: Op) -> Op:
    """``op`` without the TTL work :class:`ExpiringStore` does itself."""
    if isinstance(op, PutOp):
        return op._replace(ttl=None)
    if isinstance(op, GetOp | SearchOp):
        return op._replace(refresh_ttl=False)
    return op


def prefix(namespace: tuple[str, ...]) -> str:
    """A namespace as LangGraph's SQL stores keep it (their ``prefix`` column)."""
    return ".".join(namespace)


class ExpiringStore(BaseStore):
    """The mixin; see the module docstring. A subclass sets ``clock`` and ``_sweeps`` and
    implements the hooks below."""

    clock: Callable[[], dt.datetime]
    _sweeps: SweepSchedule
    index_config: Any  # set by LangGraph's store
    _task: Any  # LangGraph's batching task
    #: a parameter's placeholder
    mark = "?"

    def _unopened(
        self, index: IndexConfig | None, ttl: TTLConfig | None, clock: Callable[[], dt.datetime]
    ) -> None:
        """What the constructor sets before LangGraph's class is initialized (on the graph
        loop, at first use: ``opened`` then)."""
        self.opened = False
        self.ttl_config = ttl
        self.clock = clock
        self._index = index
        self._task = None  # read by LangGraph's __del__
        self._sweeps = SweepSchedule(ttl)

    async def _ready(self) -> None:
        """Finish construction (first use, on the graph loop)."""

    def _plain(self, op: Op) -> Op:
        """``op`` as LangGraph's class gets it."""
        return untimed(op)

    def _time(self, at: dt.datetime) -> Any:
        """A time as the store's columns hold it."""
        return at

    def _stored(self, op: PutOp, at: dt.datetime) -> Statement | None:
        """What stamps an item just put (its expiry, from ``op.ttl``)."""
        raise NotImplementedError

    def _refresh(self, namespace: tuple[str, ...], key: str, at: dt.datetime) -> Statement:
        """What moves an item's expiry to ``at`` plus its TTL (an item without none)."""
        raise NotImplementedError

    def _everything(self, op: SearchOp) -> SearchOp:
        """``op`` without its query, offset and limit."""
        raise NotImplementedError

    async def _indexed(self, items: list[SearchItem]) -> set[tuple[str, str]]:
        """The ``(prefix, key)`` of those of ``items`` that have vectors."""
        raise NotImplementedError

    async def _execute(self, statements: list[Statement]) -> None:
        """The statements in one transaction."""
        raise NotImplementedError

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops, at = list(ops), self.clock()
        await self._ready()
        await self._execute(self._expiring(ops, at))
        # LangGraph's store class comes after this mixin: super() is its abatch
        results = await super().abatch([self._plain(op) for op in ops])  # type: ignore[safe-super]
        await self._execute(self._settling(ops, results, at))
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, SearchOp) and op.query and self.index_config:
                found = cast("list[SearchItem]", result)
                found.extend(await self._unscored(op, op.limit - len(found)))
        return results

    async def _unscored(self, op: SearchOp, room: int) -> list[SearchItem]:
        """As in the memory store, a semantic search short of ``limit`` goes on with the
        matching items that have no vectors (put with ``index=False``), without a score."""
        if room <= 0:
            return []
        found = await super().abatch([self._plain(self._everything(op))])  # type: ignore[safe-super]
        items = cast("list[SearchItem]", found[0])
        vectors = await self._indexed(items)
        return [i for i in items if (prefix(i.namespace), i.key) not in vectors][:room]

    def _expiring(self, ops: list[Op], at: dt.datetime) -> list[Statement]:
        m, now = self.mark, self._time(at)
        if self._sweeps.due(ops, at):
            return [(f"DELETE FROM store WHERE expires_at <= {m}", [now])]
        return [
            (
                f"DELETE FROM store WHERE prefix = {m} AND key = {m} AND expires_at <= {m}",
                [prefix(op.namespace), op.key, now],
            )
            for op in ops
            if isinstance(op, GetOp)
        ]

    def _settling(self, ops: list[Op], results: list[Result], at: dt.datetime) -> list[Statement]:
        """Stamp what was put, refresh the expiry of what was read."""
        out: list[Statement] = []
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, PutOp) and op.value is not None:
                stamp = self._stored(op, at)
                if stamp is not None:
                    out.append(stamp)
            elif isinstance(op, GetOp) and op.refresh_ttl and result is not None:
                out.append(self._refresh(op.namespace, op.key, at))
            elif isinstance(op, SearchOp) and op.refresh_ttl:
                items = cast("list[SearchItem]", result or [])
                out.extend(self._refresh(i.namespace, i.key, at) for i in items)
        return out
