"""Threads: records, the status machine of contract §3.7, state and history reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from triograph.core import encoding
from triograph.core.errors import Conflict, InvalidRequest, NotFound
from triograph.core.models import Thread, ThreadCreate, new_id, now, validate_uuid

if TYPE_CHECKING:
    from langgraph.types import StateSnapshot

    from triograph.core.context import Core
    from triograph.core.models import Run

#: metadata keys the official server silently strips from write requests (contract §1.6)
RESERVED_METADATA = frozenset(
    {"thread_id", "assistant_id", "run_id", "cron_id", "counters_since_delta_snapshot"}
)

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


def strip_reserved(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (metadata or {}).items() if k not in RESERVED_METADATA}


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


class ThreadService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def create(self, body: ThreadCreate) -> Thread:
        thread_id = validate_uuid(body.thread_id, "thread") if body.thread_id else new_id()
        thread = Thread(thread_id=thread_id, metadata=strip_reserved(body.metadata))
        if not await self.core.storage.threads.create(thread):
            if (body.if_exists or "raise") == "do_nothing":
                return await self.get(thread_id)
            raise Conflict(f"Thread with ID {thread_id} already exists")
        await self.core.hooks.fire("triograph_thread_created", thread=thread)
        return thread

    async def get(self, thread_id: str) -> Thread:
        thread_id = validate_uuid(thread_id, "thread")
        thread = await self.core.storage.threads.get(thread_id)
        if thread is None:
            raise NotFound(f"Thread with ID {thread_id} not found")
        return thread

    async def delete(
        self, thread_id: str, *, cancel_runs: bool = True, checkpoints: bool = True
    ) -> None:
        """Delete a thread, its runs and checkpoints; in-flight runs are interrupted first."""
        core = self.core
        if cancel_runs:
            for handle in core.supervisor.in_flight(thread_id):
                handle.cancel("interrupt", "thread deleted")
        if not await core.storage.threads.delete(thread_id):
            raise NotFound(f"Thread with ID {thread_id} not found")
        if checkpoints:
            checkpointer = core.storage.checkpointer
            await core.bridge.call(lambda: checkpointer.adelete_thread(thread_id))
        await core.hooks.fire("triograph_thread_deleted", thread_id=thread_id)

    async def sweep_expired(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Apply thread TTLs (placeholder; being written)."""
        task_status.started()
        await trio.sleep_forever()

    # -- state --------------------------------------------------------------------------------

    async def _snapshot(
        self, thread: Thread, *, subgraphs: bool = False, checkpoint: dict[str, Any] | None = None
    ) -> StateSnapshot | None:
        graph_id = thread.metadata.get("graph_id")
        if not graph_id or graph_id not in self.core.graphs.graphs:
            return None
        config: Any = {
            "configurable": {
                "thread_id": thread.thread_id,
                "graph_id": graph_id,
                **(checkpoint or {}),
            }
        }
        graph = await self.core.graphs.build(self.core.bridge, graph_id, config, temporary=False)
        return await self.core.bridge.call(lambda: graph.aget_state(config, subgraphs=subgraphs))

    async def state(
        self, thread_id: str, *, subgraphs: bool = False, checkpoint: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        thread = await self.get(thread_id)
        snapshot = await self._snapshot(thread, subgraphs=subgraphs, checkpoint=checkpoint)
        if snapshot is None or (not snapshot.values and snapshot.config is None):
            state = dict(EMPTY_STATE)
            if checkpoint and checkpoint.get("checkpoint_id"):
                state["checkpoint"] = {
                    "thread_id": thread.thread_id,
                    "checkpoint_ns": "",
                    **checkpoint,
                }
                state["checkpoint_id"] = checkpoint["checkpoint_id"]
            return state
        return snapshot_to_state(snapshot)

    async def history(
        self,
        thread_id: str,
        *,
        limit: int = 1,
        before: str | None = None,
        metadata: dict[str, Any] | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"$.limit: {limit} is not between 1 and 1000")
        thread = await self.get(thread_id)
        graph_id = thread.metadata.get("graph_id")
        if not graph_id or graph_id not in self.core.graphs.graphs:
            return []
        config: Any = {
            "configurable": {
                "thread_id": thread.thread_id,
                "checkpoint_ns": "",
                **(checkpoint or {}),
            }
        }
        graph = await self.core.graphs.build(self.core.bridge, graph_id, config, temporary=False)
        before_config: Any = {"configurable": {"checkpoint_id": before}} if before else None

        async def collect() -> list[StateSnapshot]:
            return [
                s
                async for s in graph.aget_state_history(
                    config, filter=metadata, before=before_config, limit=limit
                )
            ]

        return [snapshot_to_state(s) for s in await self.core.bridge.call(collect)]

    # -- status machine -----------------------------------------------------------------------

    async def mark_busy(self, thread: Thread) -> None:
        if thread.status != "busy":
            thread.status = "busy"
            thread.updated_at = thread.state_updated_at = now()
            await self.core.storage.threads.update(thread)

    async def after_run(self, run: Run, outcome: str, error: dict[str, str] | None) -> None:
        """Recompute a thread's values, interrupts and status once one of its runs ended."""
        thread = await self.core.storage.threads.get(run.thread_id)
        if thread is None:
            return
        snapshot = await self._snapshot(thread)
        if snapshot is not None:
            thread.values = encoding.jsonable(snapshot.values)
            interrupts: dict[str, list[Any]] = {}
            for task in snapshot.tasks:
                if task.interrupts:
                    interrupts[task.id] = encoding.jsonable(
                        [_interrupt(i) for i in task.interrupts]
                    )
            thread.interrupts = interrupts
        has_next = bool(snapshot is not None and snapshot.next)
        if self.core.supervisor.in_flight(thread.thread_id):
            thread.status = "busy"
        elif outcome == "error":
            thread.status = "error"
        elif has_next or thread.interrupts:
            thread.status = "interrupted"
        else:
            thread.status = "idle"
        if outcome != "rolled_back":
            thread.error = error
        thread.updated_at = thread.state_updated_at = now()
        await self.core.storage.threads.update(thread)
