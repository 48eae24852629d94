"""The ``store`` section of ``langgraph.json``, read for the storage backends.

``store_index`` and ``store_ttl`` turn it into LangGraph's ``IndexConfig`` and
``TTLConfig``; every backend builds its store with them. :class:`SweepSchedule` is when a
store that deletes expired items lazily deletes them (memory and file).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langgraph.store.base import ListNamespacesOp, SearchOp

from triograph.core.infra.errors import ConfigError
from triograph.core.infra.settings import import_object, is_file_location

if TYPE_CHECKING:
    import pathlib

    from langgraph.store.base import IndexConfig, Op, TTLConfig

    from triograph.core.infra.settings import Settings


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
