"""Threads: the wire object, the records service (create, get, update, delete, search,
count), copy, prune, TTL and the status machine of contract §3.7.

A thread's state, state updates and history (§4) are ``core.state``'s ``ThreadStates``,
reached as ``core.threads.states``; the status machine here follows each of its writes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import attrs
import trio

from triograph.core.engine.snapshots import pending_interrupts
from triograph.core.infra import encoding
from triograph.core.infra.auth import Filters, all_of, scoped
from triograph.core.infra.errors import Conflict, InvalidRequest, NotFound
from triograph.core.infra.models import (
    MAX_TTL_MINUTES,
    Thread,
    ThreadCreate,
    check_page,
    check_range,
    copied,
    new_id,
    now,
    validate_uuid,
)
from triograph.core.resources.state import Superstep, ThreadStates

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.types import StateSnapshot

    from triograph.core.infra.context import Core
    from triograph.core.infra.models import Run

log = logging.getLogger("triograph.threads")


#: metadata keys the official server silently strips from write requests (contract §1.6)
RESERVED_METADATA = frozenset(
    {"thread_id", "assistant_id", "run_id", "cron_id", "counters_since_delta_snapshot"}
)
#: the keys of the Thread object (contract §3.1), all of them always sent (§13.20)
THREAD_FIELDS = (
    "thread_id",
    "created_at",
    "updated_at",
    "state_updated_at",
    "metadata",
    "config",
    "status",
    "values",
    "interrupts",
    "error",
)
#: seconds between two passes of the TTL sweeper (a pass is one indexed storage query)
TTL_SWEEP_INTERVAL = 60.0


# -- wire shapes ----------------------------------------------------------------------------


def strip_reserved(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA}


def thread_wire(thread: Thread, *, ttl: bool = False) -> dict[str, Any]:
    """The Thread object of contract §3.1; ``ttl`` only when asked for (``?include=ttl``)."""
    out = {key: getattr(thread, key) for key in THREAD_FIELDS}
    if ttl:
        out["ttl"] = thread.ttl
    return out


def _ttl(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's ``{"strategy", "ttl": minutes}`` as stored on ``Thread.ttl``, armed now."""
    if spec is None:
        return None
    strategy = spec.get("strategy", "delete")
    if strategy not in ("delete", "keep_latest"):
        raise InvalidRequest(f"$.ttl.strategy: got {strategy!r}; allowed: 'delete', 'keep_latest'")
    minutes = spec.get("ttl")
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise InvalidRequest(f"$.ttl.ttl: expected a number of minutes above 0, got {minutes!r}")
    check_range("$.ttl.ttl", minutes, 0, MAX_TTL_MINUTES)
    return {"strategy": strategy, "ttl_minutes": minutes, "expires_at": _expiry(minutes)}


def _expiry(minutes: float) -> dt.datetime:
    return now() + dt.timedelta(minutes=minutes)


@attrs.define
class _Held:
    lock: trio.Lock = attrs.Factory(trio.Lock)
    users: int = 0


