"""The OpenAPI 3.1 document of the routes this server actually has (``GET /openapi.json``).

It is generated from the app's ``url_map``, so a route is in the document exactly when the
server has it (``http.disable_*`` and routes added later included), and each part of an
operation is read where the code states it, so no table repeats it:

- its path (``<param>`` becomes ``{param}``): ids are UUIDs (``assistant_id`` may also be a
  graph id on the one route that accepts one), typed by their converter otherwise;
- its methods (HEAD and OPTIONS, which every route answers, are left out);
- a summary and description from the view's docstring;
- its query parameters, from the ``qbool``/``qint``/``qstr``/``qlist`` calls of the view (and
  of the functions of its module it calls), with their bounds and allowed values;
- its body: the class of the first ``body_as(Cls)`` or ``structure(data, Cls)`` call (or
  what :func:`request_body` names), required unless the call gives a ``default``; its JSON
  schema comes from the attrs class (:mod:`triograph.core.http.json_schema`);
- its responses, declared next to the view with :func:`responds`; every operation may also
  answer 4xx with ``{"detail": message}``.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import attrs

from triograph.core.http.json_schema import UUID, Registered, Schemas
from triograph.core.infra.models import NO_NUL

if typing.TYPE_CHECKING:
    from werkzeug.routing import Map, Rule

F = TypeVar("F", bound=Callable[..., Any])

_BODY_ATTR = "__triograph_body__"
_BODY_REQUIRED_ATTR = "__triograph_body_required__"
_RESPONSES_ATTR = "__triograph_responses__"
_PARAM = re.compile(r"<(?:(\w+)(?:\(.*?\))?:)?(\w+)>")
_CONVERTERS: dict[str, dict[str, Any]] = {
    "uuid": UUID,
    "int": {"type": "integer"},
    "float": {"type": "number"},
}
#: path parameters that are ids: UUIDs (contract §11: anything else is a 422)
_PATH_IDS = frozenset({"thread_id", "run_id", "cron_id", "assistant_id", "checkpoint_id"})
#: the routes whose ``assistant_id`` may be a graph id too (contract §2.1)
_GRAPH_ID_ROUTES = frozenset({"/assistants/<assistant_id>/graph"})
_AUTOMATIC = frozenset({"HEAD", "OPTIONS"})
#: what every operation may answer besides its own responses
ERROR = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
#: response bodies that are not JSON: a stream of server-sent events, a page
SSE = "text/event-stream"
HTML = "text/html"
#: a JSON response whose shape is the graph's (its output, its state...)
ANY_JSON: dict[str, Any] = {}
OBJECT = {"type": "object"}
_QUERY_CALLS = {"qbool", "qint", "qstr", "qlist"}
#: a free query string (``qstr``/``qlist`` refuse a NUL character, as bodies do)
_STRING = {"type": "string", "pattern": NO_NUL}


def request_body(tp: Any, *, required: bool | None = None) -> Callable[[F], F]:
    """Name the body type of a view whose body cannot be read from its code (see above);
    ``required`` says what the code cannot (a body read with a default, refused if empty)."""

    def mark(view: F) -> F:
        setattr(view, _BODY_ATTR, tp)
        if required is not None:
            setattr(view, _BODY_REQUIRED_ATTR, required)
        return view

    return mark


def responds(
    *answers: Any, status: int = 200, errors: dict[str, Any] | None = None
) -> Callable[[F], F]:
    """Declare what a view answers: a type (a record, ``list[Record]``, ``int``...) or a JSON
    schema (a dict) is a ``status`` JSON response; :data:`SSE` an event stream, :data:`HTML`
    a page (any other media type string: a body of that type); an int alone
    a status without a body (``responds(204)``). Several are alternatives (``cancel`` answers
    202, or 200 with the run's output when asked to wait). ``errors``: the ``content`` of
    its 4XX answers when they are not the usual ``{"detail": ...}`` (a protocol's own error
    bodies, as MCP's JSON-RPC errors)."""

    def mark(view: F) -> F:
        setattr(view, _RESPONSES_ATTR, (answers, status, errors))
        return view

    return mark


def document(
    url_map: Map,
    views: dict[str, Callable[..., Any]],
    *,
    version: str,
    registered: Registered,
) -> dict[str, Any]:
    """The OpenAPI document of ``url_map`` (whose endpoints ``views`` maps to functions).

    Args:
        url_map: the app's routes.
        views: the app's ``view_functions``.
        version: the server's version, for ``info.version``.
        registered: the graphs, stream modes and strategies some fields are limited to.
    """
    schemas = Schemas(registered)
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    for rule in sorted(url_map.iter_rules(), key=lambda r: r.rule):
        if getattr(rule, "websocket", False):
            continue  # OpenAPI describes HTTP operations; a WebSocket's GET is an upgrade
        path, parameters = _path(rule, registered)
        view = views[rule.endpoint]
        body, required = _body_type(view)
        query = _query_parameters(view)
        for method in sorted((rule.methods or set()) - _AUTOMATIC):
            operation = _operation(rule, view, [*parameters, *query], operation_ids)
            if body is not None:
                operation["requestBody"] = {
                    "required": required,
                    "content": {"application/json": {"schema": schemas.of(body)}},
                }
            operation["responses"] = _responses(view, schemas)
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "triograph",
            "version": version,
            "description": "A self-hosted LangGraph Agent Server on Trio.",
        },
        "paths": paths,
        "components": {"schemas": {**schemas.components, "Error": ERROR}},
    }


