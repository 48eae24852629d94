"""``http.configurable_headers``: which request headers a run sees in ``config.configurable``.

As on the official server: ``includes`` (or ``include``) and ``excludes`` (or ``exclude``)
are lists of header-name patterns, literal names with ``*`` wildcards, matched against the
lower-case name. A header is copied when an ``includes`` pattern matches it and no
``excludes`` pattern does; without ``includes`` none is (the default). ``authorization``,
``x-api-key``, ``x-service-key`` and ``x-tenant-id`` are never copied: credentials must not
end up in a run's stored config. (The official server also always copies LangSmith's
tracing headers; there is no LangSmith here.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from triograph.core.infra.errors import ConfigError

#: headers never copied, whatever the patterns say
NEVER = frozenset({"authorization", "x-api-key", "x-service-key", "x-tenant-id"})


def _pattern(text: str) -> re.Pattern[str]:
    """A name pattern: ``*`` matches anything, everything else literally (no regex DoS)."""
    return re.compile("".join(".*" if c == "*" else re.escape(c) for c in text.lower()) + r"\Z")


class ConfigurableHeaders:
    """The patterns of ``http.configurable_headers``; :meth:`select` applies them."""

    def __init__(self, includes: Iterable[str] = (), excludes: Iterable[str] = ()) -> None:
        self.includes = [_pattern(p) for p in includes]
        self.excludes = [_pattern(p) for p in excludes]
        self._decided: dict[str, bool] = {}

    @classmethod
    def from_settings(cls, http: dict[str, Any]) -> ConfigurableHeaders:
        """Read and check ``http.configurable_headers`` (a ``ConfigError`` names what is wrong)."""
        config = http.get("configurable_headers") or {}
        if not isinstance(config, dict):
            raise ConfigError("http.configurable_headers must be an object")
        allowed = ("includes", "include", "excludes", "exclude")
        for key, value in config.items():
            if key not in allowed:
                raise ConfigError(
                    f"http.configurable_headers.{key}: unknown key; allowed: {', '.join(allowed)}"
                )
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise ConfigError(
                    f"http.configurable_headers.{key}: expected a list of header-name patterns"
                )
        return cls(
            config.get("includes") or config.get("include") or (),
            config.get("excludes") or config.get("exclude") or (),
        )

    def wanted(self, name: str) -> bool:
        decided = self._decided.get(name)
        if decided is None:
            decided = (
                name not in NEVER
                and not any(p.match(name) for p in self.excludes)
                and any(p.match(name) for p in self.includes)
            )
            if len(self._decided) < 1024:  # header names are few; never grow without bound
                self._decided[name] = decided
        return decided

    def select(self, headers: Iterable[tuple[str, str]]) -> dict[str, str]:
        """The headers to copy, by lower-case name (the last one wins for a repeated name)."""
        if not self.includes:
            return {}
        return {k.lower(): v for k, v in headers if self.wanted(k.lower())}