class KeyedLock:
    """One ``trio.Lock`` per key, kept only while a task holds or waits for it."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    @asynccontextmanager
    async def __call__(self, key: str) -> AsyncIterator[None]:
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held()
        held.users += 1
        try:
            async with held.lock:
                yield
        finally:
            held.users -= 1
            if not held.users:
                del self._held[key]


class ThreadService:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.states = ThreadStates(core)
        #: every read-modify-write of a thread record holds its key: a status decided from
        #: the runs in flight is never overwritten by a write decided earlier (§3.7 races)
        self.record_lock = KeyedLock()

    @asynccontextmanager
    async def locked(self, thread_id: str) -> AsyncIterator[None]:
        """Hold the thread's record lock; on a backend shared by processes, its cluster lock
        first (run admission holds that one too, so a status is never decided from the runs
        in flight while another process is admitting one)."""
        async with self.core.cluster.thread_lock(thread_id), self.record_lock(thread_id):
            yield

    # -- records ------------------------------------------------------------------------------

    async def create(self, body: ThreadCreate, supersteps: list[Superstep] | None = None) -> Thread:
        """Store a thread; with ``supersteps``, replay them as its first checkpoints. A
        failing replay answers 4xx and leaves nothing behind (§13.16). An existing thread
        the user may not see is a conflict all the same, never returned."""
        thread_id = validate_uuid(body.thread_id, "thread") if body.thread_id else new_id()
        value: dict[str, Any] = {
            "thread_id": thread_id,
            "metadata": strip_reserved(body.metadata),
            "if_exists": body.if_exists or "raise",
            "ttl": body.ttl,
        }
        allowed = await self.core.access.authorize("threads", "create", value)
        thread = Thread(
            thread_id=thread_id, metadata=strip_reserved(value["metadata"]), ttl=_ttl(body.ttl)
        )
        if supersteps:
            self.states.check_supersteps(thread, supersteps)
        if not await self.core.storage.threads.create(thread):
            existing = await self.core.storage.threads.get(thread_id, **scoped(allowed))
            if existing is not None and (body.if_exists or "raise") == "do_nothing":
                return existing
            raise Conflict(f"Thread with ID {thread_id} already exists")
        if supersteps:
            replayed = False
            try:
                await self.states.replay(thread, supersteps)
                thread = (await self.recompute(thread))[0] or thread
                replayed = True
            finally:
                if not replayed:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await self._erase(thread_id)
        await self.core.hooks.fire("triograph_thread_created", thread=copied(thread))
        return thread

    async def authorize(self, verb: str, **value: Any) -> Filters | None:
        """The filter the current user's ``threads.<verb>`` leaves (403 if refused)."""
        return await self.core.access.authorize("threads", verb, value)

    async def get(self, thread_id: str) -> Thread:
        """``threads.read`` of a thread (404 if absent or not the user's to read)."""
        return await self.visible(thread_id, "read")

    async def visible(self, thread_id: str, *actions: str, **value: Any) -> Thread:
        """The thread, if the current user may do each of ``actions`` on it (``value`` adds
        to ``{"thread_id"}``, what the handlers are asked); else 404, as if absent."""
        thread_id = validate_uuid(thread_id, "thread")
        allowed = all_of(*[await self.authorize(a, thread_id=thread_id, **value) for a in actions])
        return await self.lookup(thread_id, allowed)

    async def lookup(self, thread_id: str, allowed: Filters | None) -> Thread:
        """The thread if ``allowed`` lets it through, else 404 (checks nothing else)."""
        thread = await self.core.storage.threads.get(thread_id, **scoped(allowed))
        if thread is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return thread

    async def update(
        self, thread_id: str, *, metadata: dict[str, Any] | None, ttl: dict[str, Any] | None
    ) -> Thread:
        """Merge ``metadata`` shallowly, replace ``ttl`` (re-armed from now)."""
        stored_ttl = _ttl(ttl)
        thread_id = validate_uuid(thread_id, "thread")
        value: dict[str, Any] = {"thread_id": thread_id, "metadata": strip_reserved(metadata)}
        allowed = await self.core.access.authorize("threads", "update", value)
        async with self.locked(thread_id):
            thread = await self.lookup(thread_id, allowed)
            thread.metadata.update(strip_reserved(value["metadata"]))
            if stored_ttl is not None:
                thread.ttl = stored_ttl
            thread.updated_at = now()
            await self.core.storage.threads.update(thread)
        return thread

    async def delete(
        self, thread_id: str, *, cancel_runs: bool = True, checkpoints: bool = True
    ) -> None:
        """Delete a thread, its runs and checkpoints. Runs in flight are interrupted first
        and awaited, so none writes a checkpoint after the thread is gone."""
        await self.visible(thread_id, "delete")
        if cancel_runs:
            runs = self.core.runs
            handles = [h for r in await runs.in_flight(thread_id) if (h := await runs.handle(r))]
            for handle in handles:
                handle.cancel("interrupt", "thread deleted")
            for handle in handles:
                await handle.done.wait()
        if not await self._erase(thread_id, checkpoints=checkpoints):
            raise NotFound(f"Thread with ID {thread_id} not found")
        await self.core.hooks.fire("triograph_thread_deleted", thread_id=thread_id)

    async def discarded(self, thread_id: str, *, deleted: bool) -> None:
        """The temporary thread of a finished stateless run is gone with its run (its task
        deleted both, as the server: no lookup, no checkpoints, no run in flight to cancel);
        ``deleted``: by that write (it was not gone already)."""
        self.core.event_log.forget([thread_id])
        if deleted:
            await self.core.hooks.fire("triograph_thread_deleted", thread_id=thread_id)

    async def _erase(self, thread_id: str, *, checkpoints: bool = True) -> bool:
        """Delete the record (with its runs and crons) and the checkpoints; False if absent."""
        existed = await self.core.storage.threads.delete(thread_id)
        self.core.event_log.forget([thread_id])
        if checkpoints:
            checkpointer = self.core.storage.checkpointer
            await self.core.bridge.call(lambda: checkpointer.adelete_thread(thread_id))
        return existed

    async def search(
        self,
        *,
        limit: int = 10,
        offset: int = 0,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        **criteria: Any,
    ) -> tuple[list[Thread], int]:
        """One page of the threads the user may search, and their total; ``criteria`` as
        :meth:`count` takes them."""
        check_page(limit, offset)
        query, allowed = await self._query(limit=limit, offset=offset, **criteria)
        return await self.core.storage.threads.search(
            **query,
            **scoped(allowed),
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )

    async def count(self, **criteria: Any) -> int:
        query, allowed = await self._query(limit=0, offset=0, **criteria)
        return (await self.core.storage.threads.search(**query, **scoped(allowed), limit=0))[1]

    async def _query(
        self,
        *,
        limit: int,
        offset: int,
        ids: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> tuple[dict[str, Any], Filters | None]:
        """The search criteria (``metadata``/``values`` containment: a thread without values
        never matches a ``values`` filter; ``status``; ``ids``) as ``threads.search`` leaves
        them, and its filter."""
        if ids is not None:
            ids = [validate_uuid(i, "thread") for i in ids]
        value: dict[str, Any] = {
            "metadata": metadata or {},
            "values": values or {},
            "status": status,
            "limit": limit,
            "offset": offset,
            "ids": ids,
        }
        allowed = await self.core.access.authorize("threads", "search", value)
        query = {
            "ids": value.get("ids"),
            "metadata": value.get("metadata") or None,
            "values": value.get("values") or None,
            "status": value.get("status"),
        }
        return query, allowed

    async def copy(self, thread_id: str) -> Thread:
        """A new thread with the source's metadata, config and every checkpoint (same ids);
        runs are not copied, the status comes from the copied head. Reading the source is
        ``threads.read``; the copy is a ``threads.create`` whose handlers see (and may
        edit) the metadata it gets, so the copy belongs to whoever made it."""
        source = await self.get(thread_id)
        value: dict[str, Any] = {
            "thread_id": new_id(),
            "metadata": dict(source.metadata),
            "if_exists": "raise",
        }
        await self.core.access.authorize("threads", "create", value)
        target = Thread(
            thread_id=value["thread_id"],
            metadata=dict(value["metadata"] or {}),
            config=dict(source.config),
            values=source.values,
            interrupts=dict(source.interrupts),
        )
        await self.core.storage.threads.create(target)
        checkpointer = self.core.storage.checkpointer
        await self.core.bridge.call(
            lambda: checkpointer.acopy_thread(source.thread_id, target.thread_id)
        )
        await self.core.bridge.call(lambda: _stamp_thread_id(checkpointer, target.thread_id))
        target = (await self.recompute(target))[0] or target
        await self.core.hooks.fire("triograph_thread_created", thread=copied(target))
        return target

    async def prune(self, thread_ids: list[str], strategy: str) -> int:
        """``delete``: as ``DELETE /threads/{id}``; ``keep_latest``: keep the thread and its
        latest checkpoint (threads with runs in flight are skipped). Unknown ids are
        skipped; returns how many threads were pruned."""
        ids = dict.fromkeys(validate_uuid(t, "thread") for t in thread_ids)
        allowed = await self.authorize("delete", thread_ids=list(ids))
        if allowed is not None:  # the official answer: all of them may be pruned, or none
            for thread_id in ids:
                if await self.core.storage.threads.get(thread_id, **scoped(allowed)) is None:
                    raise NotFound("At least one thread not found or not authorized")
        pruned = 0
        for thread_id in ids:
            if await self.core.storage.threads.get(thread_id) is None:
                continue
            if strategy == "delete":
                await self.delete(thread_id)
            elif await self.core.runs.in_flight(thread_id):
                continue
            else:
                await self._keep_latest(thread_id)
            pruned += 1
        return pruned

    async def _keep_latest(self, thread_id: str) -> None:
        checkpointer = self.core.storage.checkpointer
        await self.core.bridge.call(
            lambda: checkpointer.aprune([thread_id], strategy="keep_latest")
        )

    # -- TTL ----------------------------------------------------------------------------------

    async def sweep_expired(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Apply thread TTLs every ``TTL_SWEEP_INTERVAL`` seconds. Started by the lifespan in
        the supervisor's nursery (``start_service``) and cancelled with it at shutdown. On a
        shared backend, the leader sweeps, and drops the stored events of runs that finished
        more than ``resumable_ttl`` ago."""
        task_status.started()
        while True:
            await trio.sleep(TTL_SWEEP_INTERVAL)
            if not self.core.cluster.leader:  # another process of the shared backend sweeps
                continue
            try:
                await self.expire_due()
                kept = dt.timedelta(seconds=self.core.settings.resumable_ttl)
                await self.core.cluster.prune_events(now() - kept)
            except Exception:  # storage down: try again next time, never kill the nursery
                log.exception("thread TTL sweep failed")

    async def expire_due(self) -> None:
        """One sweep: each expired thread without runs in flight gets its TTL strategy.
        ``delete`` deletes it as ``DELETE`` does; ``keep_latest`` prunes it to its latest
        checkpoint and re-arms the TTL. A thread that fails is logged and left for the
        next sweep; the sweeper itself never dies of it."""
        for thread in await self.core.storage.threads.expired(now()):
            if thread.ttl is None or await self.core.runs.in_flight(thread.thread_id):
                continue
            try:
                if thread.ttl.get("strategy") == "keep_latest":
                    await self._keep_latest(thread.thread_id)
                    await self._rearm(thread.thread_id)
                else:
                    await self.delete(thread.thread_id)
            except NotFound:  # deleted meanwhile
                pass
            except Exception:
                log.exception("TTL of thread %s could not be applied", thread.thread_id)

    async def _rearm(self, thread_id: str) -> None:
        async with self.locked(thread_id):
            thread = await self.core.storage.threads.get(thread_id)  # as it is after the prune
            if thread is not None and thread.ttl is not None:
                thread.ttl = {**thread.ttl, "expires_at": _expiry(thread.ttl["ttl_minutes"])}
                await self.core.storage.threads.update(thread)

    # -- status machine -----------------------------------------------------------------------

    async def mark_busy(self, thread: Thread, *, create: bool, metadata: dict[str, Any]) -> bool:
        """A run was admitted on ``thread`` (and reserved in flight): ``busy`` at once (§3.7).

        With ``create``, stores ``thread`` as new and returns True, unless a concurrent
        request created it first. Otherwise the stored record becomes ``busy``, taking
        ``metadata`` (the run's graph) if no other run was in flight. Raises NotFound if
        the thread was deleted since the request looked it up.
        """
        async with self.locked(thread.thread_id):
            if create:
                thread.status = "busy"
                if await self.core.storage.threads.create(thread):
                    return True
            stored = await self.core.storage.threads.get(thread.thread_id)
            if stored is None:
                raise NotFound("Thread or assistant not found.")
            if stored.status != "busy":
                stored.metadata.update(metadata)
            stored.status = "busy"
            stored.updated_at = now()
            await self.core.storage.threads.update(stored)
            return False

    async def recompute(
        self,
        thread: Thread,
        *,
        failed: bool = False,
        error: dict[str, str] | EllipsisType | None = ...,
    ) -> tuple[Thread | None, StateSnapshot | None]:
        """Values, interrupts and status from the head checkpoint (contract §3.7): ``busy``
        while a run is in flight, ``error`` if ``failed``, ``interrupted`` if the head has
        next nodes or interrupts, else ``idle``; ``error`` replaces the thread's error
        unless ``...``. Decided and written under the thread's record lock from the record
        as stored and the runs in flight *then*, so neither a concurrent PATCH nor a run
        admitted meanwhile is lost; returns that record (None if deleted) and the head."""
        async with self.locked(thread.thread_id):
            head = await self.states.read(thread, subgraphs=True)
            stored = await self.core.storage.threads.get(thread.thread_id)
            if stored is None:
                return None, head
            if head is not None:
                stored.values = encoding.jsonable(head.values)
                stored.interrupts = pending_interrupts(head)
            if error is not ...:
                stored.error = error
            if await self.core.runs.in_flight(stored.thread_id):
                stored.status = "busy"
            elif failed:
                stored.status = "error"
            elif (head is not None and head.next) or stored.interrupts:
                stored.status = "interrupted"
            else:
                stored.status = "idle"
            stored.updated_at = stored.state_updated_at = now()
            await self.core.storage.threads.update(stored)
        return stored, head

    async def after_run(self, run: Run, outcome: str, error: dict[str, str] | None) -> None:
        """Recompute a thread's values, interrupts and status once one of its runs ended
        (or was never stored: ``rolled_back``); a success clears the error of an earlier
        failure, a rollback leaves it."""
        thread = await self.core.storage.threads.get(run.thread_id)
        if thread is not None:
            await self.recompute(
                thread,
                failed=outcome == "error",
                error=... if outcome == "rolled_back" else error,
            )


async def _stamp_thread_id(checkpointer: BaseCheckpointSaver[Any], thread_id: str) -> None:
    """Give every checkpoint of ``thread_id`` (a copy) ``thread_id`` in its metadata, as the
    official server's copies have it: each is put again under its own id, with its parent
    and channel values unchanged (no new channel versions, so no blob is written again)."""
    tuples = [t async for t in checkpointer.alist({"configurable": {"thread_id": thread_id}})]
    for item in tuples:
        if item.metadata.get("thread_id") == thread_id:
            continue
        conf = item.config["configurable"]
        parent = {"thread_id": thread_id, "checkpoint_ns": conf.get("checkpoint_ns", "")}
        if item.parent_config is not None:
            parent["checkpoint_id"] = item.parent_config["configurable"]["checkpoint_id"]
        metadata: Any = {**item.metadata, "thread_id": thread_id}
        await checkpointer.aput({"configurable": parent}, item.checkpoint, metadata, {})
