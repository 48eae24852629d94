"""Crons routes (contract §9): create (thread-less or on a thread), search, count, get,
patch, delete."""

from __future__ import annotations

from quart import Blueprint, Response

from triograph.core.api.http import body_as, body_json, core, empty, json_response, page_response
from triograph.core.crons import CronSearch
from triograph.core.models import to_wire

bp = Blueprint("crons", __name__)


@bp.post("/runs/crons")
async def create_cron() -> Response:
    return json_response(to_wire(await core().crons.create(None, await body_json())))


@bp.post("/threads/<thread_id>/runs/crons")
async def create_thread_cron(thread_id: str) -> Response:
    return json_response(to_wire(await core().crons.create(thread_id, await body_json())))


@bp.post("/runs/crons/search")
async def search_crons() -> Response:
    query = await body_as(CronSearch, default={})
    rows, total = await core().crons.search(query)
    return page_response(rows, offset=query.offset, limit=query.limit, total=total)


@bp.post("/runs/crons/count")
async def count_crons() -> Response:
    return json_response(await core().crons.count(await body_as(CronSearch, default={})))


@bp.get("/runs/crons/<cron_id>")
async def get_cron(cron_id: str) -> Response:
    return json_response(to_wire(await core().crons.get(cron_id)))


@bp.patch("/runs/crons/<cron_id>")
async def patch_cron(cron_id: str) -> Response:
    return json_response(to_wire(await core().crons.patch(cron_id, await body_json(default={}))))


@bp.delete("/runs/crons/<cron_id>")
async def delete_cron(cron_id: str) -> Response:
    await core().crons.delete(cron_id)
    return empty(204)
