"""``GET /metrics``: after known traffic, the exposition (parsed with ``prometheus_client``'s
own parser) counts exactly that traffic; gauges show runs pending and running, open streams
and their readers while they exist; JSON on request; storage errors counted."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import example_settings, start_server
from tests.sdk import Server, poll
from triograph.plugins import metrics as metrics_plugin


@pytest.fixture
async def server(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setattr(metrics_plugin, "PROBE_INTERVAL", 0.05)
    async for s in start_server(nursery, example_settings(shutdown_grace=0.5)):
        yield s


async def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    async with server.http() as h:
        r = await h.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_counts_the_traffic_it_saw(server: Server) -> None:
    async with server.http() as h:
        for _ in range(3):
            assert (await h.get("/ok")).status_code == 200
        assert (await h.get("/no/such/thing")).status_code == 404
        for _ in range(2):
            r = await h.post("/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}})
            assert r.status_code == 200
        await h.post("/runs/wait", json={"assistant_id": "erroring", "input": {}})
        thread = (await h.get("/threads/not-a-uuid")).status_code
        assert thread == 422
    samples = await poll(
        lambda: scrape(server),
        lambda s: (
            value(s, "triograph_runs_total", outcome="error") == 1
            and value(s, "triograph_loop_lag_seconds", loop="graph") > 0
        ),
    )
    assert value(samples, "triograph_runs_total", outcome="success") == 2
    requests = "triograph_http_requests_total"
    assert value(samples, requests, method="GET", route="/ok", status="200") == 3
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="POST", route="/runs/wait", status="200") == 3
    assert value(samples, requests, method="GET", route="/threads/{thread_id}", status="422") == 1
    assert not [k for k in samples if dict(k[1]).get("route", "").startswith("/no/")]
    duration = "triograph_http_request_duration_seconds_count"
    assert value(samples, duration, method="GET", route="/ok") == 3
    assert value(samples, "triograph_run_duration_seconds_count", outcome="success") == 2
    assert value(samples, "triograph_run_queue_seconds_count") == 3
    assert value(samples, "triograph_loop_lag_seconds", loop="trio") >= 0
    assert ("triograph_loop_lag_seconds", (("loop", "trio"),)) in samples
    assert value(samples, "triograph_runs_pending") == 0
    assert value(samples, "triograph_runs_running") == 0
    assert value(samples, "triograph_runs_max") == server.core.settings.max_runs
    assert value(samples, "triograph_errors_total", where="http") == 0


async def test_gauges_show_runs_in_flight_and_open_streams(server: Server) -> None:
    async with server.http() as h:
        thread = (await h.post("/threads", json={})).json()["thread_id"]
        slow = {"assistant_id": "slow", "input": {"delay": 0.5}}
        first = (await h.post(f"/threads/{thread}/runs", json=slow)).json()
        await h.post(f"/threads/{thread}/runs", json=slow)  # queued behind the first
        async with h.stream("GET", f"/threads/{thread}/runs/{first['run_id']}/stream") as joined:
            assert joined.status_code == 200
            samples = await poll(
                lambda: scrape(server), lambda s: value(s, "triograph_runs_running") == 1
            )
            assert value(samples, "triograph_runs_pending") == 1
            assert value(samples, "triograph_open_streams") == 1
            assert value(samples, "triograph_stream_subscribers") >= 1
    samples = await poll(
        lambda: scrape(server), lambda s: value(s, "triograph_runs_total", outcome="success") == 2
    )
    assert value(samples, "triograph_runs_pending") == 0
    assert value(samples, "triograph_runs_running") == 0
    assert value(samples, "triograph_open_streams") == 0
    assert value(samples, "triograph_http_client_disconnects_total") == 0


async def test_json_on_request_and_bad_format(server: Server) -> None:
    async with server.http() as h:
        await h.get("/ok")
        r = await h.get("/metrics", params={"format": "json"})
        assert r.status_code == 200
        body = r.json()
        assert body["queue"] == {"n_pending": 0, "n_running": 0}
        assert body["workers"]["max"] == server.core.settings.max_runs
        ok = body["metrics"]["triograph_http_requests"]
        assert ok["type"] == "counter"
        assert {
            "name": "triograph_http_requests_total",
            "labels": {"method": "GET", "route": "/ok", "status": "200"},
            "value": 1.0,
        } in ok["samples"]
        bad = await h.get("/metrics", params={"format": "xml"})
        assert bad.status_code == 422
        assert bad.json() == {"detail": "format: 'xml' is not one of ['prometheus', 'json']"}


async def test_storage_errors_are_counted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(server.core.storage.threads, "search", broken)
    async with server.http() as h:
        assert (await h.post("/threads/search", json={})).status_code == 500
    samples = await scrape(server)
    assert value(samples, "triograph_storage_errors_total", where="http") == 1
    assert value(samples, "triograph_errors_total", where="http") == 1
    assert (
        value(
            samples,
            requests := "triograph_http_requests_total",
            method="POST",
            route="/threads/search",
            status="500",
        )
        == 1
    ), requests


async def test_disabled_plugin_leaves_an_empty_registry(nursery: trio.Nursery) -> None:
    settings = example_settings(disable_plugins=("triograph.plugins.metrics",))
    async for s in start_server(nursery, settings):
        async with s.http() as h:
            r = await h.get("/metrics")
            assert r.status_code == 200
            assert "triograph_" not in r.text
            info = (await h.get("/info")).json()
            assert info["flags"]["metrics"] is False
