"""JSON schemas of the types the API reads and writes, for the OpenAPI document.

:class:`Schemas` turns a type (attrs records, ``Literal``, unions, lists, dicts, primitives)
into a JSON schema, records becoming ``components/schemas`` entries. What a type alone
cannot say comes from the server's own facts, so the schema cannot drift from what is
checked:

- a field made with :func:`triograph.core.infra.models.bounded` carries its range;
- fields named for an id (``thread_id``, ``run_ids``...) are UUIDs, ``assistant_id`` is a
  UUID or a registered graph id, ``graph_id`` one of the graphs, ``stream_mode`` and
  ``multitask_strategy`` the registered names, ``config`` the typed keys a run config has;
- a field declared ``metadata={"wire": False}`` is never sent, so it is not documented;
- a field declared ``metadata={"json_schema": {...}}`` is documented so, and a request
  record's class attribute ``__json_schema__`` adds keywords to its schema (``oneOf``,
  ``minProperties``: rules across fields).

Response records are documented without ``required`` (a ``select`` may leave any field out).
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from typing import Any, Literal

import attrs

from triograph.core.infra.models import NO_NUL

UUID = {"type": "string", "format": "uuid"}
_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string", "pattern": NO_NUL},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    dt.datetime: {"type": "string", "format": "date-time"},
}
#: string fields, and list-of-string fields, that hold UUIDs wherever they appear
_UUID_FIELDS = frozenset({"thread_id", "run_id", "cron_id", "checkpoint_id"})
_UUID_LISTS = frozenset({"ids", "thread_ids", "run_ids"})
#: any JSON value a request may carry (an input, metadata, a store value): no NUL in a string
#: or a key (nesting is limited too, by ``limits.max_json_depth``, which a schema cannot say)
JSON_VALUE_NAME = "JSONValue"
JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE_NAME}"}
JSON_OBJECT = {
    "type": "object",
    "propertyNames": {"pattern": NO_NUL},
    "additionalProperties": JSON_VALUE_REF,
}
JSON_VALUE = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": JSON_VALUE_REF},
        JSON_OBJECT,
    ]
}
#: the bounds of the fields the range attrs metadata carries
_BOUNDS = ("minimum", "exclusiveMinimum", "maximum")


@attrs.frozen(kw_only=True)
class Registered:
    """The names this server has registered, which some fields are limited to."""

    graph_ids: list[str] = attrs.Factory(list)
    stream_modes: list[str] = attrs.Factory(list)
    strategies: list[str] = attrs.Factory(list)
    #: the largest ``config.recursion_limit``
    recursion_limit: int = 2**31 - 1


class Schemas:
    """JSON schemas of types; attrs classes become ``components/schemas`` entries."""

    def __init__(self, registered: Registered | None = None) -> None:
        self.registered = registered or Registered()
        self.components: dict[str, Any] = {}

    def of(self, tp: Any, *, response: bool = False) -> dict[str, Any]:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:  # Annotated[T, {keywords}]: T's schema with them
            schema = self.of(args[0], response=response)
            for extra in args[1:]:
                schema.update(extra if isinstance(extra, dict) else {})
            return schema
        if tp in _PRIMITIVES:
            return dict(_PRIMITIVES[tp])
        if attrs.has(tp):
            return self._record(tp, response=response)
        if origin is Literal:
            kinds = {type(v) for v in args}
            typed = _PRIMITIVES.get(kinds.pop(), {}) if len(kinds) == 1 else {}
            return {"type": typed["type"], "enum": list(args)} if typed else {"enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            options = [self.of(a, response=response) for a in args]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if tp is list or origin is list:
            if not args:
                return {"type": "array"}
            return {"type": "array", "items": self.of(args[0], response=response)}
        if tp is dict or origin is dict:
            values = self.of(args[1], response=response) if len(args) == 2 else {}
            if values and values != JSON_VALUE_REF:
                return {"type": "object", "additionalProperties": values}
            return {"type": "object"} if response else self._json_object()
        return {} if response else self._json_value()  # Any, JSON

    def _json_value(self) -> dict[str, Any]:
        self.components.setdefault(JSON_VALUE_NAME, JSON_VALUE)
        return dict(JSON_VALUE_REF)

    def _json_object(self) -> dict[str, Any]:
        self._json_value()
        return dict(JSON_OBJECT)

    def _record(self, cls: type, *, response: bool) -> dict[str, Any]:
        name = cls.__name__
        if name not in self.components:
            self.components[name] = {}  # placeholder: a record may refer to itself
            try:
                hints = typing.get_type_hints(cls)
            except Exception:  # a name only imported for type checking: leave fields open
                hints = {}
            properties: dict[str, Any] = {}
            required: list[str] = []
            for field in attrs.fields(cls):
                if field.metadata.get("wire") is False:
                    continue
                schema = (
                    self.of(hints[field.name], response=response) if field.name in hints else {}
                )
                schema = self._field(name, field, schema)
                if field.default is attrs.NOTHING:
                    required.append(field.name)
                else:
                    default = _json_default(field.default)
                    if default is not attrs.NOTHING:
                        schema = {**schema, "default": default}
                properties[field.name] = schema
            record: dict[str, Any] = {"type": "object", "title": name, "properties": properties}
            if required and not response:
                record["required"] = required
            if not response:  # keys a record does not read are accepted (and ignored) ...
                self._json_value()  # ... if they could be stored: no NUL in them
                record["propertyNames"] = {"pattern": NO_NUL}
                record["additionalProperties"] = JSON_VALUE_REF
                record.update(getattr(cls, "__json_schema__", {}))
            self.components[name] = record
        return {"$ref": f"#/components/schemas/{name}"}

    def _field(self, record: str, field: attrs.Attribute[Any], schema: dict[str, Any]) -> Any:
        """``schema`` with what the server knows about this field beyond its type."""
        reg, name = self.registered, field.name
        if "json_schema" in field.metadata:  # the field says it better than its type
            return field.metadata["json_schema"]
        bounds = {k: field.metadata[k] for k in _BOUNDS if k in field.metadata}
        if bounds:
            schema = _narrow(_narrow(schema, "number", bounds), "integer", bounds)
        if name in _UUID_FIELDS:
            return _narrow(schema, "string", {"format": "uuid"})
        if name in _UUID_LISTS:
            return _narrow(schema, "array", {"items": UUID})
        if name == "assistant_id" and (record.startswith("Assistant") or not reg.graph_ids):
            return _narrow(schema, "string", {"format": "uuid"})
        if name == "assistant_id":  # runs and crons take a graph id for its assistant
            return _narrow(schema, "string", {}, replace={"anyOf": [UUID, {"enum": reg.graph_ids}]})
        if name == "graph_id" and record.startswith("Assistant") and reg.graph_ids:
            return _narrow(schema, "string", {"enum": reg.graph_ids})
        if name == "stream_mode" and reg.stream_modes:
            modes = {"type": "string", "enum": reg.stream_modes}
            return {"anyOf": [modes, {"type": "array", "items": modes}]}
        if name == "multitask_strategy" and reg.strategies:
            return _narrow(schema, "string", {"enum": reg.strategies})
        if name == "config":
            return _narrow(schema, "object", {"properties": self._config_keys()})
        return schema

    def _config_keys(self) -> dict[str, Any]:
        """The typed keys of a ``config`` (``triograph.core.resources.run_records.CONFIG_KEYS``)."""
        return {
            "tags": {"type": "array", "items": {"type": "string"}},
            "recursion_limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": self.registered.recursion_limit,
            },
            "configurable": {"type": "object"},
            "metadata": {"type": "object"},
        }


def _narrow(
    schema: dict[str, Any],
    kind: str,
    extra: dict[str, Any],
    *,
    replace: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``schema`` with its ``kind`` branch (the whole schema, or one ``anyOf`` option) given
    the ``extra`` keywords, or replaced by ``replace``."""
    if schema.get("type") == kind:
        return replace if replace is not None else {**schema, **extra}
    if "anyOf" in schema:
        return {
            **schema,
            "anyOf": [_narrow(s, kind, extra, replace=replace) for s in schema["anyOf"]],
        }
    return schema


def _json_default(default: Any) -> Any:
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return attrs.NOTHING
        default = default.factory()
    if default is None or isinstance(default, str | int | float | bool | list | dict):
        return default
    return attrs.NOTHING
