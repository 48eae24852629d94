"""Store routes (contract §8): put, get, delete, search items; list namespaces.

Errors are the usual ``{"detail": ...}`` bodies, also where the official server answers a
plain-text 422 or ``{"error": ...}`` (contract §13.14): the SDKs read ``detail``.
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from triograph.core.http.openapi import responds
from triograph.core.http.wire import body_json, core, empty, json_response, qbool, qstr
from triograph.core.infra.errors import BadRequest, InvalidRequest
from triograph.core.infra.models import structure
from triograph.core.resources.store import StoreDelete, StoreNamespaces, StorePut, StoreSearch

bp = Blueprint("store", __name__)


@bp.put("/store/items")
@responds(204)
async def put_item() -> Response:
    raw = await body_json()
    body = structure(raw, StorePut)
    if "ttl" in raw:  # absent: the store's default TTL; null: no expiry
        await core().store.put(body, ttl=body.ttl)
    else:
        await core().store.put(body)
    return empty(204)


_LABELS = {"type": "array", "items": {"type": "string"}}
#: an item as the store returns it (``score`` in search results)
ITEM = {
    "type": "object",
    "properties": {
        "namespace": _LABELS,
        "key": {"type": "string"},
        "value": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "score": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
}
ITEMS = {"type": "object", "properties": {"items": {"type": "array", "items": ITEM}}}
NAMESPACES = {"type": "object", "properties": {"namespaces": {"type": "array", "items": _LABELS}}}
#: ``namespace`` of ``GET /store/items``: the labels joined by ``.``
NAMESPACE = {"type": "string", "pattern": "^[^.\\u0000]+(\\.[^.\\u0000]+)*$"}


@bp.get("/store/items")
@responds({"anyOf": [ITEM, {"type": "null"}]})  # null: no such item
async def get_item() -> Response:
    namespace = qstr("namespace", required=True, schema=NAMESPACE)
    if not namespace:
        raise InvalidRequest("query parameter 'namespace' is required: the labels joined by '.'")
    key = qstr("key", required=BadRequest("Key is required"))
    assert key is not None
    refresh = qbool("refresh_ttl") if "refresh_ttl" in request.args else None
    item = await core().store.get(tuple(namespace.split(".")), key, refresh_ttl=refresh)
    return json_response(item)


@bp.delete("/store/items")
@responds(204)
async def delete_item() -> Response:
    body = structure(await body_json(), StoreDelete)
    await core().store.delete(body)
    return empty(204)


@bp.post("/store/items/search")
@responds(ITEMS)
async def search_items() -> Response:
    body = structure(await body_json(default={}), StoreSearch)
    return json_response({"items": await core().store.search(body)})


@bp.post("/store/namespaces")
@responds(NAMESPACES)
async def list_namespaces() -> Response:
    body = structure(await body_json(default={}), StoreNamespaces)
    return json_response({"namespaces": await core().store.list_namespaces(body)})
