"""The store API over the backend's LangGraph store, and the store's configuration.

The store is the one the graphs get as ``runtime.store``: an item a node writes is visible
here and the other way round. Every operation runs on the graph loop through the bridge
(``core.bridge.call``); what the store does (namespace label rules, filters, semantic
search, TTL defaults) is left to it. This module only checks request shapes, so a bad
request is a 4xx naming the field before anything reaches the store.

The ``store`` section of ``langgraph.json`` (index, TTL) is read by
:mod:`triograph.core.infra.store_config`, which the backends build their stores with.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from langgraph.store.base import NOT_PROVIDED, InvalidNamespaceError, NotProvided

from triograph.core.infra.auth import Filters
from triograph.core.infra.errors import BadRequest, InvalidRequest
from triograph.core.infra.models import (
    JSON,
    MAX_OFFSET,
    MAX_TTL_MINUTES,
    NO_NUL,
    bounded,
    check_page,
)

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore

    from triograph.core.infra.context import Core

T = TypeVar("T")

#: comparison operators of a search ``filter`` (LangGraph stores implement them)
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


# -- request bodies ---------------------------------------------------------------------------


#: a namespace: one label or more, none empty or holding a "." (LangGraph's store rules)
#: a namespace label: not empty, no period (the separator), no NUL
LABEL = {"type": "string", "pattern": "^[^.\\u0000]+$"}
NAMESPACE_SCHEMA = {"type": "array", "minItems": 1, "items": LABEL}
#: a namespace prefix or suffix (absent or null: any)
LABELS_SCHEMA = {"anyOf": [{"type": "array", "items": LABEL}, {"type": "null"}]}
#: ``index`` of an item: false (not indexed), null (the store's fields) or field paths
INDEX_SCHEMA = {
    "anyOf": [
        {"type": "boolean", "enum": [False]},
        {"type": "null"},
        {"type": "array", "items": {"type": "string", "pattern": NO_NUL}},
    ]
}


@attrs.frozen(kw_only=True)
class StorePut:
    namespace: list[str] = attrs.field(metadata={"json_schema": NAMESPACE_SCHEMA})
    key: str
    value: dict[str, JSON]
    #: ``False`` (do not index), a list of field paths, or None (the index's ``fields``)
    index: JSON = attrs.field(default=None, metadata={"json_schema": INDEX_SCHEMA})
    #: minutes; absent means the store's ``default_ttl``, null means no expiry
    ttl: float | None = bounded(None, 0, MAX_TTL_MINUTES, exclusive_minimum=True)


@attrs.frozen(kw_only=True)
class StoreDelete:
    namespace: list[str] = attrs.field(metadata={"json_schema": NAMESPACE_SCHEMA})
    key: str


#: what a key of a search ``filter`` may be (LangGraph's SQLite store allows no more)
FILTER_KEY = re.compile(r"[a-zA-Z0-9_.-]+")
_FILTER_SCHEMA = {
    "anyOf": [
        {"type": "object", "propertyNames": {"pattern": f"^{FILTER_KEY.pattern}$"}},
        {"type": "null"},
    ]
}


@attrs.frozen(kw_only=True)
class StoreSearch:
    namespace_prefix: list[str] | None = attrs.field(
        default=None, metadata={"json_schema": LABELS_SCHEMA}
    )
    filter: dict[str, JSON] | None = attrs.field(
        default=None, metadata={"json_schema": _FILTER_SCHEMA}
    )
    limit: int = bounded(10, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)
    query: str | None = None
    refresh_ttl: bool | None = None


@attrs.frozen(kw_only=True)
class StoreNamespaces:
    prefix: list[str] | None = attrs.field(default=None, metadata={"json_schema": LABELS_SCHEMA})
    suffix: list[str] | None = attrs.field(default=None, metadata={"json_schema": LABELS_SCHEMA})
    max_depth: int | None = bounded(None, 1, 1000)
    limit: int = bounded(100, 1, 1000)
    offset: int = bounded(0, 0, MAX_OFFSET)


# -- the service ------------------------------------------------------------------------------


def _check_namespace(namespace: list[str]) -> tuple[str, ...]:
    """The namespace of an item: at least one label (the labels themselves the store checks)."""
    if not namespace:
        raise BadRequest("Namespace cannot be empty.")
    return tuple(namespace)


def _check_filter(value: dict[str, Any], path: str = "$.filter") -> None:
    """Operators the stores do not know, and keys the SQLite store refuses (a guard against
    SQL injection there), would fail deep inside the store: name them here, on every backend."""
    for key, want in value.items():
        if not FILTER_KEY.fullmatch(key):
            raise InvalidRequest(
                f"{path}: filter key {key!r} may hold only letters, digits, '_', '.' and '-'"
            )
        if not isinstance(want, dict):
            continue
        if any(k.startswith("$") for k in want):
            bad = [k for k in want if k not in FILTER_OPERATORS]
            if bad:
                raise InvalidRequest(
                    f"{path}.{key}: unsupported operator {bad[0]!r}; "
                    f"allowed: {', '.join(FILTER_OPERATORS)}"
                )
        else:
            _check_filter(want, f"{path}.{key}")


def _both(request: dict[str, Any] | None, allowed: Filters | None) -> dict[str, Any] | None:
    """One store filter holding when both ``request`` and the handlers' ``allowed`` hold
    (LangGraph's stores take a dict of field conditions, no ``$and``); None if that cannot
    be written, two different conditions of one kind on a field: nothing can match both."""
    out: dict[str, Any] = dict(request or {})
    for key, want in (allowed or {}).items():
        if key not in out or out[key] == want:
            out[key] = want
            continue
        mine, theirs = (c if _is_operators(c) else {"$eq": c} for c in (out[key], want))
        for op, operand in theirs.items():
            if op in mine and mine[op] != operand:
                return None
            mine[op] = operand
        out[key] = mine
    return out


def _is_operators(condition: Any) -> bool:
    return isinstance(condition, dict) and any(k.startswith("$") for k in condition)


class StoreService:
    """The store API (contract §8) over ``core.storage.store``."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def _call(self, make: Callable[[BaseStore], Awaitable[T]]) -> T:
        """Run ``make(store)`` on the graph loop; a namespace the store refuses is a 422."""
        store = self.core.storage.store
        try:
            return await self.core.bridge.call(lambda: make(store))
        except InvalidNamespaceError as exc:
            raise InvalidRequest(str(exc)) from None

    async def _authorize(self, action: str, value: dict[str, Any]) -> Filters | None:
        """``store.<action>``: handlers may rewrite ``value`` (a namespace under the user's
        own, say); a namespace they leave must still be one (422 naming it)."""
        allowed = await self.core.access.authorize("store", action, value)
        for key in ("namespace", "suffix"):
            ns = value.get(key)
            if ns is not None and (
                not isinstance(ns, list | tuple) or not all(isinstance(p, str) for p in ns)
            ):
                raise InvalidRequest(f"store.{action}: {key} must be a list of strings: {ns!r}")
        return allowed

    async def put(self, body: StorePut, *, ttl: float | NotProvided | None = NOT_PROVIDED) -> None:
        """Store an item; ``ttl`` is ``body.ttl`` when the request named it."""
        value: dict[str, Any] = {
            "namespace": _check_namespace(body.namespace),
            "key": body.key,
            "value": body.value,
            "index": body.index,
            "ttl": None if isinstance(ttl, NotProvided) else ttl,
        }
        await self._authorize("put", value)
        namespace = _check_namespace(list(value["namespace"]))
        body = attrs.evolve(body, key=value["key"], value=value["value"], index=value["index"])
        index = body.index
        if not (
            index is None
            or index is False
            or (isinstance(index, list) and all(isinstance(p, str) for p in index))
        ):
            raise InvalidRequest("$.index: expected false, null or a list of field paths")
        if isinstance(ttl, int | float):
            if ttl <= 0:
                raise InvalidRequest(f"$.ttl: {ttl} is not more than 0 minutes")
            if not self.core.storage.store.supports_ttl:
                raise InvalidRequest("$.ttl: the store of this server does not support TTL")
        await self._call(lambda s: s.aput(namespace, body.key, body.value, index=index, ttl=ttl))

    async def get(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None
    ) -> dict[str, Any] | None:
        value: dict[str, Any] = {"namespace": namespace, "key": key, "refresh_ttl": refresh_ttl}
        await self._authorize("get", value)
        where, name = _check_namespace(list(value["namespace"])), str(value["key"])
        refresh = value["refresh_ttl"]
        item = await self._call(lambda s: s.aget(where, name, refresh_ttl=refresh))
        return None if item is None else item.dict()

    async def delete(self, body: StoreDelete) -> None:
        value: dict[str, Any] = {"namespace": _check_namespace(body.namespace), "key": body.key}
        await self._authorize("delete", value)
        where, name = _check_namespace(list(value["namespace"])), str(value["key"])
        await self._call(lambda s: s.adelete(where, name))

    async def search(self, body: StoreSearch) -> list[dict[str, Any]]:
        """Items under ``namespace_prefix`` (absent: everywhere), with ``score`` (null unless
        the store has an index and ``query`` is given)."""
        check_page(body.limit, body.offset)
        if body.filter:
            _check_filter(body.filter)
        value: dict[str, Any] = {
            "namespace": tuple(body.namespace_prefix or ()),
            "filter": body.filter,
            "limit": body.limit,
            "offset": body.offset,
            "query": body.query,
            "refresh_ttl": body.refresh_ttl,
        }
        allowed = await self._authorize("search", value)
        prefix = tuple(value["namespace"] or ())
        wanted = _both(value["filter"], allowed)
        if wanted is None:  # the request's filter and the handler's contradict each other
            return []
        items = await self._call(
            lambda s: s.asearch(
                prefix,
                query=value["query"],
                filter=wanted or None,
                limit=value["limit"],
                offset=value["offset"],
                refresh_ttl=value["refresh_ttl"],
            )
        )
        return [item.dict() for item in items]

    async def list_namespaces(self, body: StoreNamespaces) -> list[list[str]]:
        check_page(body.limit, body.offset)
        if body.max_depth is not None and body.max_depth < 1:
            raise InvalidRequest(f"$.max_depth: {body.max_depth} is less than 1")
        value: dict[str, Any] = {
            "namespace": tuple(body.prefix) if body.prefix else None,
            "suffix": tuple(body.suffix) if body.suffix else None,
            "max_depth": body.max_depth,
            "limit": body.limit,
            "offset": body.offset,
        }
        await self._authorize("list_namespaces", value)
        namespaces = await self._call(
            lambda s: s.alist_namespaces(
                prefix=tuple(value["namespace"]) if value["namespace"] else None,
                suffix=tuple(value["suffix"]) if value["suffix"] else None,
                max_depth=value["max_depth"],
                limit=value["limit"],
                offset=value["offset"],
            )
        )
        return [list(ns) for ns in namespaces]
