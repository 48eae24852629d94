"""Crons routes (contract §9): create (thread-less or on a thread), search, count, get,
patch, delete."""

from __future__ import annotations

from quart import Blueprint, Response

from triograph.core.api.http import body_as, body_json, core, empty, json_response, page_response
from triograph.core.crons import CronCreate, CronPatch, CronSearch
from triograph.core.models import to_wire
from triograph.core.openapi import request_body

bp = Blueprint("crons", __name__)


@bp.post("/runs/crons")
@request_body(CronCreate)
async def create_cron() -> Response:
    """Create a cron whose every firing runs on a new thread."""
    return json_response(to_wire(await core().crons.create(None, await body_json())))


@bp.post("/threads/<thread_id>/runs/crons")
@request_body(CronCreate)
async def create_thread_cron(thread_id: str) -> Response:
    """Create a cron that runs on this thread."""
    return json_response(to_wire(await core().crons.create(thread_id, await body_json())))


@bp.post("/runs/crons/search")
async def search_crons() -> Response:
    """Search crons; pagination headers as for assistants and threads."""
    query = await body_as(CronSearch, default={})
    rows, total = await core().crons.search(query)
    return page_response(rows, offset=query.offset, limit=query.limit, total=total)


@bp.post("/runs/crons/count")
async def count_crons() -> Response:
    """Count the crons matching the filters."""
    return json_response(await core().crons.count(await body_as(CronSearch, default={})))


@bp.get("/runs/crons/<cron_id>")
async def get_cron(cron_id: str) -> Response:
    """Get a cron."""
    return json_response(to_wire(await core().crons.get(cron_id)))


@bp.patch("/runs/crons/<cron_id>")
@request_body(CronPatch)
async def patch_cron(cron_id: str) -> Response:
    """Change a cron's schedule or payload; its next run date is recomputed."""
    return json_response(to_wire(await core().crons.patch(cron_id, await body_json(default={}))))


@bp.delete("/runs/crons/<cron_id>")
async def delete_cron(cron_id: str) -> Response:
    """Delete a cron."""
    await core().crons.delete(cron_id)
    return empty(204)
