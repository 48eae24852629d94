"""Meta routes: health and server information (contract §10)."""

from __future__ import annotations

from importlib import metadata

from quart import Blueprint, Response

from triograph.core.api.http import core, json_response

bp = Blueprint("meta", __name__)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@bp.get("/ok")
@bp.get("/")
async def ok() -> Response:
    return json_response({"ok": True, "services": {"storage": "healthy"}})


@bp.get("/info")
async def info() -> Response:
    c = core()
    return json_response(
        {
            "version": _version("triograph"),
            "langgraph_py_version": _version("langgraph"),
            "server": "triograph",
            "flags": {
                "assistants": True,
                "crons": False,
                "langsmith": False,
                "langsmith_tracing_replicas": False,
                "langsmith_tracing_session_on_runs": False,
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
