"""Limits on what a client may send and how long a connection may idle.

One frozen :class:`Limits` record, read from ``langgraph.json``'s ``"triograph": {"limits":
{...}}`` (every key optional; an unknown key or a bad value stops the server at start-up),
and the checks of a decoded request body against it (:func:`check_body`), which the HTTP
layer runs before anything is stored:

- ``max_body_bytes``: a request body larger than this is refused with 413, as soon as the
  ``Content-Length`` header or the bytes received say so.
- ``max_json_depth``: a body nesting arrays/objects deeper than this is a 422. JSON that deep
  could be stored but not encoded again (orjson stops at 255 levels), so it would break
  every later read that returns it; the bound is kept well below that, at most 200.
- ``max_metadata_bytes``: the encoded size of any ``metadata`` object (threads, runs,
  assistants, crons): served by every search, so kept small. 422.
- ``max_value_bytes``: the encoded size of any one top-level field of a body (a run's
  ``input``, a store item's ``value``, a state update's ``values``...). 422.
- ``keep_alive_timeout``: seconds an idle HTTP/1.1 connection (before its first request,
  between requests, or with a half-sent request head) is kept open.
- ``body_timeout``: seconds a request body may take to arrive once its head has; then 408
  and the connection is closed.

Not a limit but checked with them: a NUL character in any string or key of a body is a 422
on every backend (PostgreSQL cannot store one; the others could, and would then disagree).
"""

from __future__ import annotations

from typing import Any

import attrs

from triograph.core.infra import encoding
from triograph.core.infra.errors import ConfigError, InvalidRequest

#: orjson encodes at most 254 nested levels; stored values are wrapped in a few more
#: (a search row, its ``values``...), so a request may nest at most this deep
DEPTH_CEILING = 200
MIB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Limits:
    """The limits in force; every field is a key of ``"triograph": {"limits": {...}}``."""

    max_body_bytes: int = 25 * MIB
    max_json_depth: int = 100
    max_metadata_bytes: int = 64 * 1024
    max_value_bytes: int = 10 * MIB
    keep_alive_timeout: float = 75.0
    body_timeout: float = 60.0


def load_limits(section: Any) -> Limits:
    """:class:`Limits` from the ``limits`` object of langgraph.json's ``triograph`` section;
    anything unknown or out of range is a :class:`ConfigError` naming the key."""
    if section is None:
        return Limits()
    if not isinstance(section, dict):
        raise ConfigError("'triograph.limits' must be an object")
    known = {f.name: f for f in attrs.fields(Limits)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(f"'triograph.limits': unknown keys {unknown}; allowed: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, value in section.items():
        where = f"'triograph.limits.{key}'"
        if known[key].type in (int, "int"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where} must be an integer, 1 or more; got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where} must be a number of seconds above 0; got {value!r}")
        values[key] = value
    if values.get("max_json_depth", 0) > DEPTH_CEILING:
        raise ConfigError(
            f"'triograph.limits.max_json_depth' must be at most {DEPTH_CEILING}; "
            f"got {values['max_json_depth']}"
        )
    return Limits(**values)


def check_body(data: Any, raw: bytes, limits: Limits) -> None:
    """Raise :class:`InvalidRequest` if the decoded body ``data`` (decoded from ``raw``)
    nests deeper than allowed, or one of its fields is too large.

    The common case costs next to nothing: a body with fewer brackets than the depth limit
    cannot be too deep, and a body smaller than a size limit cannot hold a field above it.
    """
    if raw.count(b"[") + raw.count(b"{") > limits.max_json_depth:
        _check_depth(data, limits.max_json_depth)
    if b"\\u0000" in raw:  # JSON can only carry a NUL escaped
        _check_nul(data)
    if len(raw) <= min(limits.max_metadata_bytes, limits.max_value_bytes):
        return
    bodies = enumerate(data) if isinstance(data, list) else [(None, data)]
    for index, body in bodies:
        if not isinstance(body, dict):
            continue
        prefix = "$" if index is None else f"$[{index}]"
        for key, value in body.items():
            if value is None or isinstance(value, bool | int | float):
                continue
            encoded = len(encoding.dumps(value))
            most, name = (
                (limits.max_metadata_bytes, "max_metadata_bytes")
                if key == "metadata"
                else (limits.max_value_bytes, "max_value_bytes")
            )
            if encoded > most:
                raise InvalidRequest(
                    f"{prefix}.{key}: {encoded} bytes of JSON, more than the {most} allowed "
                    f"(limits.{name})"
                )


def _check_depth(data: Any, most: int) -> None:
    """Walk the containers of ``data`` (iteratively: no recursion limit to hit)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if depth > most:
            where = path if len(path) <= 80 else f"{path[:60]}..."
            raise InvalidRequest(
                f"{where}: JSON nested more than {most} levels deep (limits.max_json_depth)"
            )
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{path}.{k}") for k, v in value.items() if _nests(v))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value) if _nests(v))


def _check_nul(data: Any) -> None:
    """A NUL character (``\\u0000``) in any string or key is a 422: PostgreSQL cannot store
    one in text or ``jsonb``, so it is refused on every backend alike rather than kept by
    some and failing on others."""
    stack: list[tuple[Any, str]] = [(data, "$")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequest(f"{path}: contains a NUL character (\\u0000), which is not stored")
        if isinstance(value, dict):
            for k, v in value.items():
                if "\x00" in k:
                    raise InvalidRequest(
                        f"{path}: a key contains a NUL character (\\u0000), which is not stored"
                    )
                stack.append((v, f"{path}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


def _nests(value: Any) -> bool:
    return isinstance(value, dict | list)
