"""Threads: the wire object, the status machine of contract §3.7, state and history (§4),
copy, prune and TTL.

Every read and write of a thread's checkpoints goes through the graph that owns them,
built on the graph loop (a factory graph with the config of the thread's assistant, as runs
build it). State reads project a checkpoint through *its own* graph, the ``graph_id`` its
metadata names (every run and state update writes it), falling back to the thread's current
``metadata.graph_id``: a thread that ran graph A and then graph B still shows A's values in
A's checkpoints (the official server projects them through B and loses them, §13.17).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from types import EllipsisType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from triograph.core import encoding
from triograph.core.errors import BadRequest, Conflict, InvalidRequest, NotFound
from triograph.core.execution import command_from
from triograph.core.models import (
    JSON,
    CheckpointRef,
    CommandBody,
    Thread,
    ThreadCreate,
    new_id,
    now,
    validate_uuid,
)

if TYPE_CHECKING:
    from langgraph.types import StateSnapshot

    from triograph.core.context import Core
    from triograph.core.graphs import Graph
    from triograph.core.models import Run

log = logging.getLogger("triograph.threads")
T = TypeVar("T")

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
#: the ThreadState of a thread without checkpoints (contract §4.1)
EMPTY_STATE: dict[str, Any] = {
    "values": {},
    "next": [],
    "tasks": [],
    "metadata": None,
    "created_at": None,
    "checkpoint": None,
    "parent_checkpoint": None,
    "interrupts": [],
    "checkpoint_id": None,
    "parent_checkpoint_id": None,
}


# -- supersteps of POST /threads, replayed by the service ---------------------------------


@attrs.frozen(kw_only=True)
class SuperstepUpdate:
    as_node: str
    values: JSON = None
    command: CommandBody | None = None


@attrs.frozen(kw_only=True)
class Superstep:
    updates: list[SuperstepUpdate]


# -- wire shapes ----------------------------------------------------------------------------


def strip_reserved(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA}


def thread_wire(thread: Thread, *, ttl: bool = False) -> dict[str, Any]:
    """The Thread object of contract §3.1; ``ttl`` only when asked for (``?include=ttl``)."""
    out = {key: getattr(thread, key) for key in THREAD_FIELDS}
    if ttl:
        out["ttl"] = thread.ttl
    return out


def _interrupt(item: Any) -> dict[str, Any]:
    out = {"id": item.id, "value": item.value}
    if getattr(item, "response_schema", None) is not None:
        out["response_schema"] = item.response_schema
    return out


def checkpoint_ref(config: Any, *, with_map: bool = True) -> dict[str, Any] | None:
    """``{checkpoint_id, thread_id, checkpoint_ns[, checkpoint_map]}`` of a LangGraph config."""
    if not config:
        return None
    conf = config.get("configurable", {})
    ref = {
        "checkpoint_id": conf.get("checkpoint_id"),
        "thread_id": conf.get("thread_id"),
        "checkpoint_ns": conf.get("checkpoint_ns", ""),
    }
    if with_map and conf.get("checkpoint_map"):
        ref["checkpoint_map"] = conf["checkpoint_map"]
    return ref


def snapshot_to_state(snapshot: StateSnapshot) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` as the ThreadState object of contract §4.1."""
    from langgraph.types import StateSnapshot

    tasks = []
    for task in snapshot.tasks:
        state = task.state
        tasks.append(
            {
                "id": task.id,
                "name": task.name,
                "path": list(task.path),
                # a reloaded checkpoint holds the error as text already; a live one as the object
                "error": task.error
                if task.error is None or isinstance(task.error, str)
                else repr(task.error),
                "interrupts": [_interrupt(i) for i in task.interrupts],
                "checkpoint": checkpoint_ref(state) if isinstance(state, dict) else None,
                "state": snapshot_to_state(state) if isinstance(state, StateSnapshot) else None,
                "result": task.result,
            }
        )
    metadata = dict(snapshot.metadata or {}) if snapshot.metadata is not None else None
    if metadata is not None and metadata.get("checkpoint_ns") == "":
        del metadata["checkpoint_ns"]
    checkpoint = checkpoint_ref(snapshot.config)
    parent = checkpoint_ref(snapshot.parent_config)
    return {
        "values": snapshot.values,
        "next": list(snapshot.next),
        "tasks": tasks,
        "metadata": metadata,
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [_interrupt(i) for i in snapshot.interrupts],
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def _pending_interrupts(snapshot: StateSnapshot) -> dict[str, list[Any]]:
    """Interrupts by the id of the task that raised them, inside subgraphs too (a snapshot
    read with ``subgraphs=True``), as the thread's ``interrupts`` holds them."""
    from langgraph.types import StateSnapshot

    out: dict[str, list[Any]] = {}
    for task in snapshot.tasks:
        nested = _pending_interrupts(task.state) if isinstance(task.state, StateSnapshot) else {}
        if nested:
            out.update(nested)
        elif task.interrupts:
            out[task.id] = encoding.jsonable([_interrupt(i) for i in task.interrupts])
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
    return {"strategy": strategy, "ttl_minutes": minutes, "expires_at": _expiry(minutes)}


def _expiry(minutes: float) -> dt.datetime:
    return now() + dt.timedelta(minutes=minutes)


def _checkpoint_keys(ref: CheckpointRef | dict[str, Any] | None) -> dict[str, Any]:
    """The configurable keys a checkpoint reference selects (never another thread)."""
    items = attrs.asdict(ref) if isinstance(ref, CheckpointRef) else (ref or {})
    return {k: v for k, v in items.items() if v is not None and k != "thread_id"}


def _check_values(values: Any, path: str) -> None:
    if values is not None and not isinstance(values, dict | list):
        kind = type(values).__name__
        raise InvalidRequest(f"{path}: expected an object, an array or null, got {kind}")


def _check_supersteps(supersteps: list[Superstep]) -> None:
    for i, step in enumerate(supersteps):
        if not step.updates:
            raise InvalidRequest(f"$.supersteps[{i}].updates: at least one update needed")
        for j, update in enumerate(step.updates):
            _check_values(update.values, f"$.supersteps[{i}].updates[{j}].values")


class ThreadService:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- records ------------------------------------------------------------------------------

    async def create(self, body: ThreadCreate, supersteps: list[Superstep] | None = None) -> Thread:
        """Store a thread; with ``supersteps``, replay them as its first checkpoints. A
        failing replay answers 4xx and leaves nothing behind (§13.16)."""
        thread_id = validate_uuid(body.thread_id, "thread") if body.thread_id else new_id()
        thread = Thread(
            thread_id=thread_id, metadata=strip_reserved(body.metadata), ttl=_ttl(body.ttl)
        )
        if supersteps:
            self._graph_id(thread)
            _check_supersteps(supersteps)
        if not await self.core.storage.threads.create(thread):
            if (body.if_exists or "raise") == "do_nothing":
                return await self.get(thread_id)
            raise Conflict(f"Thread with ID {thread_id} already exists")
        if supersteps:
            replayed = False
            try:
                thread = await self._replay(thread, supersteps)
                replayed = True
            finally:
                if not replayed:
                    with trio.CancelScope(shield=True), trio.move_on_after(10):
                        await self._erase(thread_id)
        await self.core.hooks.fire("triograph_thread_created", thread=attrs.evolve(thread))
        return thread

    async def _replay(self, thread: Thread, supersteps: list[Superstep]) -> Thread:
        from langgraph.types import StateUpdate as Update

        graph, config = await self._writer(thread)
        steps = [
            [
                Update(command_from(attrs.asdict(u.command)) if u.command else u.values, u.as_node)
                for u in s.updates
            ]
            for s in supersteps
        ]
        await self._write(lambda: graph.abulk_update_state(config, steps))
        return (await self._recompute(thread))[0] or thread

    async def get(self, thread_id: str) -> Thread:
        thread_id = validate_uuid(thread_id, "thread")
        thread = await self.core.storage.threads.get(thread_id)
        if thread is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return thread

    async def update(
        self, thread_id: str, *, metadata: dict[str, Any] | None, ttl: dict[str, Any] | None
    ) -> Thread:
        """Merge ``metadata`` shallowly, replace ``ttl`` (re-armed from now)."""
        stored_ttl = _ttl(ttl)
        thread = await self.get(thread_id)
        thread.metadata.update(strip_reserved(metadata))
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
        if cancel_runs:
            handles = self.core.supervisor.in_flight(thread_id)
            for handle in handles:
                handle.cancel("interrupt", "thread deleted")
            for handle in handles:
                await handle.done.wait()
        if not await self._erase(thread_id, checkpoints=checkpoints):
            raise NotFound(f"Thread with ID {thread_id} not found")
        await self.core.hooks.fire("triograph_thread_deleted", thread_id=thread_id)

    async def _erase(self, thread_id: str, *, checkpoints: bool = True) -> bool:
        """Delete the record (with its runs and crons) and the checkpoints; False if absent."""
        existed = await self.core.storage.threads.delete(thread_id)
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
        **filters: Any,
    ) -> tuple[list[Thread], int]:
        """One page of threads and the total; ``filters`` as :meth:`count` takes them."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"$.limit: {limit} is not between 1 and 1000")
        if offset < 0:
            raise InvalidRequest(f"$.offset: {offset} is less than 0")
        return await self.core.storage.threads.search(
            **self._filters(**filters),
            sort_by=sort_by,
            sort_order=sort_order,
            limit=limit,
            offset=offset,
        )

    async def count(self, **filters: Any) -> int:
        return (await self.core.storage.threads.search(**self._filters(**filters), limit=0))[1]

    @staticmethod
    def _filters(
        *,
        ids: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        values: dict[str, Any] | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """Thread filters: ``metadata``/``values`` containment (a thread without values never
        matches a ``values`` filter), ``status``, ``ids``."""
        if ids is not None:
            ids = [validate_uuid(i, "thread") for i in ids]
        return {"ids": ids, "metadata": metadata, "values": values, "status": status}

    async def copy(self, thread_id: str) -> Thread:
        """A new thread with the source's metadata, config and every checkpoint (same ids);
        runs are not copied, the status comes from the copied head."""
        source = await self.get(thread_id)
        target = Thread(
            thread_id=new_id(),
            metadata=dict(source.metadata),
            config=dict(source.config),
            values=source.values,
            interrupts=dict(source.interrupts),
        )
        await self.core.storage.threads.create(target)
        checkpointer = self.core.storage.checkpointer
        await self.core.bridge.call(
            lambda: checkpointer.acopy_thread(source.thread_id, target.thread_id)
        )
        target = (await self._recompute(target))[0] or target
        await self.core.hooks.fire("triograph_thread_created", thread=attrs.evolve(target))
        return target

    async def prune(self, thread_ids: list[str], strategy: str) -> int:
        """``delete``: as ``DELETE /threads/{id}``; ``keep_latest``: keep the thread and its
        latest checkpoint (threads with runs in flight are skipped). Unknown ids are
        skipped; returns how many threads were pruned."""
        ids = dict.fromkeys(validate_uuid(t, "thread") for t in thread_ids)
        pruned = 0
        for thread_id in ids:
            if await self.core.storage.threads.get(thread_id) is None:
                continue
            if strategy == "delete":
                await self.delete(thread_id)
            elif self.core.supervisor.in_flight(thread_id):
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
        the supervisor's nursery (``start_service``) and cancelled with it at shutdown."""
        task_status.started()
        while True:
            await trio.sleep(TTL_SWEEP_INTERVAL)
            try:
                await self.expire_due()
            except Exception:  # storage down: try again next time, never kill the nursery
                log.exception("thread TTL sweep failed")

    async def expire_due(self) -> None:
        """One sweep: each expired thread without runs in flight gets its TTL strategy.
        ``delete`` deletes it as ``DELETE`` does; ``keep_latest`` prunes it to its latest
        checkpoint and re-arms the TTL. A thread that fails is logged and left for the
        next sweep; the sweeper itself never dies of it."""
        for thread in await self.core.storage.threads.expired(now()):
            if self.core.supervisor.in_flight(thread.thread_id) or thread.ttl is None:
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
        thread = await self.core.storage.threads.get(thread_id)  # as it is after the prune
        if thread is not None and thread.ttl is not None:
            thread.ttl = {**thread.ttl, "expires_at": _expiry(thread.ttl["ttl_minutes"])}
            await self.core.storage.threads.update(thread)

    # -- graphs -------------------------------------------------------------------------------

    def _graph_id(self, thread: Thread) -> str:
        """The thread's served graph, or 400: state writes need one."""
        graph_id = thread.metadata.get("graph_id")
        if not graph_id:
            raise BadRequest(
                f"Thread '{thread.thread_id}' has no assigned graph ID. Set metadata.graph_id "
                "(PATCH /threads/{thread_id}) or run the thread first."
            )
        if graph_id not in self.core.graphs.graphs:
            raise BadRequest(
                f"Thread '{thread.thread_id}' belongs to graph '{graph_id}', which this "
                f"server does not serve; served graphs: {sorted(self.core.graphs.graphs)}"
            )
        return str(graph_id)

    async def _graph(self, thread_id: str, graph_id: str, assistant_id: Any) -> tuple[Graph, Any]:
        """The graph owning checkpoints of ``graph_id`` and the config to address the thread
        with; a factory is built with the assistant's config, as its runs were."""
        assistants = self.core.storage.assistants
        assistant = await assistants.get(assistant_id) if isinstance(assistant_id, str) else None
        if assistant is not None and assistant.graph_id != graph_id:
            assistant = None
        config: Any = dict(assistant.config) if assistant is not None else {}
        config["configurable"] = {
            **(config.get("configurable") or {}),
            "thread_id": thread_id,
            "checkpoint_ns": "",
            "graph_id": graph_id,
        }
        if assistant is not None:
            config["configurable"]["assistant_id"] = assistant.assistant_id
        graph = await self.core.graphs.build(self.core.bridge, graph_id, config, temporary=False)
        return graph, config

    async def _graph_of(self, thread: Thread) -> tuple[Graph, Any] | None:
        """The thread's current graph and config; None if it has no served graph."""
        graph_id = thread.metadata.get("graph_id")
        if graph_id not in self.core.graphs.graphs:
            return None
        return await self._graph(thread.thread_id, graph_id, thread.metadata.get("assistant_id"))

    async def _writer(self, thread: Thread) -> tuple[Graph, Any]:
        graph_id = self._graph_id(thread)
        return await self._graph(thread.thread_id, graph_id, thread.metadata.get("assistant_id"))

    async def _write(self, make: Callable[[], Awaitable[T]]) -> T:
        """A LangGraph state write; an update LangGraph refuses is the client's 400."""
        from langgraph.errors import InvalidUpdateError

        try:
            return await self.core.bridge.call(make)
        except (InvalidUpdateError, ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc

    async def _read(
        self, thread: Thread, *, subgraphs: bool = False, checkpoint: CheckpointRef | None = None
    ) -> StateSnapshot | None:
        """The snapshot at ``checkpoint`` (default: the head); None if the thread has no
        served graph."""
        found = await self._graph_of(thread)
        if found is None:
            return None
        graph, config = found
        config["configurable"].update(_checkpoint_keys(checkpoint))
        snapshot = await self.core.bridge.call(
            lambda: graph.aget_state(config, subgraphs=subgraphs)
        )
        return await self._own_graph(thread, snapshot, subgraphs=subgraphs)

    async def _own_graph(
        self, thread: Thread, snapshot: StateSnapshot, *, subgraphs: bool
    ) -> StateSnapshot:
        """``snapshot`` read again through the graph that wrote it, if that is not the
        thread's current graph (§13.17)."""
        metadata = snapshot.metadata or {}
        own = metadata.get("graph_id")
        if (
            snapshot.config is None
            or own == thread.metadata.get("graph_id")
            or own not in self.core.graphs.graphs
        ):
            return snapshot
        graph, config = await self._graph(thread.thread_id, own, metadata.get("assistant_id"))
        config["configurable"].update(_checkpoint_keys(snapshot.config["configurable"]))
        return await self.core.bridge.call(lambda: graph.aget_state(config, subgraphs=subgraphs))

    # -- state --------------------------------------------------------------------------------

    async def state(
        self, thread_id: str, *, subgraphs: bool = False, checkpoint: CheckpointRef | None = None
    ) -> dict[str, Any]:
        """The ThreadState at ``checkpoint`` (default: the head); an unknown checkpoint is an
        empty state echoing the id asked for (contract §4.3)."""
        thread = await self.get(thread_id)
        snapshot = await self._read(thread, subgraphs=subgraphs, checkpoint=checkpoint)
        if snapshot is not None and snapshot.config is not None:
            return snapshot_to_state(snapshot)
        state = dict(EMPTY_STATE)
        if checkpoint is not None and checkpoint.checkpoint_id:
            state["checkpoint"] = {"thread_id": thread.thread_id, **_checkpoint_keys(checkpoint)}
            state["checkpoint_id"] = checkpoint.checkpoint_id
        return state

    async def update_state(
        self,
        thread_id: str,
        values: Any,
        *,
        as_node: str | None = None,
        checkpoint: CheckpointRef | None = None,
    ) -> dict[str, Any]:
        """Apply ``values`` as ``as_node`` at the head, or fork from ``checkpoint``; the
        thread's values, interrupts and status follow the *new* head (§13.7)."""
        _check_values(values, "$.values")
        thread = await self.get(thread_id)
        in_flight = self.core.supervisor.in_flight(thread.thread_id)
        if in_flight:
            runs = [h.run.run_id for h in in_flight]
            raise Conflict(f"Thread {thread.thread_id} has in-flight runs: {runs}")
        graph, config = await self._writer(thread)
        base = _checkpoint_keys(checkpoint)
        if "checkpoint_id" in base:
            await self._check_checkpoint(thread.thread_id, base)
        config["configurable"].update(base)
        written = await self._write(lambda: graph.aupdate_state(config, values, as_node=as_node))
        _, head = await self._recompute(thread)
        state = snapshot_to_state(head) if head is not None else EMPTY_STATE
        self.core.thread_streams.publish(
            thread.thread_id,
            "state_update",
            encoding.dumps({"state": state, "thread_id": thread.thread_id}),
        )
        ref = checkpoint_ref(written)
        assert ref is not None
        return {"checkpoint": ref, "configurable": ref, "checkpoint_id": ref["checkpoint_id"]}

    async def _check_checkpoint(self, thread_id: str, ref: dict[str, Any]) -> None:
        """404 unless the thread has the checkpoint ``ref`` names (a fork needs a base)."""
        try:
            validate_uuid(ref["checkpoint_id"], "checkpoint")
        except InvalidRequest:
            raise InvalidRequest("Invalid checkpoint ID") from None
        config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", **ref}}
        checkpointer = self.core.storage.checkpointer
        if await self.core.bridge.call(lambda: checkpointer.aget_tuple(config)) is None:
            raise NotFound(f"Checkpoint {ref['checkpoint_id']} not found in thread {thread_id}")

    async def history(
        self,
        thread_id: str,
        *,
        limit: int = 1,
        before: str | None = None,
        metadata: dict[str, Any] | None = None,
        checkpoint: CheckpointRef | None = None,
    ) -> list[dict[str, Any]]:
        """Checkpoints newest first: ``before`` one, containing ``metadata``; ``checkpoint``
        narrows to a namespace (subgraph) or to exactly one checkpoint."""
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"$.limit: {limit} is not between 1 and 1000")
        thread = await self.get(thread_id)
        found = await self._graph_of(thread)
        if found is None:
            return []
        graph, config = found
        config["configurable"].update(_checkpoint_keys(checkpoint))
        before_config: Any = {"configurable": {"checkpoint_id": before}} if before else None

        async def collect() -> list[StateSnapshot]:
            return [
                s
                async for s in graph.aget_state_history(
                    config, filter=metadata, before=before_config, limit=limit
                )
            ]

        snapshots = await self.core.bridge.call(collect)
        return [
            snapshot_to_state(await self._own_graph(thread, s, subgraphs=False)) for s in snapshots
        ]

    # -- status machine -----------------------------------------------------------------------

    async def _recompute(
        self,
        thread: Thread,
        *,
        failed: bool = False,
        error: dict[str, str] | EllipsisType | None = ...,
    ) -> tuple[Thread | None, StateSnapshot | None]:
        """Values, interrupts and status from the head checkpoint (contract §3.7): ``busy``
        while a run is in flight, ``error`` if ``failed``, ``interrupted`` if the head has
        next nodes or interrupts, else ``idle``; ``error`` replaces the thread's error
        unless ``...``. Written to the record as stored *after* reading the head, so a
        concurrent PATCH survives; returns that record (None if deleted) and the head."""
        head = await self._read(thread, subgraphs=True)
        stored = await self.core.storage.threads.get(thread.thread_id)
        if stored is None:
            return None, head
        if head is not None:
            stored.values = encoding.jsonable(head.values)
            stored.interrupts = _pending_interrupts(head)
        if error is not ...:
            stored.error = error
        if self.core.supervisor.in_flight(stored.thread_id):
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
        """Recompute a thread's values, interrupts and status once one of its runs ended; a
        success clears the error of an earlier failure, a rollback leaves it."""
        thread = await self.core.storage.threads.get(run.thread_id)
        if thread is not None:
            await self._recompute(
                thread,
                failed=outcome == "error",
                error=... if outcome == "rolled_back" else error,
            )
