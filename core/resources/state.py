"""Thread state (contract §4): the ThreadState object, state reads, state updates, history,
and the supersteps ``POST /threads`` replays as a new thread's first checkpoints.

Every read and write of a thread's checkpoints goes through the graph that owns them,
built on the graph loop (a factory graph with the config of the thread's assistant, as runs
build it). State reads project a checkpoint through *its own* graph, the ``graph_id`` its
metadata names (every run and state update writes it), falling back to the thread's current
``metadata.graph_id``: a thread that ran graph A and then graph B still shows A's values in
A's checkpoints (the official server projects them through B and loses them, §13.17).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from triograph.core.engine.execution import command_from
from triograph.core.engine.snapshots import checkpoint_ref, snapshot_to_state
from triograph.core.infra import encoding
from triograph.core.infra.errors import BadRequest, Conflict, InvalidRequest, NotFound
from triograph.core.infra.models import JSON, CheckpointRef, CommandBody, check_page, validate_uuid

if TYPE_CHECKING:
    from langgraph.types import StateSnapshot

    from triograph.core.infra.context import Core
    from triograph.core.infra.graphs import Graph
    from triograph.core.infra.models import Thread

T = TypeVar("T")

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


# -- supersteps of POST /threads ------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SuperstepUpdate:
    as_node: str
    values: JSON = None
    command: CommandBody | None = None


@attrs.frozen(kw_only=True)
class Superstep:
    updates: list[SuperstepUpdate]


def _checkpoint_keys(ref: CheckpointRef | dict[str, Any] | None) -> dict[str, Any]:
    """The configurable keys a checkpoint reference selects (never another thread)."""
    items = attrs.asdict(ref) if isinstance(ref, CheckpointRef) else (ref or {})
    return {k: v for k, v in items.items() if v is not None and k != "thread_id"}


def _check_values(values: Any, path: str) -> None:
    if values is not None and not isinstance(values, dict | list):
        kind = type(values).__name__
        raise InvalidRequest(f"{path}: expected an object, an array or null, got {kind}")


class ThreadStates:
    """A thread's checkpoints, read and written through the graph that owns them.

    Built by ``ThreadService`` (``core.threads.states``): threads are looked up through
    that service, and its status machine recomputes the record after every write here.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

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

    async def _graph(
        self, thread_id: str, graph_id: str, assistant_id: Any, access: str = "threads.read"
    ) -> tuple[Graph, Any]:
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
        graph = await self.core.graphs.build(
            self.core.bridge, graph_id, config, temporary=False, access=access
        )
        return graph, config

    async def _graph_of(self, thread: Thread) -> tuple[Graph, Any] | None:
        """The thread's current graph and config; None if it has no served graph."""
        graph_id = thread.metadata.get("graph_id")
        if graph_id not in self.core.graphs.graphs:
            return None
        return await self._graph(thread.thread_id, graph_id, thread.metadata.get("assistant_id"))

    async def _writer(self, thread: Thread) -> tuple[Graph, Any]:
        graph_id = self._graph_id(thread)
        assistant_id = thread.metadata.get("assistant_id")
        return await self._graph(thread.thread_id, graph_id, assistant_id, "threads.update")

    async def _write(self, make: Callable[[], Awaitable[T]]) -> T:
        """A LangGraph state write; an update LangGraph refuses is the client's 400."""
        from langgraph.errors import InvalidUpdateError

        try:
            return await self.core.bridge.call(make)
        except (InvalidUpdateError, ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc

    async def read(
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

    # -- supersteps ---------------------------------------------------------------------------

    def check_supersteps(self, thread: Thread, supersteps: list[Superstep]) -> None:
        """400 unless ``thread`` has a served graph to replay with, 422 for an empty
        superstep or bad values; checked before the thread is stored."""
        self._graph_id(thread)
        for i, step in enumerate(supersteps):
            if not step.updates:
                raise InvalidRequest(f"$.supersteps[{i}].updates: at least one update needed")
            for j, update in enumerate(step.updates):
                _check_values(update.values, f"$.supersteps[{i}].updates[{j}].values")

    async def replay(self, thread: Thread, supersteps: list[Superstep]) -> None:
        """Write ``supersteps`` as the thread's checkpoints, one superstep each."""
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

    # -- state --------------------------------------------------------------------------------

    async def get(
        self, thread_id: str, *, subgraphs: bool = False, checkpoint: CheckpointRef | None = None
    ) -> dict[str, Any]:
        """The ThreadState at ``checkpoint`` (default: the head); an unknown checkpoint is an
        empty state echoing the id asked for (contract §4.3)."""
        thread = await self.core.threads.get(thread_id)
        snapshot = await self.read(thread, subgraphs=subgraphs, checkpoint=checkpoint)
        if snapshot is not None and snapshot.config is not None:
            return snapshot_to_state(snapshot)
        state = dict(EMPTY_STATE)
        if checkpoint is not None and checkpoint.checkpoint_id:
            state["checkpoint"] = {"thread_id": thread.thread_id, **_checkpoint_keys(checkpoint)}
            state["checkpoint_id"] = checkpoint.checkpoint_id
        return state

    async def update(
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
        thread = await self.core.threads.visible(thread_id, "read", "update")
        async with self.core.supervisor.holding(thread.thread_id):
            # on a shared backend, the runs of other processes count too (a run another
            # process admits during the write is not held back by it, unlike one of ours)
            if runs := await self.core.cluster.in_flight_elsewhere(thread.thread_id):
                ids = [run.run_id for run in runs]
                raise Conflict(f"Thread {thread.thread_id} has in-flight runs: {ids}")
            graph, config = await self._writer(thread)
            base = _checkpoint_keys(checkpoint)
            if "checkpoint_id" in base:
                await self._check_checkpoint(thread.thread_id, base)
            config["configurable"].update(base)
            written = await self._write(
                lambda: graph.aupdate_state(config, values, as_node=as_node)
            )
            _, head = await self.core.threads.recompute(thread)
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
        check_page(limit, 0)
        thread = await self.core.threads.get(thread_id)
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

    # -- storage ------------------------------------------------------------------------------

    async def storage(self, thread_id: str) -> dict[str, Any]:
        """The bytes the thread's checkpoints occupy (``GET /threads/{id}/storage``), in the
        official server's shape: checkpoints (the records without their channel values, with
        their metadata), channel values (each channel version once, per channel) and pending
        writes, of every namespace (subgraphs included).

        Sizes are what the checkpointer's serializer makes of each part, measured on the
        graph loop through the checkpointer's own ``alist``: the same measure on every
        backend (what a backend adds around it, SQLite pages, Postgres row headers and JSONB,
        is not counted). Every checkpoint is read, so this costs as much as the history."""
        thread = await self.core.threads.get(validate_uuid(thread_id, "thread"))
        checkpointer = self.core.storage.checkpointer
        serde = checkpointer.serde

        def size(value: Any) -> int:
            return len(serde.dumps_typed(value)[1])

        async def measure() -> dict[str, Any]:
            checkpoints = writes = 0
            checkpoint_bytes = write_bytes = 0
            seen: set[tuple[str, str, Any]] = set()
            channels: dict[str, dict[str, int]] = {}
            config: Any = {"configurable": {"thread_id": thread.thread_id}}
            async for found in checkpointer.alist(config):
                checkpoints += 1
                checkpoint = found.checkpoint
                checkpoint_bytes += size({**checkpoint, "channel_values": {}})
                checkpoint_bytes += size(found.metadata)
                ns = found.config["configurable"].get("checkpoint_ns", "")
                versions = checkpoint.get("channel_versions", {})
                for channel, value in checkpoint.get("channel_values", {}).items():
                    key = (ns, channel, versions.get(channel))
                    if key not in seen:
                        seen.add(key)
                        entry = channels.setdefault(channel, {"versions": 0, "bytes": 0})
                        entry["versions"] += 1
                        entry["bytes"] += size(value)
                for _task, _channel, value in found.pending_writes or ():
                    writes += 1
                    write_bytes += size(value)
            value_bytes = sum(entry["bytes"] for entry in channels.values())
            return {
                "thread_id": thread.thread_id,
                "total_bytes": checkpoint_bytes + value_bytes + write_bytes,
                "checkpoints": {"count": checkpoints, "bytes": checkpoint_bytes},
                "channel_values": {
                    "count": len(seen),
                    "bytes": value_bytes,
                    "by_channel": channels,
                },
                "pending_writes": {"count": writes, "bytes": write_bytes},
            }

        return await self.core.bridge.call(measure)
