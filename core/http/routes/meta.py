"""Meta routes (contract §10): health, server information, the OpenAPI document and its
viewer.

``health`` (``/ok``, ``/``) is always served; ``bp`` (``/info``, ``/openapi.json``, ``/docs``)
is what ``http.disable_meta`` turns off, as on the official server.
"""

from __future__ import annotations

import functools
import importlib.resources
from importlib import metadata
from typing import Any

from quart import Blueprint, Response, current_app, request

from triograph.core.http import openapi
from triograph.core.http.auth import public
from triograph.core.http.custom_app import CUSTOM_APP_KEY, openapi_paths
from triograph.core.http.json_schema import Registered
from triograph.core.http.openapi import HTML, OBJECT, responds
from triograph.core.http.wire import core, json_response
from triograph.core.resources.run_records import MAX_RECURSION_LIMIT

health = Blueprint("health", __name__)
bp = Blueprint("meta", __name__)

#: the reference page: Swagger UI 5 from the ``swagger-ui-py`` package, served by
#: :func:`docs_asset`, so it works without internet. (Scalar, which the official server
#: uses, ships in no PyPI package: its Python integrations load it from a CDN.)
DOCS_HTML = """<!doctype html>
<html lang="en">
  <head>
    <title>triograph API reference</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <link rel="stylesheet" href="/docs/swagger-ui.css" />
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script>
      window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});
    </script>
  </body>
</html>
"""
#: the files of Swagger UI the page loads, and their content types
DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@health.get("/ok")
@health.get("/")
@public
@responds(OBJECT)
async def ok() -> Response:
    """Health check."""
    return json_response({"ok": True, "services": {"storage": "healthy"}})


@bp.get("/info")
@responds(OBJECT)
async def info() -> Response:
    """Server version, feature flags and the plugins that are loaded."""
    c = core()
    blueprints = current_app.blueprints
    return json_response(
        {
            "version": _version("triograph"),
            "langgraph_py_version": _version("langgraph"),
            "server": "triograph",
            "flags": {
                "assistants": "assistants" in blueprints,
                "crons": "crons" in blueprints,
                "langsmith": False,
                "langsmith_tracing_replicas": False,
                "langsmith_tracing_session_on_runs": False,
                "custom_app": c.settings.http.get("app") is not None,
                "store_index": bool(c.settings.store.get("index")),
                "webhooks": not c.runs.webhook_policy.delivery.disabled,
                "mcp": "mcp" in blueprints,
                "a2a": "a2a" in blueprints,
                "thread_storage": "threads" in blueprints,
                "metrics": "metrics" in blueprints
                and c.pm.get_plugin("triograph.plugins.metrics") is not None,
            },
            "host": {
                "kind": "self-hosted",
                "project_id": None,
                "host_revision_id": None,
                "revision_id": None,
                "tenant_id": None,
            },
            "storage": c.storage.name,
            "stream_modes": c.stream_modes.names(),
            "multitask_strategies": c.multitask.names(),
            "plugins": sorted(name for name, _ in c.pm.list_name_plugin()),
        }
    )


def _document() -> dict[str, Any]:
    """Built on first use (the routes are final once the app serves), then kept."""
    config, c = current_app.config, core()
    if "TRIOGRAPH_OPENAPI" not in config:
        document = openapi.document(
            current_app.url_map,
            current_app.view_functions,
            version=_version("triograph") or "0",
            registered=Registered(
                graph_ids=list(c.graphs.graphs),
                stream_modes=c.stream_modes.names(),
                strategies=c.multitask.names(),
                recursion_limit=MAX_RECURSION_LIMIT,
            ),
        )
        custom = config.get(CUSTOM_APP_KEY)
        if custom is not None:  # its routes come first, there as in routing
            paths, schemas = openapi_paths(custom)
            for path, operations in paths.items():
                document["paths"].setdefault(path, {}).update(operations)
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
        # ``auth.openapi``: how clients authenticate, as the official server merges it
        security = core().settings.auth.get("openapi") or {}
        if "securitySchemes" in security:
            document.setdefault("components", {})["securitySchemes"] = security["securitySchemes"]
        if "security" in security:
            document["security"] = security["security"]
        config["TRIOGRAPH_OPENAPI"] = document
    return config["TRIOGRAPH_OPENAPI"]  # type: ignore[no-any-return]


@bp.get("/openapi.json")
@public
@responds(OBJECT)
async def openapi_json() -> Response:
    """The OpenAPI 3.1 document of this server's routes."""
    return json_response(_document())


@bp.get("/docs")
@public
@responds(HTML)
async def docs() -> Response:
    """An API reference page (Swagger UI) for /openapi.json; works offline."""
    return Response(DOCS_HTML, content_type="text/html; charset=utf-8")


@bp.get("/docs/swagger-ui-bundle.js")
@bp.get("/docs/swagger-ui.css")
@bp.get("/docs/favicon-32x32.png")
@public  # the reference page's own files: as public as the page
@responds("text/javascript", "text/css", "image/png")
async def docs_asset() -> Response:
    """A file of the reference page (Swagger UI's script, style sheet and icon)."""
    name = request.path.rpartition("/")[2]  # one of the routes above: a DOCS_ASSETS key
    return Response(
        _asset(name),
        content_type=DOCS_ASSETS[name],
        headers={"Cache-Control": "public, max-age=86400"},
    )


@functools.cache
def _asset(name: str) -> bytes:
    return (importlib.resources.files("swagger_ui") / "static" / name).read_bytes()
