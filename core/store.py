"""The store API over the backend's LangGraph store, and the store's configuration.

The store is the one the graphs get as ``runtime.store``: an item a node writes is visible
here and the other way round. Every operation runs on the graph loop through the bridge
(``core.bridge.call``); what the store does (namespace label rules, filters, semantic
search, TTL defaults) is left to it. This module only checks request shapes, so a bad
request is a 4xx naming the field before anything reaches the store.

``store_index`` and ``store_ttl`` turn the ``store`` section of ``langgraph.json`` into
LangGraph's ``IndexConfig`` and ``TTLConfig``; every backend builds its store with them.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
from langgraph.store.base import NOT_PROVIDED, InvalidNamespaceError, ListNamespacesOp, SearchOp

from triograph.core.errors import BadRequest, ConfigError, InvalidRequest
from triograph.core.models import JSON, check_page
from triograph.core.settings import import_object, is_file_location

if TYPE_CHECKING:
    import pathlib

    from langgraph.store.base import BaseStore, IndexConfig, NotProvided, Op, TTLConfig

    from triograph.core.context import Core
    from triograph.core.settings import Settings

T = TypeVar("T")

#: comparison operators of a search ``filter`` (LangGraph stores implement them)
FILTER_OPERATORS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")


# -- request bodies ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StorePut:
    namespace: list[str]
    key: str
    value: dict[str, JSON]
    #: ``False`` (do not index), a list of field paths, or None (the index's ``fields``)
    index: JSON = None
    #: minutes; absent means the store's ``default_ttl``, null means no expiry
    ttl: float | None = None


@attrs.frozen(kw_only=True)
class StoreDelete:
    namespace: list[str]
    key: str


@attrs.frozen(kw_only=True)
class StoreSearch:
    namespace_prefix: list[str] | None = None
    filter: dict[str, JSON] | None = None
    limit: int = 10
    offset: int = 0
    query: str | None = None
    refresh_ttl: bool | None = None


@attrs.frozen(kw_only=True)
class StoreNamespaces:
    prefix: list[str] | None = None
    suffix: list[str] | None = None
    max_depth: int | None = None
    limit: int = 100
    offset: int = 0


# -- the service ------------------------------------------------------------------------------


def _check_namespace(namespace: list[str]) -> tuple[str, ...]:
    """The namespace of an item: at least one label (the labels themselves the store checks)."""
    if not namespace:
        raise BadRequest("Namespace cannot be empty.")
    return tuple(namespace)


def _check_filter(value: dict[str, Any], path: str = "$.filter") -> None:
    """Operators the stores do not know would fail deep inside the store: name them here."""
    for key, want in value.items():
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

    async def put(self, body: StorePut, *, ttl: float | NotProvided | None = NOT_PROVIDED) -> None:
        """Store an item; ``ttl`` is ``body.ttl`` when the request named it."""
        namespace = _check_namespace(body.namespace)
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
        item = await self._call(lambda s: s.aget(namespace, key, refresh_ttl=refresh_ttl))
        return None if item is None else item.dict()

    async def delete(self, body: StoreDelete) -> None:
        namespace = _check_namespace(body.namespace)
        await self._call(lambda s: s.adelete(namespace, body.key))

    async def search(self, body: StoreSearch) -> list[dict[str, Any]]:
        """Items under ``namespace_prefix`` (absent: everywhere), with ``score`` (null unless
        the store has an index and ``query`` is given)."""
        check_page(body.limit, body.offset)
        if body.filter:
            _check_filter(body.filter)
        prefix = tuple(body.namespace_prefix or ())
        items = await self._call(
            lambda s: s.asearch(
                prefix,
                query=body.query,
                filter=body.filter,
                limit=body.limit,
                offset=body.offset,
                refresh_ttl=body.refresh_ttl,
            )
        )
        return [item.dict() for item in items]

    async def list_namespaces(self, body: StoreNamespaces) -> list[list[str]]:
        check_page(body.limit, body.offset)
        if body.max_depth is not None and body.max_depth < 1:
            raise InvalidRequest(f"$.max_depth: {body.max_depth} is less than 1")
        namespaces = await self._call(
            lambda s: s.alist_namespaces(
                prefix=tuple(body.prefix) if body.prefix else None,
                suffix=tuple(body.suffix) if body.suffix else None,
                max_depth=body.max_depth,
                limit=body.limit,
                offset=body.offset,
            )
        )
        return [list(ns) for ns in namespaces]


# -- configuration ----------------------------------------------------------------------------


def store_index(settings: Settings) -> IndexConfig | None:
    """``store.index`` of langgraph.json as LangGraph's ``IndexConfig``, ``embed`` resolved.

    ``embed`` is ``"./path.py:function"`` (relative to the config file), ``"module:function"``
    (importable), or ``"provider:model"`` for ``langchain.embeddings.init_embeddings``.
    Raises ``ConfigError`` naming what is wrong; call it once, when the store is built.
    """
    raw = settings.store.get("index")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("store.index must be an object {dims, embed, fields?}")
    dims = raw.get("dims")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ConfigError(f"store.index.dims must be a positive integer, got {dims!r}")
    embed = raw.get("embed")
    if not isinstance(embed, str):
        raise ConfigError(
            "store.index.embed must be './file.py:function', 'module:function' or "
            f"'provider:model', got {embed!r}"
        )
    fields = raw.get("fields")
    if fields is not None and (
        not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)
    ):
        raise ConfigError(f"store.index.fields must be a list of field paths, got {fields!r}")
    config: IndexConfig = {"dims": dims, "embed": _embeddings(embed, settings.base_dir)}
    if fields is not None:
        config["fields"] = fields
    return config


def _embeddings(spec: str, base_dir: pathlib.Path) -> Any:
    """``./file.py:function`` or ``module:function`` (an embedding function), else a
    ``provider:model`` string for LangChain's ``init_embeddings``."""
    location, _, attr = spec.rpartition(":")
    if not location or not attr:
        raise ConfigError(
            f"store.index.embed {spec!r} is not './file.py:function', 'module:function' or "
            "'provider:model'"
        )
    what = f"store.index.embed {spec!r}"
    if is_file_location(location) or _module_has(location, attr):
        embed = import_object(spec, base_dir, what=what)
        if not callable(embed):
            raise ConfigError(f"{what}: {attr!r} is not a function")
        return embed
    try:
        init_embeddings = importlib.import_module("langchain.embeddings").init_embeddings
    except ImportError:
        raise ConfigError(
            f"{what}: {location!r} is not an importable module, and 'provider:model' "
            "embeddings need the 'langchain' package, which is not installed"
        ) from None
    try:
        return init_embeddings(spec)
    except Exception as exc:
        raise ConfigError(f"{what}: {exc}") from exc


