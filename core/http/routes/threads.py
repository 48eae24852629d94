"""Threads routes (contract §3, §4): create, search, count, prune, get, patch, delete, copy;
state, state updates and history. The request bodies beyond ``core.models`` are here, and
so is the shaping of search rows (``select``, ``extract``).

``PATCH /threads/{id}/state`` (the JS SDK's ``patchState``) is deliberately not a route: it
would edit the metadata of a stored checkpoint, which no checkpointer can do without
writing a new checkpoint, so it answers 405 as on the official server (§13.21).
"""

from __future__ import annotations

import re
from typing import Any, Literal

import attrs
from quart import Blueprint, Response, request

from triograph.core.http.json_schema import JSON_OBJECT
from triograph.core.http.openapi import OBJECT, responds
from triograph.core.http.wire import (
    body_as,
    body_json,
    core,
    empty,
    json_response,
    page_response,
    qbool,
    qint,
    qlist,
    qstr,
)
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.models import (
    JSON,
    MAX_OFFSET,
    NO_NUL,
    THREAD_TTL,
    CheckpointRef,
    Thread,
    ThreadCreate,
    ThreadStatus,
    bounded,
    check_select,
    selecting,
    structure,
    validate_uuid,
)
from triograph.core.resources.state import Superstep
from triograph.core.resources.threads import THREAD_FIELDS, thread_wire

bp = Blueprint("threads", __name__)

PRUNED = {"type": "object", "properties": {"pruned_count": {"type": "integer"}}}
#: ``extract`` paths: a Thread key, then ``.key`` and ``[index]`` steps
_EXTRACT_PATH = re.compile(r"([a-z_]+)((?:\.[^.\[\]]+|\[-?\d+\])*)")
_EXTRACT_STEP = re.compile(r"\.([^.\[\]]+)|\[(-?\d+)\]")
_EXTRACT_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "maxProperties": 10,
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {
                "type": "string",
                "pattern": f"^({'|'.join(THREAD_FIELDS)})(\\.[^.\\[\\]\\u0000]+|\\[-?[0-9]+\\])*$",
            },
        },
        {"type": "null"},
    ]
}
#: ``before`` of a history query (see :func:`_before`)
_BEFORE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "null"},
        {
            "type": "object",
            "required": ["checkpoint_id"],
            "not": {"required": ["configurable"]},
            "properties": {"checkpoint_id": {"type": "string", "pattern": NO_NUL}},
        },
        {
            "type": "object",
            "required": ["configurable"],
            "properties": {
                "configurable": {
                    "type": "object",
                    "required": ["checkpoint_id"],
                    "properties": {"checkpoint_id": {"type": "string", "pattern": NO_NUL}},
                }
            },
        },
    ]
}


@attrs.frozen(kw_only=True)
class ThreadSupersteps:
    """The ``supersteps`` of ``POST /threads``; the rest of that body is a ``ThreadCreate``."""

    supersteps: list[Superstep] | None = None


@attrs.frozen(kw_only=True)
class ThreadPatch:
    metadata: dict[str, JSON] | None = None
    ttl: dict[str, JSON] | None = attrs.field(default=None, metadata={"json_schema": THREAD_TTL})


@attrs.frozen(kw_only=True)
class ThreadFilters:
    """``POST /threads/count``."""

    ids: list[str] | None = None
    metadata: dict[str, JSON] | None = None
    values: dict[str, JSON] | None = None
    status: ThreadStatus | None = None

    def filters(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in attrs.fields(ThreadFilters)}


@attrs.frozen(kw_only=True)
class ThreadSearch(ThreadFilters):
    sort_by: (
        Literal["thread_id", "status", "created_at", "updated_at", "state_updated_at"] | None
    ) = None
    sort_order: Literal["asc", "desc"] | None = None
    limit: int = bounded(10, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)
    select: list[str] | None = selecting(THREAD_FIELDS)
    extract: dict[str, JSON] | None = attrs.field(
        default=None, metadata={"json_schema": _EXTRACT_SCHEMA}
    )


