"""Threads routes needed to read a run's result: create, get, delete, state, history.
(The rest of the threads API is another issue.)"""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, request

from triograph.core.api.http import body_as, body_json, core, empty, json_response, qbool, qint
from triograph.core.errors import InvalidRequest
from triograph.core.models import ThreadCreate, to_wire, validate_uuid

bp = Blueprint("threads", __name__)


@bp.post("/threads")
async def create_thread() -> Response:
    body = await body_as(ThreadCreate, default={})
    return json_response(to_wire(await core().threads.create(body)))


@bp.get("/threads/<thread_id>")
async def get_thread(thread_id: str) -> Response:
    return json_response(to_wire(await core().threads.get(thread_id)))


@bp.delete("/threads/<thread_id>")
async def delete_thread(thread_id: str) -> Response:
    await core().threads.delete(validate_uuid(thread_id, "thread"))
    return empty(204)


@bp.get("/threads/<thread_id>/state")
async def get_state(thread_id: str) -> Response:
    return json_response(await core().threads.state(thread_id, subgraphs=qbool("subgraphs")))


@bp.get("/threads/<thread_id>/state/<checkpoint_id>")
async def get_state_at(thread_id: str, checkpoint_id: str) -> Response:
    state = await core().threads.state(
        thread_id, subgraphs=qbool("subgraphs"), checkpoint={"checkpoint_id": checkpoint_id}
    )
    return json_response(state)


@bp.post("/threads/<thread_id>/state/checkpoint")
async def post_state_at(thread_id: str) -> Response:
    body = await body_json()
    checkpoint = body.get("checkpoint") if isinstance(body, dict) else None
    if not isinstance(checkpoint, dict):
        raise InvalidRequest("$.checkpoint: required object {checkpoint_id, checkpoint_ns?}")
    subgraphs = bool(body.get("subgraphs"))
    return json_response(
        await core().threads.state(thread_id, subgraphs=subgraphs, checkpoint=checkpoint)
    )


def _before(value: Any) -> str | None:
    """``before`` as a checkpoint id string, ``{checkpoint_id}`` or ``{configurable: {...}}``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("configurable", value)
        if isinstance(inner, dict) and isinstance(inner.get("checkpoint_id"), str):
            return inner["checkpoint_id"]  # type: ignore[no-any-return]
    raise InvalidRequest("$.before: expected a checkpoint id or {checkpoint_id: ...}")


@bp.get("/threads/<thread_id>/history")
async def get_history(thread_id: str) -> Response:
    rows = await core().threads.history(
        thread_id, limit=qint("limit", 1), before=request.args.get("before")
    )
    return json_response(rows)


@bp.post("/threads/<thread_id>/history")
async def post_history(thread_id: str) -> Response:
    body = await body_json(default={})
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    limit = body.get("limit", 1)
    if not isinstance(limit, int) or isinstance(limit, bool):
        raise InvalidRequest("$.limit: expected an integer")
    metadata = body.get("metadata")
    checkpoint = body.get("checkpoint")
    rows = await core().threads.history(
        thread_id,
        limit=limit,
        before=_before(body.get("before")),
        metadata=metadata if isinstance(metadata, dict) else None,
        checkpoint=checkpoint if isinstance(checkpoint, dict) else None,
    )
    return json_response(rows)
