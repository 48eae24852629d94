"""Crons routes (contract §9): create (thread-less or on a thread), search, count, get,
patch, delete."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from triograph.core.http.openapi import request_body, responds
from triograph.core.http.wire import (
    absolute_webhook,
    body_as,
    body_json,
    core,
    empty,
    json_response,
    page_response,
)
from triograph.core.infra.models import Cron, to_wire
from triograph.core.resources.crons import CronCreate, CronPatch, CronSearch

bp = Blueprint("crons", __name__)


def _with_absolute_webhook(raw: Any) -> Any:
    """The body with a relative ``webhook`` (``/path``: this server) made absolute, as a
    run body's is (``http.with_absolute_webhook``), so each firing calls this server. A
    body that is not an object is left for the cron service to reject."""
    if isinstance(raw, dict) and "webhook" in raw:
        return {**raw, "webhook": absolute_webhook(raw["webhook"])}
    return raw


@bp.post("/runs/crons")
@request_body(CronCreate)
@responds(Cron)
async def create_cron() -> Response:
    """Create a cron whose every firing runs on a new thread."""
    body = _with_absolute_webhook(await body_json())
    return json_response(to_wire(await core().crons.create(None, body)))


@bp.post("/threads/<thread_id>/runs/crons")
@request_body(CronCreate)
@responds(Cron)
async def create_thread_cron(thread_id: str) -> Response:
    """Create a cron that runs on this thread."""
    body = _with_absolute_webhook(await body_json())
    return json_response(to_wire(await core().crons.create(thread_id, body)))


@bp.post("/runs/crons/search")
@responds(list[Cron])
async def search_crons() -> Response:
    """Search crons; pagination headers as for assistants and threads."""
    query = await body_as(CronSearch, default={})
    rows, total = await core().crons.search(query)
    return page_response(rows, offset=query.offset, limit=query.limit, total=total)


@bp.post("/runs/crons/count")
@responds(int)
async def count_crons() -> Response:
    """Count the crons matching the filters."""
    return json_response(await core().crons.count(await body_as(CronSearch, default={})))


@bp.get("/runs/crons/<cron_id>")
@responds(Cron)
async def get_cron(cron_id: str) -> Response:
    """Get a cron."""
    return json_response(to_wire(await core().crons.get(cron_id)))


@bp.patch("/runs/crons/<cron_id>")
@request_body(CronPatch, required=True)  # no body, or {}, is a 400 (the official message)
@responds(Cron)
async def patch_cron(cron_id: str) -> Response:
    """Change a cron's schedule or payload; its next run date is recomputed."""
    body = _with_absolute_webhook(await body_json(default={}))
    return json_response(to_wire(await core().crons.patch(cron_id, body)))


@bp.delete("/runs/crons/<cron_id>")
@responds(204)
async def delete_cron(cron_id: str) -> Response:
    """Delete a cron."""
    await core().crons.delete(cron_id)
    return empty(204)
