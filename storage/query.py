"""What a search and an authorization filter mean, once for every backend.

Two halves with one meaning:

* in Python, :func:`contains`, :func:`allows` and :func:`page`, which the memory backend
  applies to its records;
* in SQL, the same semantics compiled to a ``WHERE`` clause (:class:`Where`) over the JSON
  columns of the SQL backends, in one of two JSON dialects (:data:`SQLITE_JSON`: SQLite's
  JSON1 functions; :data:`POSTGRES_JSON`: ``jsonb``), so filters run inside the queries:
  a page and its total are counted by the database, and nothing is fetched to be dropped.

The semantics, as the memory backend's records and the official server's filters have them:

* **containment** (``metadata`` and ``values`` of a search): every key of the needle is in
  the document; a needle value that is an object is contained likewise, any other value is
  equal to the document's (lists are equal item by item, not contained);
* **equality** is Python's on the decoded JSON: objects regardless of key order, ``1 ==
  1.0 == True``, ``"1" != 1``;
* **authorization filters** (the shape :func:`triograph.core.infra.auth.check_filters`
  accepts) are matched against ``metadata``: ``{key: value}`` and ``{key: {"$eq": value}}``
  mean the key is there and equal; ``{key: {"$contains": x}}`` that it holds a list with
  ``x`` in it (every item of ``x``, if ``x`` is a list); ``$and`` / ``$or`` take a list of
  filters. A resource a filter leaves out is absent: a get finds nothing, an update or
  delete changes nothing, a search and its total leave it out;
* **pages** sort on one field, NULLs first ascending (last descending), ties in insertion
  order; ``limit=0`` only counts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson

from triograph.storage import json_nul

#: an authorization filter, already checked (``core.infra.auth.check_filters``)
Filters = dict[str, Any]
#: SQL and its parameters, in order
Sql = tuple[str, list[Any]]
R = TypeVar("R")

# -- in Python --------------------------------------------------------------------------------


def contains(haystack: Any, needle: dict[str, Any] | None) -> bool:
    """``haystack`` contains ``needle`` (see the module docstring); an empty needle matches
    anything."""
    if not needle:
        return True
    if not isinstance(haystack, dict):
        return False
    for key, want in needle.items():
        if key not in haystack:
            return False
        have = haystack[key]
        if isinstance(want, dict):
            if not contains(have, want):
                return False
        elif have != want:
            return False
    return True


def allows(metadata: dict[str, Any] | None, filters: Filters | None) -> bool:
    """``filters`` lets a resource with ``metadata`` through (no filter: everything)."""
    if not filters:
        return True
    metadata = metadata or {}
    for key, want in filters.items():
        if key == "$and":
            if not all(allows(metadata, part) for part in want):
                return False
        elif key == "$or":
            if not any(allows(metadata, part) for part in want):
                return False
        elif key not in metadata:
            return False
        elif isinstance(want, dict) and "$contains" in want:
            have, items = metadata[key], want["$contains"]
            if not isinstance(have, list):
                return False
            if not all(item in have for item in (items if isinstance(items, list) else [items])):
                return False
        elif metadata[key] != (want["$eq"] if isinstance(want, dict) else want):
            return False
    return True


def _sort_key(sort_by: str) -> Callable[[Any], tuple[bool, Any]]:
    # None sorts first ascending (as NULLS FIRST), ties broken by insertion order
    def key(row: Any) -> tuple[bool, Any]:
        value = getattr(row, sort_by)
        return (value is not None, value if value is not None else 0)

    return key


def page(
    rows: Iterable[R], sort_by: str, sort_order: str, limit: int, offset: int
) -> tuple[list[R], int]:
    """One sorted page of ``rows`` (in insertion order), and the number of rows."""
    ordered = sorted(rows, key=_sort_key(sort_by), reverse=sort_order == "desc")
    return ordered[offset : offset + limit], len(ordered)


# -- in SQL -----------------------------------------------------------------------------------
#
# A JSON dialect addresses a value inside a JSON column as a *node* and knows a few
# primitives on it: its type, its size, a scalar's equality, its array elements. The
# semantics above are compiled from those once (``_equal``, ``_contained``, ``_allowed``).
# Types are named as JSON names them: object, array, string, number, boolean, null; an
# absent value has none. Type checks guard what would fail on another type (CASE: SQL does
# not promise to evaluate AND in order).


def all_of(parts: Iterable[Sql]) -> Sql:
    listed = list(parts)
    if not listed:
        return "TRUE", []
    if len(listed) == 1:
        return listed[0]
    return "(" + " AND ".join(s for s, _ in listed) + ")", [p for _, ps in listed for p in ps]


def _any(parts: Iterable[Sql]) -> Sql:
    listed = list(parts)
    return "(" + " OR ".join(s for s, _ in listed) + ")", [p for _, ps in listed for p in ps]


def _when(condition: Sql, then: Sql) -> Sql:
    return f"CASE WHEN {condition[0]} THEN {then[0]} ELSE FALSE END", [*condition[1], *then[1]]


class JsonDialect:
    """How one database addresses JSON; a node is whatever the dialect makes of it."""

    #: a parameter's placeholder
    mark = "?"

    def root(self, column: str) -> Any:
        """The node of a whole JSON column (``column`` is SQL: quoted, maybe qualified)."""
        raise NotImplementedError

    def child(self, node: Any, key: str) -> Any:
        raise NotImplementedError

    def item(self, node: Any, index: int) -> Any:
        raise NotImplementedError

    def kind(self, node: Any, *kinds: str) -> Sql:
        """The value is there and of one of ``kinds``."""
        raise NotImplementedError

    def size(self, node: Any, kind: str) -> Sql:
        """The number of keys (``object``) or items (``array``): only under :meth:`kind`."""
        raise NotImplementedError

    def scalar(self, node: Any, value: str | int | float) -> Sql:
        """The value is a string, number or boolean ``== value`` as Python compares."""
        raise NotImplementedError

    def elements(self, node: Any) -> tuple[Sql, Any]:
        """A ``FROM`` item over an array's elements (only under :meth:`kind`), and the node
        of the element."""
        raise NotImplementedError

    def within(self, column: str, values: Sequence[Any]) -> Sql:
        """``column`` is one of ``values``."""
        raise NotImplementedError

    def value(self, value: Any) -> Any:
        """A Python value as a parameter compared with a column."""
        return value


def sized(d: JsonDialect, node: Any, kind: str, n: int) -> Sql:
    size, params = d.size(node, kind)
    return _when(d.kind(node, kind), (f"{size} = {d.mark}", [*params, n]))


def equal(d: JsonDialect, node: Any, want: Any) -> Sql:
    """The value at ``node`` is there and ``== want`` as Python compares."""
    if isinstance(want, dict):
        parts = [equal(d, d.child(node, k), v) for k, v in want.items()]
        return all_of([sized(d, node, "object", len(want)), *parts])
    if isinstance(want, list | tuple):
        parts = [equal(d, d.item(node, i), v) for i, v in enumerate(want)]
        return all_of([sized(d, node, "array", len(want)), *parts])
    if want is None:
        return d.kind(node, "null")
    if isinstance(want, str | int | float):
        return d.scalar(node, want)
    raise ValueError(f"not a JSON value: {want!r}")


def _contained(d: JsonDialect, node: Any, needle: dict[str, Any]) -> Sql:
    """:func:`contains` of the value at ``node``."""
    if not needle:
        return "TRUE", []
    parts = [d.kind(node, "object")]
    for key, want in needle.items():
        child = d.child(node, key)
        if isinstance(want, dict):
            parts += [d.kind(child, "object", "array", "string", "number", "boolean", "null")]
            parts.append(_contained(d, child, want))
        else:
            parts.append(equal(d, child, want))
    return all_of(parts)


def _holds(d: JsonDialect, node: Any, items: Any) -> Sql:
    """The value at ``node`` is a list with each of ``items`` in it."""
    found = []
    for item in items if isinstance(items, list) else [items]:
        (source, params), element = d.elements(node)
        condition, more = equal(d, element, item)
        found.append((f"EXISTS (SELECT 1 FROM {source} WHERE {condition})", [*params, *more]))
    return _when(d.kind(node, "array"), all_of(found))


def _allowed(d: JsonDialect, node: Any, filters: Filters) -> Sql:
    """:func:`allows` of the value at ``node``."""
    parts: list[Sql] = []
    for key, want in filters.items():
        if key == "$and":
            parts.append(all_of(_allowed(d, node, part) for part in want))
        elif key == "$or":
            parts.append(_any(_allowed(d, node, part) for part in want))
        elif isinstance(want, dict) and "$contains" in want:
            parts.append(_holds(d, d.child(node, key), want["$contains"]))
        else:
            parts.append(
                equal(d, d.child(node, key), want["$eq"] if isinstance(want, dict) else want)
            )
    return all_of(parts)


class SqliteJson(JsonDialect):
    """SQLite's JSON1: a node is a document (SQL) and a path into it (SQL: a parameter, or
    an expression for array elements). A key holding ``"``, which SQLite's paths cannot
    spell, is looked up with ``json_each`` instead."""

    _KINDS = {
        "object": ("object",),
        "array": ("array",),
        "string": ("text",),
        "number": ("integer", "real"),
        "boolean": ("true", "false"),
        "null": ("null",),
    }

    def root(self, column: str) -> Any:
        return (column, []), ("?", ["$"])

    def _extend(self, node: Any, step: str) -> Any:
        doc, (path, params) = node
        if path == "?" and len(params) == 1:  # a literal path: stays one parameter
            return doc, ("?", [params[0] + step])
        return doc, (f"({path} || ?)", [*params, step])

    def _at(self, fn: str, node: Any) -> Sql:
        (doc, doc_params), (path, path_params) = node
        return f"{fn}({doc}, {path})", [*doc_params, *path_params]

    def child(self, node: Any, key: str) -> Any:
        key = json_nul.escaped(key)
        if '"' not in key:
            return self._extend(node, f'."{key}"')
        each, params = self._at("json_each", node)
        found = f"(SELECT json_quote(value) FROM {each} WHERE key = ?)"
        return (found, [*params, key]), ("?", ["$"])

    def item(self, node: Any, index: int) -> Any:
        return self._extend(node, f"[{index}]")

    def kind(self, node: Any, *kinds: str) -> Sql:
        names = [name for kind in kinds for name in self._KINDS[kind]]
        sql, params = self._at("json_type", node)
        return f"{sql} IN ({', '.join(repr(n) for n in names)})", params

    def size(self, node: Any, kind: str) -> Sql:
        if kind == "array":
            return self._at("json_array_length", node)
        each, params = self._at("json_each", node)
        return f"(SELECT count(*) FROM {each})", params

    def scalar(self, node: Any, value: str | int | float) -> Sql:
        kinds = ("string",) if isinstance(value, str) else ("number", "boolean")
        if isinstance(value, str):
            value = json_nul.escaped(value)
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            value = float(value)  # SQLite's integers are 64-bit; JSON1 reads bigger as REAL
        typed, params = self.kind(node, *kinds)
        extracted, more = self._at("json_extract", node)
        return f"({typed} AND {extracted} = ?)", [*params, *more, value]

    def elements(self, node: Any) -> tuple[Sql, Any]:
        each, params = self._at("json_each", node)
        doc, (path, path_params) = node
        element = doc, (f"({path} || '[' || e.key || ']')", path_params)
        return (f"{each} AS e", params), element

    def within(self, column: str, values: Sequence[Any]) -> Sql:
        return f"{column} IN (SELECT value FROM json_each(?))", [
            orjson.dumps(list(values)).decode()
        ]

    def value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):  # UTC epoch microseconds, naive ones taken as UTC
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return (aware - _EPOCH) // _MICROSECOND
        return value


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def _spellings(want: str | int | float) -> list[str]:
    """The JSON of the values Python finds equal to the scalar ``want``: ``True == 1``."""
    text = orjson.dumps(want).decode()
    if isinstance(want, bool | int | float) and want in (0, 1):
        return [text, "true" if want else "false", "1" if want else "0"]
    return [text]


class PostgresJson(JsonDialect):
    """``jsonb``: a node is an expression (SQL) and a path below it (``#>``)."""

    mark = "%s"

    def root(self, column: str) -> Any:
        return column, ()

    def child(self, node: Any, key: str) -> Any:
        return node[0], (*node[1], json_nul.escaped(key))

    def item(self, node: Any, index: int) -> Any:
        return node[0], (*node[1], str(index))

    def at(self, node: Any) -> Sql:
        """The ``jsonb`` at ``node``."""
        expr, path = node
        return (f"({expr} #> %s::text[])", [list(path)]) if path else (expr, [])

    def kind(self, node: Any, *kinds: str) -> Sql:
        at, params = self.at(node)
        return f"jsonb_typeof({at}) IN ({', '.join(repr(k) for k in kinds)})", params

    def size(self, node: Any, kind: str) -> Sql:
        at, params = self.at(node)
        if kind == "array":
            return f"jsonb_array_length({at})", params
        return f"(SELECT count(*) FROM jsonb_object_keys({at}))", params

    def scalar(self, node: Any, value: str | int | float) -> Sql:
        at, params = self.at(node)
        if isinstance(value, str):
            value = json_nul.escaped(value)
        return f"{at} = ANY(%s::jsonb[])", [*params, _spellings(value)]

    def elements(self, node: Any) -> tuple[Sql, Any]:
        at, params = self.at(node)
        return (f"jsonb_array_elements({at}) AS e(v)", params), ("e.v", ())

    def within(self, column: str, values: Sequence[Any]) -> Sql:
        return f"{column} = ANY(%s::text[])", [list(values)]


SQLITE_JSON = SqliteJson()
POSTGRES_JSON = PostgresJson()


class Where:
    """The conditions of a search, ANDed, with their parameters, in ``dialect``."""

    def __init__(self, dialect: JsonDialect) -> None:
        self.dialect = dialect
        self.terms: list[str] = []
        self.params: list[Any] = []

    def __str__(self) -> str:
        return " AND ".join(self.terms) or "TRUE"

    def add(self, term: str, *params: Any) -> Where:
        self.terms.append(term)
        self.params.extend(params)
        return self

    def sql(self, term: Sql) -> Where:
        return self.add(term[0], *term[1])

    def eq(self, column: str, value: Any) -> Where:
        """``column`` equals ``value``; no condition for None."""
        if value is None:
            return self
        return self.add(f'"{column}" = {self.dialect.mark}', self.dialect.value(value))

    def within(self, column: str, values: Sequence[Any] | None) -> Where:
        """``column`` is one of ``values``; no condition for None."""
        return self if values is None else self.sql(self.dialect.within(f'"{column}"', values))

    def contains(self, column: str, needle: dict[str, Any] | None) -> Where:
        """The JSON ``column`` :func:`contains` ``needle``."""
        if not needle:
            return self
        return self.sql(_contained(self.dialect, self.dialect.root(f'"{column}"'), needle))

    def allowed(self, column: str, filters: Filters | None) -> Where:
        """The JSON ``column`` (a resource's metadata) :func:`allows` ``filters``."""
        if not filters:
            return self
        return self.sql(_allowed(self.dialect, self.dialect.root(column), filters))