@attrs.frozen(kw_only=True)
class ThreadPrune:
    thread_ids: list[str]
    strategy: Literal["delete", "keep_latest"] = "delete"


@attrs.frozen(kw_only=True)
class StateUpdate:
    values: JSON = attrs.field(
        default=None,
        metadata={"json_schema": {"anyOf": [JSON_OBJECT, {"type": "array"}, {"type": "null"}]}},
    )
    as_node: str | None = None
    checkpoint_id: str | None = None
    checkpoint: CheckpointRef | None = None


@attrs.frozen(kw_only=True)
class StateAt:
    checkpoint: CheckpointRef
    subgraphs: bool = False


@attrs.frozen(kw_only=True)
class HistoryQuery:
    limit: int = bounded(1, 1, 1000)
    before: JSON = attrs.field(default=None, metadata={"json_schema": _BEFORE_SCHEMA})
    metadata: dict[str, JSON] | None = None
    checkpoint: CheckpointRef | None = None


def _include_ttl() -> bool:
    """Whether the query says ``include=ttl``; read before anything changes, as a bad
    ``include`` is a 422."""
    return "ttl" in (qlist("include", allowed=("ttl",)) or [])


def _check_shaping(query: ThreadSearch) -> None:
    check_select(query.select, THREAD_FIELDS)
    extract = query.extract or {}
    if len(extract) > 10:
        raise InvalidRequest(f"$.extract: at most 10 paths, got {len(extract)}")
    for alias, path in extract.items():
        match = _EXTRACT_PATH.fullmatch(path) if isinstance(path, str) else None
        if match is None or match[1] not in THREAD_FIELDS:
            raise InvalidRequest(
                f"$.extract.{alias}: {path!r} is not a path like 'values.key[0]' starting at "
                f"one of {list(THREAD_FIELDS)}"
            )


def _extract(row: dict[str, Any], path: str) -> Any:
    """The value at ``path`` (``values.messages[-1].content``) of a wire row, or None."""
    match = _EXTRACT_PATH.fullmatch(path)
    assert match is not None
    value: Any = row.get(match[1])
    for key, index in _EXTRACT_STEP.findall(match[2]):
        if key and isinstance(value, dict):
            value = value.get(key)
        elif not key and isinstance(value, list) and -len(value) <= int(index) < len(value):
            value = value[int(index)]
        else:
            return None
    return value


def _search_row(thread: Thread, query: ThreadSearch) -> dict[str, Any]:
    full = thread_wire(thread)
    row = {k: full[k] for k in query.select} if query.select else full
    if query.extract:
        row["extracted"] = {alias: _extract(full, p) for alias, p in query.extract.items()}
    return row