def _module_has(name: str, attr: str) -> bool:
    """Whether ``name`` is an importable module with ``attr`` (``openai:text-embedding-3``
    names a model, not a function of the ``openai`` package)."""
    try:
        return importlib.util.find_spec(name) is not None and hasattr(
            importlib.import_module(name), attr
        )
    except (ImportError, ValueError):  # a parent package is missing, or a bad name
        return False


def store_ttl(settings: Settings) -> TTLConfig | None:
    """``store.ttl`` of langgraph.json (``refresh_on_read``, ``default_ttl`` minutes,
    ``sweep_interval_minutes``) as LangGraph's ``TTLConfig``."""
    raw = settings.store.get("ttl")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            "store.ttl must be an object {refresh_on_read?, default_ttl?, sweep_interval_minutes?}"
        )
    refresh = raw.get("refresh_on_read", True)
    if not isinstance(refresh, bool):
        raise ConfigError(f"store.ttl.refresh_on_read must be true or false, got {refresh!r}")
    config: TTLConfig = {
        "refresh_on_read": refresh,
        "default_ttl": None,
    }
    default = raw.get("default_ttl")
    if default is not None:
        if isinstance(default, bool) or not isinstance(default, int | float) or default <= 0:
            raise ConfigError(f"store.ttl.default_ttl must be minutes > 0, got {default!r}")
        config["default_ttl"] = float(default)
    sweep = raw.get("sweep_interval_minutes")
    if sweep is not None:
        if isinstance(sweep, bool) or not isinstance(sweep, int) or sweep < 1:
            raise ConfigError(
                f"store.ttl.sweep_interval_minutes must be a positive integer, got {sweep!r}"
            )
        config["sweep_interval_minutes"] = sweep
    return config


class SweepSchedule:
    """When a store that deletes expired items lazily (rather than from a sweeper task)
    deletes them all: before every search or namespace listing, so neither shows an expired
    item, and on any operation once every ``sweep_interval_minutes``. The memory and file
    backends share it."""

    def __init__(self, ttl: TTLConfig | None) -> None:
        self.interval = (ttl or {}).get("sweep_interval_minutes")
        self._next: dt.datetime | None = None

    def due(self, ops: Sequence[Op], at: dt.datetime) -> bool:
        """Whether to delete every expired item before ``ops`` run at ``at``."""
        timed = self.interval is not None and (self._next is None or at >= self._next)
        if not timed and not any(isinstance(op, SearchOp | ListNamespacesOp) for op in ops):
            return False
        if self.interval is not None:
            self._next = at + dt.timedelta(minutes=self.interval)
        return True
