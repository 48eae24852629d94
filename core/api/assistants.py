"""Assistants routes needed to discover graphs: get and search.
(The full assistants API is another issue.)"""

from __future__ import annotations

from quart import Blueprint, Response

from triograph.core.api.http import body_as, core, json_response
from triograph.core.models import AssistantSearch, to_wire

bp = Blueprint("assistants", __name__)


@bp.get("/assistants/<assistant_id>")
async def get_assistant(assistant_id: str) -> Response:
    return json_response(to_wire(await core().assistants.get(assistant_id)))


@bp.post("/assistants/search")
async def search_assistants() -> Response:
    query = await body_as(AssistantSearch)
    rows, total = await core().assistants.search(query)
    headers = {"X-Pagination-Total": str(total)}
    if query.offset + len(rows) < total:
        headers["X-Pagination-Next"] = str(query.offset + query.limit)
    return json_response(rows, headers=headers)
