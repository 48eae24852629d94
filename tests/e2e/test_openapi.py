"""``GET /openapi.json`` (generated from the routes the app has) and ``GET /docs``."""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any, Literal

import attrs
from quart_trio import QuartTrio

from tests.conftest import example_settings
from tests.sdk import Server
from triograph.core.http import json_schema, openapi
from triograph.core.http.app import app_core, create_app
from triograph.core.infra.models import NO_NUL

AUTOMATIC = {"HEAD", "OPTIONS"}


async def fetch_document(server: Server) -> dict[str, Any]:
    async with server.http() as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    return r.json()  # type: ignore[no-any-return]


def served_app_modes() -> list[str]:
    return app_core(served_app()).stream_modes.names()


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
    # every HTTP route; a WebSocket route (its GET is an upgrade) is not an HTTP operation
    rules = [r for r in served_app().url_map.iter_rules() if not getattr(r, "websocket", False)]
    assert len(rules) < len(list(served_app().url_map.iter_rules()))
    expected = 0
    for rule in rules:
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        params = set(re.findall(r"{(\w+)}", path))
        assert path in doc["paths"], path
        for method in rule.methods - AUTOMATIC:
            operation = doc["paths"][path][method.lower()]
            assert operation["summary"], (method, path)
            declared = operation.get("parameters", [])
            assert {p["name"] for p in declared if p["in"] == "path"} == params
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
    assert batch["schema"] == {"type": "array", "items": ref, "minItems": 1}
    run_create = schemas["RunCreate"]
    assert run_create["required"] == ["assistant_id"]
    fields = run_create["properties"]
    assert {"stream_mode", "stream_subgraphs", "stream_resumable", "webhook"} <= set(fields)
    modes = {"type": "string", "enum": served_app_modes()}
    assert fields["stream_mode"] == {
        "anyOf": [modes, {"type": "array", "items": modes}],
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
    assert 'url: "/openapi.json"' in r.text
    assert '<script src="/docs/swagger-ui-bundle.js">' in r.text  # served here, not by a CDN


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
    schemas = json_schema.Schemas()
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
        "anything": {"$ref": "#/components/schemas/JSONValue", "default": None},
    }
    assert schemas.components["Inner"]["properties"] == {
        "name": {"type": "string", "pattern": NO_NUL}
    }
    # keys a request record does not read are accepted (and ignored) if they could be stored
    assert outer["propertyNames"] == {"pattern": NO_NUL}
    assert outer["additionalProperties"] == {"$ref": "#/components/schemas/JSONValue"}
    response = json_schema.Schemas()
    response.of(Outer, response=True)
    assert "additionalProperties" not in response.components["Outer"]
    assert response.components["Outer"]["properties"]["anything"] == {"default": None}


def test_request_body_names_a_body_the_code_cannot_show() -> None:
    @openapi.request_body(list[Inner])
    async def view() -> None:
        """Take many."""

    assert openapi._body_type(view) == (list[Inner], True)


