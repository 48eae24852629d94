"""``GET /metrics``: the server's Prometheus metrics, as text (the default) or JSON.

The metrics live on ``Core.metrics``, a ``prometheus_client`` registry that plugins fill
(the built-in ``triograph.plugins.metrics`` counts runs, requests, errors and loop lag, and
samples the server's state at each scrape); this route only renders it. ``?format=json``
gives the same samples as JSON, plus the official server's ``queue`` and ``workers``
summaries. Like ``/info``, it is a meta route: ``http.disable_meta`` turns it off.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Blueprint, Response, request

from triograph.core.engine.stats import server_stats
from triograph.core.http.openapi import OBJECT, responds
from triograph.core.http.wire import core, json_response
from triograph.core.infra.errors import InvalidRequest

bp = Blueprint("metrics", __name__)

FORMATS = ("prometheus", "json")


@bp.get("/metrics")
@responds("text/plain", OBJECT)
async def metrics() -> Response:
    """Prometheus metrics: text by default, JSON with ?format=json."""
    fmt = request.args.get("format", "prometheus")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format: {fmt!r} is not one of {list(FORMATS)}")
    c = core()
    if fmt == "prometheus":
        return Response(generate_latest(c.metrics), content_type=CONTENT_TYPE_LATEST)
    stats = server_stats(c)
    families: dict[str, Any] = {}
    for family in c.metrics.collect():
        families[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [
                {"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples
            ],
        }
    return json_response(
        {
            "queue": {"n_pending": stats.runs_pending, "n_running": stats.runs_running},
            "workers": {
                "max": stats.max_runs,
                "active": stats.runs_running,
                "available": max(stats.max_runs - stats.runs_running, 0),
            },
            "metrics": families,
        }
    )
