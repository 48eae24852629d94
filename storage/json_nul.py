"""JSON as the SQL backends write and read it: NUL characters included.

Postgres's ``jsonb`` cannot hold a NUL character (``\\u0000``) in a string or a key, and
SQLite's JSON functions cut a string at one; graph output may well have them (the API
refuses one in requests, the graph's own state is another matter). Every JSON column the
SQL layer writes goes through :func:`dumps` and is read through :func:`loads` (on Postgres,
LangGraph's checkpoints and store items too, through psycopg's JSON adapters): a string
holding a NUL (or one that happens to start with :data:`MARK`) is stored as :data:`MARK`
followed by its JSON spelling, in which the NUL is the six characters ``\\u0000``, and read
back as it was. Anything else is stored as it is; the check costs one substring search of
the encoded text each way.

A search needle is escaped the same way (:func:`escaped`), so searches and filters match
such strings too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from triograph.core.infra import encoding

#: how an escaped string starts (ESC, then "nul:"), and its spelling in JSON text
MARK = "\x1bnul:"
_MARK_JSON = b"\\u001bnul:"
_NUL_JSON = b"\\u0000"


def escaped(text: str) -> str:
    """``text`` as stored: marked and spelled in JSON if it holds a NUL or starts with
    :data:`MARK`, else itself."""
    if "\x00" in text or text.startswith(MARK):
        return MARK + json.dumps(text)
    return text


def _unescaped(text: str) -> str:
    if text.startswith(MARK):
        loaded: str = json.loads(text[len(MARK) :])
        return loaded
    return text


def _walk(value: Any, fn: Callable[[str], str]) -> Any:
    """``value`` with ``fn`` applied to every string and key in it."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {fn(k) if isinstance(k, str) else k: _walk(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, fn) for v in value]
    return value


def _needs(text: bytes | str) -> bool:
    """The JSON ``text`` may hold a NUL or a marked string (a false alarm costs a walk)."""
    if isinstance(text, str):
        return "\\u0000" in text or "\\u001bnul:" in text
    return _NUL_JSON in text or _MARK_JSON in text


def dumps(value: Any) -> str:
    """The text of a ``jsonb`` parameter of the backend's own records (as
    ``encoding.dumps`` encodes them)."""
    text = encoding.dumps(value)
    if _needs(text):
        text = encoding.dumps(_walk(value, escaped))
    return text.decode()


def dumps_std(value: Any) -> str:
    """The same for LangGraph's ``jsonb`` (``json.dumps``, psycopg's default)."""
    text = json.dumps(value)
    return json.dumps(_walk(value, escaped)) if _needs(text) else text


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """A ``jsonb`` value of the backend's own records read back (by orjson), unescaped."""
    raw = bytes(data) if isinstance(data, memoryview | bytearray) else data
    value = orjson.loads(raw)
    return _walk(value, _unescaped) if _needs(raw) else value


def loads_std(data: bytes | bytearray | memoryview | str) -> Any:
    """The same for LangGraph's (``json.loads``, psycopg's default)."""
    raw = bytes(data) if isinstance(data, memoryview | bytearray) else data
    value = json.loads(raw)
    return _walk(value, _unescaped) if _needs(raw) else value