def _path(rule: Rule, registered: Registered) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for converter, name in _PARAM.findall(rule.rule):
        schema: dict[str, Any] = _CONVERTERS.get(converter or "", {"type": "string"})
        if name in _PATH_IDS:
            schema = UUID
            if rule.rule in _GRAPH_ID_ROUTES and registered.graph_ids:
                schema = {"anyOf": [UUID, {"type": "string", "enum": registered.graph_ids}]}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
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
    }
    if description.strip():
        operation["description"] = description.strip()
    if parameters:
        operation["parameters"] = parameters
    return operation


def _responses(view: Callable[..., Any], schemas: Schemas) -> dict[str, Any]:
    answers, status, errors = getattr(view, _RESPONSES_ATTR, ((), 200, None))
    out: dict[str, Any] = {}
    for answer in answers:
        if isinstance(answer, int) and not isinstance(answer, bool):
            out[str(answer)] = {"description": "No content"}
            continue
        if isinstance(answer, str):  # a media type: SSE, HTML, ...
            media: dict[str, Any] = {answer: {}}
        else:
            schema = answer if isinstance(answer, dict) else schemas.of(answer, response=True)
            media = {"application/json": {"schema": schema}}
        out.setdefault(str(status), {"description": "OK", "content": {}})["content"].update(media)
    if not out:  # undeclared (a custom app's route): anything
        out["default"] = {"description": "See the LangGraph Agent Server API"}
    error = errors or {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    out["4XX"] = {"description": "The request was refused; detail says why", "content": error}
    return out


# -- query parameters ------------------------------------------------------------------------------


def _query_parameters(view: Callable[..., Any]) -> list[dict[str, Any]]:
    """The query parameters the view reads through the ``q*`` helpers of ``wire``."""
    fn = inspect.unwrap(view)
    module = sys.modules.get(fn.__module__)
    tree = _tree(fn)
    if module is None or tree is None:
        return []
    trees = [tree, *(t for h in _module_functions_called(tree, module, fn) if (t := _tree(h)))]
    found: dict[str, dict[str, Any]] = {}
    for t in trees:
        for call in _calls(t):
            if not (isinstance(call.func, ast.Name) and call.func.id in _QUERY_CALLS):
                continue
            if not call.args or not isinstance(call.args[0], ast.Constant):
                continue
            found.setdefault(str(call.args[0].value), _query_parameter(call, module))
    return list(found.values())


def _query_parameter(call: ast.Call, module: types.ModuleType) -> dict[str, Any]:
    kind = call.func.id  # type: ignore[attr-defined]
    kwargs = {k.arg: _value(k.value, module) for k in call.keywords if k.arg}
    allowed = kwargs.get("allowed")
    schema: dict[str, Any]
    if kind == "qbool":
        schema = {"type": "boolean"}
    elif kind == "qint":
        schema = {"type": "integer", "minimum": kwargs["least"], "maximum": kwargs["most"]}
    elif kind == "qlist":
        item = {"type": "string", "enum": list(allowed)} if allowed else _STRING
        schema = {"type": "array", "items": item}
    else:
        schema = kwargs.get("schema") or (
            {"type": "string", "enum": list(allowed)} if allowed else _STRING
        )
    name = call.args[0].value  # type: ignore[attr-defined]
    required = any(  # True, or the error raised when it is missing
        k.arg == "required" and not (isinstance(k.value, ast.Constant) and not k.value.value)
        for k in call.keywords
    )
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _value(node: ast.expr, module: types.ModuleType) -> Any:
    """A keyword argument's value: a literal, or a module-level name."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id, None)
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


# -- finding a view's body class ----------------------------------------------------------------


def _body_type(view: Callable[..., Any]) -> tuple[Any, bool]:
    """The view's body type (None: no body), and whether the body is required: it is, unless
    the view reads it with a ``default`` (``body_json(default={})``)."""
    fn = inspect.unwrap(view)
    module = sys.modules.get(fn.__module__)
    tree = _tree(fn)
    if module is None or tree is None:
        return getattr(view, _BODY_ATTR, None), True
    trees = [tree, *(t for h in _module_functions_called(tree, module, fn) if (t := _tree(h)))]
    optional = any(
        isinstance(call.func, ast.Name)
        and call.func.id in ("body_json", "body_as")
        and any(k.arg == "default" for k in call.keywords)
        for t in trees
        for call in _calls(t)
    )
    if hasattr(view, _BODY_ATTR):
        return getattr(view, _BODY_ATTR), getattr(view, _BODY_REQUIRED_ATTR, not optional)
    for t in trees:
        found = _named_body(t, module)
        if found is not None:
            return found, not optional
    return None, True


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