def _before(value: Any) -> str | None:
    """``before`` as a checkpoint id, ``{checkpoint_id}`` or ``{configurable: {...}}`` (§13.2)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("configurable", value)
        if isinstance(inner, dict) and isinstance(inner.get("checkpoint_id"), str):
            return inner["checkpoint_id"]  # type: ignore[no-any-return]
    raise InvalidRequest(
        "$.before: expected a checkpoint id, {checkpoint_id} or {configurable: {checkpoint_id}}"
    )


@bp.post("/threads")
@responds(Thread)
async def create_thread() -> Response:
    ttl = _include_ttl()
    data = await body_json(default={})
    body = structure(data, ThreadCreate)
    supersteps = structure(data, ThreadSupersteps).supersteps
    return json_response(thread_wire(await core().threads.create(body, supersteps), ttl=ttl))


@bp.post("/threads/search")
@responds(list[Thread])
async def search_threads() -> Response:
    query = await body_as(ThreadSearch)
    _check_shaping(query)
    threads, total = await core().threads.search(
        limit=query.limit,
        offset=query.offset,
        sort_by=query.sort_by or "updated_at",
        sort_order=query.sort_order or "desc",
        **query.filters(),
    )
    rows = [_search_row(t, query) for t in threads]
    return page_response(rows, offset=query.offset, limit=query.limit, total=total)


@bp.post("/threads/count")
@responds(int)
async def count_threads() -> Response:
    query = await body_as(ThreadFilters)
    return json_response(await core().threads.count(**query.filters()))


@bp.post("/threads/prune")
@responds(PRUNED)
async def prune_threads() -> Response:
    body = await body_as(ThreadPrune)
    pruned = await core().threads.prune(body.thread_ids, body.strategy)
    return json_response({"pruned_count": pruned})


@bp.get("/threads/<thread_id>")
@responds(Thread)
async def get_thread(thread_id: str) -> Response:
    ttl = _include_ttl()
    return json_response(thread_wire(await core().threads.get(thread_id), ttl=ttl))


@bp.patch("/threads/<thread_id>")
@responds(Thread, 204)
async def patch_thread(thread_id: str) -> Response:
    ttl = _include_ttl()
    body = await body_as(ThreadPatch)
    thread = await core().threads.update(thread_id, metadata=body.metadata, ttl=body.ttl)
    if request.headers.get("prefer", "").strip().lower() == "return=minimal":
        return empty(204)
    return json_response(thread_wire(thread, ttl=ttl))


@bp.delete("/threads/<thread_id>")
@responds(204)
async def delete_thread(thread_id: str) -> Response:
    await core().threads.delete(validate_uuid(thread_id, "thread"))
    return empty(204)


@bp.post("/threads/<thread_id>/copy")
@responds(Thread)
async def copy_thread(thread_id: str) -> Response:
    ttl = _include_ttl()
    return json_response(thread_wire(await core().threads.copy(thread_id), ttl=ttl))


@bp.get("/threads/<thread_id>/storage")
@responds(OBJECT)
async def thread_storage(thread_id: str) -> Response:
    """Bytes the thread's checkpoints, channel values and pending writes occupy."""
    return json_response(await core().threads.states.storage(thread_id))


@bp.get("/threads/<thread_id>/state")
@responds(OBJECT)
async def get_state(thread_id: str) -> Response:
    return json_response(await core().threads.states.get(thread_id, subgraphs=qbool("subgraphs")))


@bp.post("/threads/<thread_id>/state")
@responds(OBJECT)
async def update_state(thread_id: str) -> Response:
    body = await body_as(StateUpdate)
    checkpoint = body.checkpoint
    if body.checkpoint_id is not None:
        checkpoint = attrs.evolve(checkpoint or CheckpointRef(), checkpoint_id=body.checkpoint_id)
    response = await core().threads.states.update(
        thread_id, body.values, as_node=body.as_node, checkpoint=checkpoint
    )
    return json_response(response)


@bp.get("/threads/<thread_id>/state/<checkpoint_id>")
@responds(OBJECT)
async def get_state_at(thread_id: str, checkpoint_id: str) -> Response:
    checkpoint = CheckpointRef(checkpoint_id=checkpoint_id)
    state = await core().threads.states.get(
        thread_id, subgraphs=qbool("subgraphs"), checkpoint=checkpoint
    )
    return json_response(state)


@bp.post("/threads/<thread_id>/state/checkpoint")
@responds(OBJECT)
async def post_state_at(thread_id: str) -> Response:
    query = await body_as(StateAt)
    state = await core().threads.states.get(
        thread_id, subgraphs=query.subgraphs, checkpoint=query.checkpoint
    )
    return json_response(state)


@bp.get("/threads/<thread_id>/history")
@responds(list[dict[str, Any]])
async def get_history(thread_id: str) -> Response:
    rows = await core().threads.states.history(
        thread_id, limit=qint("limit", 1, least=1, most=1000), before=qstr("before")
    )
    return json_response(rows)


@bp.post("/threads/<thread_id>/history")
@responds(list[dict[str, Any]])
async def post_history(thread_id: str) -> Response:
    query = await body_as(HistoryQuery, default={})
    rows = await core().threads.states.history(
        thread_id,
        limit=query.limit,
        before=_before(query.before),
        metadata=query.metadata,
        checkpoint=query.checkpoint,
    )
    return json_response(rows)
