"""Assistants routes (contract §2): create, get, patch, delete, search and count, versions,
and the graph behind an assistant (drawing, schemas, subgraphs)."""

from __future__ import annotations

from quart import Blueprint, Response

from triograph.core.http.openapi import OBJECT, responds
from triograph.core.http.wire import body_as, core, empty, json_response, page_response, qbool, qstr
from triograph.core.infra.errors import InvalidRequest
from triograph.core.infra.models import Assistant, AssistantSearch, AssistantVersion, to_wire
from triograph.core.resources.assistants import (
    AssistantCount,
    AssistantCreate,
    AssistantPatch,
    VersionChoice,
    VersionSearch,
)

bp = Blueprint("assistants", __name__)


#: what ``xray`` may be, as the OpenAPI document declares it
XRAY = {"anyOf": [{"type": "boolean"}, {"type": "integer", "minimum": 1}]}


def _xray() -> bool | int:
    """``xray``: a boolean (``1`` means one level, as any positive integer), or the number
    of subgraph levels to expand; ``0`` and anything else is a 422."""
    value = (qstr("xray", schema=XRAY) or "false").strip().lower()
    if value in ("true", "yes"):
        return True
    if value in ("false", "no"):
        return False
    try:
        levels = int(value)
    except ValueError:
        raise InvalidRequest("Invalid xray value") from None
    if levels <= 0:
        raise InvalidRequest("Invalid xray value")
    return levels


@bp.post("/assistants")
@responds(Assistant)
async def create_assistant() -> Response:
    body = await body_as(AssistantCreate)
    return json_response(to_wire(await core().assistants.create(body)))


@bp.post("/assistants/search")
@responds(list[Assistant])
async def search_assistants() -> Response:
    query = await body_as(AssistantSearch)
    rows, total = await core().assistants.search(query)
    return page_response(rows, offset=query.offset, limit=query.limit, total=total)


@bp.post("/assistants/count")
@responds(int)
async def count_assistants() -> Response:
    return json_response(await core().assistants.count(await body_as(AssistantCount)))


@bp.get("/assistants/<assistant_id>")
@responds(Assistant)
async def get_assistant(assistant_id: str) -> Response:
    return json_response(to_wire(await core().assistants.get(assistant_id)))


@bp.patch("/assistants/<assistant_id>")
@responds(Assistant)
async def patch_assistant(assistant_id: str) -> Response:
    body = await body_as(AssistantPatch)
    return json_response(to_wire(await core().assistants.update(assistant_id, body)))


@bp.delete("/assistants/<assistant_id>")
@responds(204)
async def delete_assistant(assistant_id: str) -> Response:
    await core().assistants.delete(assistant_id, delete_threads=qbool("delete_threads"))
    return empty(204)


@bp.get("/assistants/<assistant_id>/graph")
@responds(OBJECT)
async def get_graph(assistant_id: str) -> Response:
    return json_response(await core().assistants.drawing(assistant_id, xray=_xray()))


@bp.get("/assistants/<assistant_id>/schemas")
@responds(OBJECT)
async def get_schemas(assistant_id: str) -> Response:
    return json_response(await core().assistants.schemas(assistant_id))


@bp.get("/assistants/<assistant_id>/subgraphs")
@bp.get("/assistants/<assistant_id>/subgraphs/<namespace>")
@responds(OBJECT)
async def get_subgraphs(assistant_id: str, namespace: str | None = None) -> Response:
    subgraphs = await core().assistants.subgraphs(
        assistant_id, namespace=namespace, recurse=qbool("recurse")
    )
    return json_response(subgraphs)


@bp.post("/assistants/<assistant_id>/versions")
@responds(list[AssistantVersion])
async def list_versions(assistant_id: str) -> Response:
    versions = await core().assistants.versions(assistant_id, await body_as(VersionSearch))
    return json_response([to_wire(v) for v in versions])


@bp.post("/assistants/<assistant_id>/latest")
@responds(Assistant)
async def set_latest_version(assistant_id: str) -> Response:
    choice = await body_as(VersionChoice)
    return json_response(to_wire(await core().assistants.set_latest(assistant_id, choice.version)))
