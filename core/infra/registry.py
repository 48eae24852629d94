"""The typed registry that registration hooks fill at start-up.

A registration hook receives a registry and calls :meth:`Registry.add` with a wire name
(``"messages-tuple"``, ``"rollback"``, ``"memory"``) and what serves it. A name can be
taken once; a later plugin replaces it only by saying ``replace=True``, and otherwise gets
an error naming both plugins (tox's ``ToxEnvRegister`` is the model).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from triograph.core.infra.errors import InvalidRequest, PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Wire name -> implementation, remembering which plugin registered each name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._owners: dict[str, str] = {}
        #: set by the plugin manager while it calls one plugin's registration hook
        self.current_plugin = "<direct>"

    def add(self, name: str, item: T, *, replace: bool = False) -> None:
        """Register ``item`` under the wire name ``name``.

        Raises:
            PluginError: ``name`` is taken and ``replace`` is false; names both plugins.
        """
        if name in self._items and not replace:
            raise PluginError(
                self.current_plugin,
                f"{self.kind} {name!r} is already registered by {self._owners[name]!r}; "
                "pass replace=True to override it",
            )
        self._items[name] = item
        self._owners[name] = self.current_plugin

    def get(self, name: str) -> T:
        """The implementation for ``name``, or a 422 listing the registered names."""
        try:
            return self._items[name]
        except KeyError:
            raise InvalidRequest(
                f"unknown {self.kind} {name!r}; allowed: {', '.join(sorted(self._items))}"
            ) from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
