"""The OpenAPI 3.1 document of the routes this server actually has (``GET /openapi.json``).

It is generated from the app's ``url_map``, so a route is in the document exactly when the
server has it (``http.disable_*`` and routes added later included): its path (``<param>``
becomes ``{param}``, typed by its converter), its methods (HEAD and OPTIONS, which every
route answers, are left out), a summary from the view's docstring, and for a route whose
body is structured with cattrs, the JSON schema of that body derived from the attrs class
(:class:`_Schemas`), so the schema cannot drift from what the server accepts.

The body class of a route is read where the code names it, so no table repeats it: the
first ``body_as(Cls)`` or ``structure(data, Cls)`` call in the view, or in a function of the
same module that the view calls. When the body is not one such class (a list of them, say),
the view says so with :func:`request_body`.
"""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import attrs

if typing.TYPE_CHECKING:
    from werkzeug.routing import Map, Rule

F = TypeVar("F", bound=Callable[..., Any])

_BODY_ATTR = "__triograph_body__"
_PARAM = re.compile(r"<(?:(\w+)(?:\(.*?\))?:)?(\w+)>")
_CONVERTERS = {
    "uuid": {"type": "string", "format": "uuid"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
}
_PRIMITIVES: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    type(None): {"type": "null"},
    dt.datetime: {"type": "string", "format": "date-time"},
}
_AUTOMATIC = frozenset({"HEAD", "OPTIONS"})


def request_body(tp: Any) -> Callable[[F], F]:
    """Name the body type of a view whose body cannot be read from its code (see above)."""

    def mark(view: F) -> F:
        setattr(view, _BODY_ATTR, tp)
        return view

    return mark


def document(
    url_map: Map, views: dict[str, Callable[..., Any]], *, version: str, graph_ids: list[str]
) -> dict[str, Any]:
    """The OpenAPI document of ``url_map`` (whose endpoints ``views`` maps to functions).

    Args:
        url_map: the app's routes.
        views: the app's ``view_functions``.
        version: the server's version, for ``info.version``.
        graph_ids: registered graphs, the ``enum`` of ``graph_id`` in assistant bodies.
    """
    schemas = _Schemas(graph_ids)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for rule in sorted(url_map.iter_rules(), key=lambda r: r.rule):
        path, parameters = _path(rule)
        view = views[rule.endpoint]
        body = _body_type(view)
        for method in sorted((rule.methods or set()) - _AUTOMATIC):
            operation = _operation(rule, view, parameters, operation_ids)
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schemas.of(body)}},
                }
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "triograph",
            "version": version,
            "description": "A self-hosted LangGraph Agent Server on Trio.",
        },
        "paths": paths,
        "components": {"schemas": schemas.components},
    }


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _CONVERTERS.get(converter or "", {"type": "string"}),
        }
        for converter, name in _PARAM.findall(rule.rule)
    ]
    return _PARAM.sub(r"{\2}", rule.rule), parameters


def _operation(
    rule: Rule, view: Callable[..., Any], parameters: list[dict[str, Any]], taken: set[str]
) -> dict[str, Any]:
    blueprint, _, name = rule.endpoint.rpartition(".")
    summary, _, description = (inspect.getdoc(view) or "").partition("\n")
    operation_id = name
    n = 1
    while operation_id in taken:
        n += 1
        operation_id = f"{name}_{n}"
    taken.add(operation_id)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary.strip() or name.replace("_", " ").capitalize(),
        "tags": [blueprint or "app"],
        "responses": {"default": {"description": "See the LangGraph Agent Server API"}},
    }
    if description.strip():
        operation["description"] = description.strip()
    if parameters:
        operation["parameters"] = parameters
    return operation


# -- finding a view's body class ----------------------------------------------------------------


