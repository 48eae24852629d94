"""LangGraph snapshots as the API's wire shapes: the ThreadState object (contract §4.1),
checkpoint references, and the pending interrupts a thread records. Used by the state
reads, the run engine and the stream-mode emitters alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from triograph.core.infra import encoding

if TYPE_CHECKING:
    from langgraph.types import StateSnapshot


def interrupt_of(item: Any) -> dict[str, Any]:
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


def _task_checkpoint(config: Any) -> dict[str, Any]:
    """The checkpoint a subgraph task will write, as far as it is known: a task that has
    not run yet has no ``checkpoint_id`` (the key is left out, as on the official server)."""
    conf = config.get("configurable", {})
    keys = ("checkpoint_id", "thread_id", "checkpoint_ns", "checkpoint_map")
    return {key: conf[key] for key in keys if key in conf}


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
                "interrupts": [interrupt_of(i) for i in task.interrupts],
                "checkpoint": _task_checkpoint(state) if isinstance(state, dict) else None,
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
        "interrupts": [interrupt_of(i) for i in snapshot.interrupts],
        "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
        "parent_checkpoint_id": parent["checkpoint_id"] if parent else None,
    }


def pending_interrupts(snapshot: StateSnapshot) -> dict[str, list[Any]]:
    """Interrupts by the id of the task that raised them, inside subgraphs too (a snapshot
    read with ``subgraphs=True``), as the thread's ``interrupts`` holds them."""
    from langgraph.types import StateSnapshot

    out: dict[str, list[Any]] = {}
    for task in snapshot.tasks:
        nested = pending_interrupts(task.state) if isinstance(task.state, StateSnapshot) else {}
        if nested:
            out.update(nested)
        elif task.interrupts:
            out[task.id] = encoding.jsonable([interrupt_of(i) for i in task.interrupts])
    return out