async def test_the_document_declares_what_the_server_enforces(server: Server) -> None:
    """Issue 15, item 10: UUID path ids, query parameters with their bounds and allowed
    values, bodies that are required or not, and the ranges of body fields."""
    doc = await fetch_document(server)
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    uuid_schema = {"type": "string", "format": "uuid"}
    get_run = paths["/threads/{thread_id}/runs/{run_id}"]["get"]
    assert [p["schema"] for p in get_run["parameters"]] == [uuid_schema, uuid_schema]
    (assistant,) = paths["/assistants/{assistant_id}"]["get"]["parameters"]
    assert assistant["schema"] == uuid_schema  # a graph id there is a 422
    (graph_route,) = paths["/assistants/{assistant_id}/graph"]["get"]["parameters"][:1]
    assert graph_route["schema"]["anyOf"][0] == uuid_schema  # here a graph id is fine too
    query = {
        p["name"]: p["schema"] for p in paths["/threads/{thread_id}/runs"]["get"]["parameters"]
    }
    assert query["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert query["offset"] == {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
    assert "run_id" in query["select"]["items"]["enum"]
    assert query["status"]["enum"] == [
        "pending",
        "running",
        "error",
        "success",
        "timeout",
        "interrupted",
    ]
    assert paths["/threads"]["post"]["requestBody"]["required"] is False
    assert paths["/threads/search"]["post"]["requestBody"]["required"] is True
    search = schemas["ThreadSearch"]["properties"]
    assert search["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10}
    after = schemas["RunCreate"]["properties"]["after_seconds"]
    assert after["anyOf"][0] == {"type": "number", "minimum": 0, "maximum": 604800}
    recursion = schemas["RunCreate"]["properties"]["config"]["anyOf"][0]["properties"]
    assert recursion["recursion_limit"]["minimum"] == 1


async def test_every_operation_declares_its_responses(server: Server) -> None:
    doc = await fetch_document(server)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "default" not in responses, (method, path)
            if path == "/mcp":  # the protocol's own errors: JSON-RPC, or a line of text
                assert set(responses["4XX"]["content"]) == {"application/json", "text/plain"}
                continue
            if path.endswith("/commands"):  # a command's error envelope, or a bad body's detail
                schema = responses["4XX"]["content"]["application/json"]["schema"]
                assert {"$ref": "#/components/schemas/Error"} in schema["oneOf"]
                continue
            assert responses["4XX"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
    thread = doc["paths"]["/threads/{thread_id}"]
    assert thread["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thread"
    }
    assert set(thread["patch"]["responses"]) == {"200", "204", "4XX"}
    assert set(thread["delete"]["responses"]) == {"204", "4XX"}
    stream = doc["paths"]["/runs/stream"]["post"]["responses"]["200"]["content"]
    assert set(stream) == {"text/event-stream"}
    assert "required" not in doc["components"]["schemas"]["Thread"]  # a select may omit any
    assert "attempt" not in doc["components"]["schemas"]["Run"]["properties"]  # never sent


async def test_options_allows_the_methods_of_the_route_it_matched(server: Server) -> None:
    """``/assistants/search`` also fits ``/assistants/{assistant_id}``; its Allow used to
    list that route's methods too."""
    async with server.http() as http:
        search = await http.options("/assistants/search")
        one = await http.options("/assistants/fe096781-5601-53d2-b2f6-0d3403f7e9ca")
    assert search.status_code == 200
    assert search.headers["allow"] == "OPTIONS, POST"
    assert one.headers["allow"] == "DELETE, GET, HEAD, OPTIONS, PATCH"


async def test_the_document_declares_the_rules_across_fields_and_formats(server: Server) -> None:
    """Issue 15, item 10: what the server checks beyond types is in the document, so that
    a request the document allows is one the server takes (each rule shown both ways)."""
    doc = await fetch_document(server)
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    async with server.http() as http:
        # a cancel names a status, or a thread with run ids: never neither
        branches = schemas["CancelMany"]["oneOf"]
        assert [b["required"] for b in branches] == [["status"], ["thread_id", "run_ids"]]
        assert (await http.post("/runs/cancel", json={})).status_code == 422
        taken = await http.post("/runs/cancel", json={"status": "pending"})
        assert taken.status_code in (204, 404)  # the shape is right; nothing may be pending
        # a cron patch changes something; a schedule has 5 to 7 fields; zones are IANA names
        assert schemas["CronPatch"]["minProperties"] == 1
        schedule = schemas["CronCreate"]["properties"]["schedule"]["pattern"]
        assert re.fullmatch(schedule, "*/5 9-17 * * MON-FRI")
        assert re.fullmatch(schedule, "@daily")
        assert not re.fullmatch(schedule, "")
        assert not re.fullmatch(schedule, "* * *")
        body = {"assistant_id": "agent", "schedule": "* * *"}
        assert (await http.post("/runs/crons", json=body)).status_code == 422
        zones = schemas["CronCreate"]["properties"]["timezone"]["anyOf"][0]["enum"]
        assert {"UTC", "Europe/Paris", "America/New_York"} <= set(zones)
        # a webhook is an http(s) URL with a host name
        webhook = schemas["RunCreate"]["properties"]["webhook"]["anyOf"][0]["pattern"]
        assert re.fullmatch(webhook, "https://hooks.example.com:8443/done?x=1")
        assert not re.fullmatch(webhook, "")
        assert not re.fullmatch(webhook, "ftp://example.com")
        # a batch holds one run at least
        assert (await http.post("/runs/batch", json=[])).status_code == 422
        # select names fields of the resource
        select = schemas["ThreadSearch"]["properties"]["select"]["anyOf"][0]["items"]["enum"]
        assert {"thread_id", "values", "status"} <= set(select)
        refused = await http.post("/threads/search", json={"select": ["nope"]})
        assert refused.status_code == 422
        # store namespaces: labels without periods; an item's index is false, null or paths
        label = schemas["StoreSearch"]["properties"]["namespace_prefix"]["anyOf"][0]["items"]
        assert not re.fullmatch(label["pattern"], "a.b")
        assert not re.fullmatch(label["pattern"], "")
        index = schemas["StorePut"]["properties"]["index"]["anyOf"]
        assert index[0] == {"type": "boolean", "enum": [False]}
        item = {"namespace": ["a"], "key": "k", "value": {"v": 1}, "index": 0}
        assert (await http.put("/store/items", json=item)).status_code == 422
        # no string or key anywhere holds a NUL character (the server refuses it)
        value = schemas["JSONValue"]["anyOf"]
        assert value[0] == {"type": "string", "pattern": NO_NUL}
        assert value[-1]["propertyNames"] == {"pattern": NO_NUL}
        nul = {"metadata": {"a": ["x\u0000y"]}}
        assert (await http.post("/threads", json=nul)).status_code == 422
        # the agent card's query names its assistant
        (card,) = paths["/.well-known/agent-card.json"]["get"]["parameters"]
        assert (card["name"], card["required"]) == ("assistant_id", True)
        assert (await http.get("/.well-known/agent-card.json")).status_code == 422
