"""The memory backend's LangGraph parts: checkpoints and store in dicts of this process.

:class:`MemoryCheckpointer` extends LangGraph's ``InMemorySaver`` to delete by run (for
rollback), copy and prune threads; :class:`MemoryStore` its ``InMemoryStore`` with TTL and
the semantics the SQL backends' stores follow (:mod:`triograph.storage.store_expiry`). Both
are used on the graph loop only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.base import (
    GetOp,
    IndexConfig,
    Item,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from langgraph.store.memory import InMemoryStore, _compare_values

from triograph.core.infra.models import now
from triograph.core.infra.store_config import SweepSchedule


class MemoryCheckpointer(InMemorySaver):
    """``InMemorySaver`` that can also delete the checkpoints written by given runs, copy a
    thread's checkpoints to another thread, and prune threads."""

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

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Every checkpoint, write and blob of the source under the target's id; checkpoint
        ids are kept, ``thread_id`` in checkpoint metadata is rewritten."""
        for ns, checkpoints in self.storage.get(source_thread_id, {}).items():
            target = self.storage[target_thread_id][ns]
            for checkpoint_id, (checkpoint, metadata, parent) in checkpoints.items():
                meta = self.serde.loads_typed(metadata)
                if "thread_id" in meta:
                    meta["thread_id"] = target_thread_id
                target[checkpoint_id] = (checkpoint, self.serde.dumps_typed(meta), parent)
        for key, writes in list(self.writes.items()):
            if key[0] == source_thread_id:
                self.writes[(target_thread_id, *key[1:])] = dict(writes)
        for blob_key, blob in list(self.blobs.items()):
            if blob_key[0] == source_thread_id:
                self.blobs[(target_thread_id, *blob_key[1:])] = blob

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``delete``: drop every checkpoint; ``keep_latest``: keep the newest checkpoint of
        each namespace (with its writes, and the blobs it references)."""
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            kept_versions: set[tuple[Any, ...]] = set()
            for ns, checkpoints in self.storage.get(thread_id, {}).items():
                if not checkpoints:
                    continue
                latest = max(checkpoints)
                checkpoint, metadata, _ = checkpoints[latest]
                for checkpoint_id in [c for c in checkpoints if c != latest]:
                    del checkpoints[checkpoint_id]
                    self.writes.pop((thread_id, ns, checkpoint_id), None)
                checkpoints[latest] = (checkpoint, metadata, None)
                versions = self.serde.loads_typed(checkpoint)["channel_versions"]
                kept_versions.update((ns, ch, v) for ch, v in versions.items())
            for key in [k for k in self.blobs if k[0] == thread_id]:
                if key[1:] not in kept_versions:
                    del self.blobs[key]

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.prune(thread_ids, strategy=strategy)


class MemoryStore(InMemoryStore):
    """``InMemoryStore`` with what a server's store needs besides: TTL (LangGraph's memory
    store has none), namespaces that vanish with their last item (LangGraph's keeps them
    listed, even after a read of an absent key), and comparison filters that do not match
    an item lacking the field (LangGraph's raises ``TypeError`` for it).

    Each item's expiry is kept beside it. An expired item is deleted before anything could
    see it: the item itself before a get, every expired item before a search or a
    namespace listing, and every ``sweep_interval_minutes`` on any operation (the sweep).
    ``clock`` says what time it is; tests move it instead of waiting minutes.
    """

    supports_ttl = True

    def __init__(
        self,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        clock: Callable[[], dt.datetime] = now,
    ) -> None:
        super().__init__(index=index)
        self.ttl_config = ttl
        self.clock = clock
        #: (namespace, key) -> (expires at, ttl in minutes)
        self._expiry: dict[tuple[tuple[str, ...], str], tuple[dt.datetime, float]] = {}
        self._sweeps = SweepSchedule(ttl)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        self._expire(ops)
        results = super().batch(ops)
        self._settle(ops, results)
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        self._expire(ops)
        results = await super().abatch(ops)
        self._settle(ops, results)
        return results

    def sweep(self) -> int:
        """Delete every expired item; returns how many."""
        at = self.clock()
        expired = [k for k, (expires_at, _) in self._expiry.items() if expires_at <= at]
        for namespace, key in expired:
            self._remove(namespace, key)
        return len(expired)

    def _remove(self, namespace: tuple[str, ...], key: str) -> None:
        self._expiry.pop((namespace, key), None)
        self._data.get(namespace, {}).pop(key, None)
        self._vectors.get(namespace, {}).pop(key, None)
        self._drop_if_empty(namespace)

    def _drop_if_empty(self, namespace: tuple[str, ...]) -> None:
        if not self._data.get(namespace):
            self._data.pop(namespace, None)
            self._vectors.pop(namespace, None)

    def _expire(self, ops: list[Op]) -> None:
        at = self.clock()
        if self._sweeps.due(ops, at):
            self.sweep()
            return
        for op in ops:
            if isinstance(op, GetOp):
                expiry = self._expiry.get((op.namespace, op.key))
                if expiry is not None and expiry[0] <= at:
                    self._remove(op.namespace, op.key)

    def _settle(self, ops: list[Op], results: list[Result]) -> None:
        """Record the expiry of what was put, refresh what was read, drop empty namespaces."""
        at = self.clock()
        touched: set[tuple[str, ...]] = set()
        for op, result in zip(ops, results, strict=True):
            if isinstance(op, PutOp):
                touched.add(op.namespace)
                if op.value is None or op.ttl is None:
                    self._expiry.pop((op.namespace, op.key), None)
                else:
                    self._expiry[(op.namespace, op.key)] = (
                        at + dt.timedelta(minutes=op.ttl),
                        op.ttl,
                    )
            elif isinstance(op, GetOp):
                touched.add(op.namespace)
                if op.refresh_ttl and result is not None:
                    self._refresh((op.namespace, op.key), at)
            elif isinstance(op, SearchOp) and op.refresh_ttl:
                for item in cast("list[SearchItem]", result or []):
                    self._refresh((item.namespace, item.key), at)
        for namespace in touched:
            self._drop_if_empty(namespace)

    def _refresh(self, key: tuple[tuple[str, ...], str], at: dt.datetime) -> None:
        if key in self._expiry:
            minutes = self._expiry[key][1]
            self._expiry[key] = (at + dt.timedelta(minutes=minutes), minutes)

    def _filter_items(self, op: SearchOp) -> list[tuple[Item, list[list[float]]]]:
        if not op.filter:
            return super()._filter_items(op)
        # the unfiltered candidates (a negative limit makes the parent scan everything)
        candidates = super()._filter_items(op._replace(filter=None, offset=0, limit=-1))
        wanted = op.filter
        return [(item, vectors) for item, vectors in candidates if self._matches(item, wanted)]

    @staticmethod
    def _matches(item: Item, wanted: dict[str, Any]) -> bool:
        """LangGraph's filter semantics, except that a value that cannot be compared does
        not match (as in the Postgres store) instead of failing the whole search."""
        try:
            return all(_compare_values(item.value.get(k), v) for k, v in wanted.items())
        except (TypeError, ValueError):
            return False
