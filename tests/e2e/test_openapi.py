"""``GET /openapi.json`` (generated from the routes the app has) and ``GET /docs``."""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any, Literal

import attrs
from quart_trio import QuartTrio

from tests.conftest import example_settings
from tests.sdk import Server
from triograph.core.http import openapi
from triograph.core.http.app import create_app

AUTOMATIC = {"HEAD", "OPTIONS"}


async def fetch_document(server: Server) -> dict[str, Any]:
    async with server.http() as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    return r.json()  # type: ignore[no-any-return]


def served_app() -> QuartTrio:
    """An app with the same settings as the ``server`` fixture's, for its ``url_map``."""
    return create_app(example_settings())


async def test_every_route_is_documented_with_its_methods(server: Server) -> None:
    doc = await fetch_document(server)
    assert doc["openapi"].startswith("3.1")
    assert doc["info"] == {
        "title": "triograph",
        "version": metadata.version("triograph"),
        "description": doc["info"]["description"],
    }
    rules = list(served_app().url_map.iter_rules())
    expected = 0
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        params = set(re.findall(r"{(\w+)}", path))
        assert path in doc["paths"], path
        for method in rule.methods - AUTOMATIC:
            operation = doc["paths"][path][method.lower()]
            assert operation["summary"], (method, path)
            assert {p["name"] for p in operation.get("parameters", [])} == params
            expected += 1
    documented = sum(len(item) for item in doc["paths"].values())
    assert documented == expected  # and nothing that is not a route
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


async def test_summaries_come_from_docstrings(server: Server) -> None:
    paths = (await fetch_document(server))["paths"]
    stream = paths["/threads/{thread_id}/stream"]["get"]
    assert stream["summary"].startswith("Everything happening on a thread")
    assert "stream_mode" in stream["description"]
    assert paths["/threads/{thread_id}/runs/stream"]["post"]["summary"] == "Stream run"
    (run_id,) = paths["/runs/{run_id}"]["get"]["parameters"]
    assert run_id["schema"] == {"type": "string", "format": "uuid"}  # a <uuid:...> route


async def test_run_create_body_schema(server: Server) -> None:
    doc = await fetch_document(server)
    schemas = doc["components"]["schemas"]
    ref = {"$ref": "#/components/schemas/RunCreate"}
    for path in ("/threads/{thread_id}/runs/stream", "/runs/wait", "/threads/{thread_id}/runs"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["content"]["application/json"]["schema"] == ref, path
    batch = doc["paths"]["/runs/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"] == {"type": "array", "items": ref}
    run_create = schemas["RunCreate"]
    assert run_create["required"] == ["assistant_id"]
    fields = run_create["properties"]
    assert {"stream_mode", "stream_subgraphs", "stream_resumable", "webhook"} <= set(fields)
    assert fields["stream_mode"] == {
        "type": "array",
        "items": {"type": "string"},
        "default": ["values"],
    }
    assert fields["on_disconnect"] == {
        "anyOf": [{"type": "string", "enum": ["cancel", "continue"]}, {"type": "null"}],
        "default": None,
    }
    assert fields["command"]["anyOf"][0] == {"$ref": "#/components/schemas/CommandBody"}
    assert "resume" in schemas["CommandBody"]["properties"]
    cancel = doc["paths"]["/runs/cancel"]["post"]["requestBody"]["content"]["application/json"]
    assert cancel["schema"] == {"$ref": "#/components/schemas/CancelMany"}


async def test_assistant_graph_ids_are_an_enum_of_the_graphs(server: Server) -> None:
    schemas = (await fetch_document(server))["components"]["schemas"]
    with_graph_id = {
        name: schema["properties"]["graph_id"]
        for name, schema in schemas.items()
        if name.startswith("Assistant") and "graph_id" in schema["properties"]
    }
    assert with_graph_id, "the assistant bodies are documented"
    graphs = list(server.core.graphs.graphs)
    for name, prop in with_graph_id.items():
        strings = [s for s in prop.get("anyOf", [prop]) if s.get("type") == "string"]
        assert strings, name
        assert all(s["enum"] == graphs for s in strings), name


async def test_docs_page_loads_the_document(server: Server) -> None:
    async with server.http() as http:
        r = await http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert 'data-url="/openapi.json"' in r.text
    assert "<script" in r.text


# -- the generator on its own ---------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Inner:
    name: str


@attrs.frozen(kw_only=True)
class Outer:
    inner: Inner
    inners: list[Inner] = attrs.Factory(list)
    ratio: float = 0.5
    count: int | None = None
    flag: bool = False
    kind: Literal["a", "b"] = "a"
    labels: dict[str, int] = attrs.Factory(dict)
    anything: Any = None


def test_schemas_from_attrs_classes() -> None:
    schemas = openapi._Schemas([])
    assert schemas.of(list[Outer]) == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/Outer"},
    }
    outer = schemas.components["Outer"]
    assert outer["required"] == ["inner"]
    assert outer["properties"] == {
        "inner": {"$ref": "#/components/schemas/Inner"},
        "inners": {"type": "array", "items": {"$ref": "#/components/schemas/Inner"}, "default": []},
        "ratio": {"type": "number", "default": 0.5},
        "count": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
        "flag": {"type": "boolean", "default": False},
        "kind": {"type": "string", "enum": ["a", "b"], "default": "a"},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}, "default": {}},
        "anything": {"default": None},
    }
    assert schemas.components["Inner"]["properties"] == {"name": {"type": "string"}}


def test_request_body_names_a_body_the_code_cannot_show() -> None:
    @openapi.request_body(list[Inner])
    async def view() -> None:
        """Take many."""

    assert openapi._body_type(view) == list[Inner]