def _body_type(view: Callable[..., Any]) -> Any:
    if hasattr(view, _BODY_ATTR):
        return getattr(view, _BODY_ATTR)
    fn = inspect.unwrap(view)
    module = sys.modules.get(fn.__module__)
    tree = _tree(fn)
    if module is None or tree is None:
        return None
    found = _named_body(tree, module)
    if found is not None:
        return found
    for helper in _module_functions_called(tree, module, fn):
        helper_tree = _tree(helper)
        found = None if helper_tree is None else _named_body(helper_tree, module)
        if found is not None:
            return found
    return None


def _tree(fn: Callable[..., Any]) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):  # no source (a frozen build): no body schema
        return None


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    """Every call in ``tree``, in source order."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    yield from sorted(calls, key=lambda c: (c.lineno, c.col_offset))


def _named_body(tree: ast.AST, module: types.ModuleType) -> Any:
    """The class of the first ``body_as(Cls)`` / ``structure(data, Cls)`` call."""
    for call in _calls(tree):
        if not isinstance(call.func, ast.Name):
            continue
        position = {"body_as": 0, "structure": 1}.get(call.func.id)
        if position is None or len(call.args) <= position:
            continue
        arg = call.args[position]
        cls = getattr(module, arg.id, None) if isinstance(arg, ast.Name) else None
        if isinstance(cls, type) and attrs.has(cls):
            return cls
    return None


def _module_functions_called(
    tree: ast.AST, module: types.ModuleType, view: Callable[..., Any]
) -> Iterator[Callable[..., Any]]:
    for call in _calls(tree):
        if isinstance(call.func, ast.Name):
            fn = getattr(module, call.func.id, None)
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and fn is not view:
                yield fn


# -- JSON schemas from types ----------------------------------------------------------------------


class _Schemas:
    """JSON schemas of types; attrs classes become ``components/schemas`` entries."""

    def __init__(self, graph_ids: list[str]) -> None:
        self.graph_ids = graph_ids
        self.components: dict[str, Any] = {}

    def of(self, tp: Any) -> dict[str, Any]:
        if tp in _PRIMITIVES:
            return dict(_PRIMITIVES[tp])
        if attrs.has(tp):
            return self._record(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Literal:
            kinds = {type(v) for v in args}
            typed = _PRIMITIVES.get(kinds.pop(), {}) if len(kinds) == 1 else {}
            return {**typed, "enum": list(args)}
        if origin in (typing.Union, types.UnionType):
            options = [self.of(a) for a in args]
            return options[0] if len(options) == 1 else {"anyOf": options}
        if tp is list or origin is list:
            return {"type": "array", "items": self.of(args[0])} if args else {"type": "array"}
        if tp is dict or origin is dict:
            values = self.of(args[1]) if len(args) == 2 else {}
            if values:
                return {"type": "object", "additionalProperties": values}
            return {"type": "object"}
        return {}  # Any, JSON: no constraint

    def _record(self, cls: type) -> dict[str, Any]:
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
                schema = self.of(hints[field.name]) if field.name in hints else {}
                if field.name == "graph_id" and name.startswith("Assistant") and self.graph_ids:
                    schema = _with_enum(schema, self.graph_ids)
                if field.default is attrs.NOTHING:
                    required.append(field.name)
                else:
                    default = _json_default(field.default)
                    if default is not attrs.NOTHING:
                        schema = {**schema, "default": default}
                properties[field.name] = schema
            record: dict[str, Any] = {"type": "object", "title": name, "properties": properties}
            if required:
                record["required"] = required
            self.components[name] = record
        return {"$ref": f"#/components/schemas/{name}"}


def _with_enum(schema: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """``schema`` with its string branch limited to ``values`` (official: graph ids)."""
    if schema.get("type") == "string":
        return {**schema, "enum": values}
    if "anyOf" in schema:
        return {**schema, "anyOf": [_with_enum(s, values) for s in schema["anyOf"]]}
    return schema


def _json_default(default: Any) -> Any:
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        if default.takes_self:
            return attrs.NOTHING
        default = default.factory()
    if default is None or isinstance(default, str | int | float | bool | list | dict):
        return default
    return attrs.NOTHING
