"""Operator logs: one access line per request, one line per run transition, one INFO line
for a client that leaves, no secret in any line, Hypercorn's lines once, ``--log-format
json`` from the command line."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import EXAMPLES, TEST_STORAGE, example_settings, start_server
from tests.sdk import Server, poll

SECRET = "s3cret-token-9f2c"


def access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "triograph.access"]


def every_line(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.Formatter()
    return "\n".join(
        r.getMessage() + (handler.formatException(r.exc_info) if r.exc_info else "")
        for r in caplog.records
    )


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_one_access_line_per_request(server: Server, logs: pytest.LogCaptureFixture) -> None:
    async with server.http() as h:
        thread = (await h.post("/threads", json={})).json()
        r = await h.post(
            f"/threads/{thread['thread_id']}/runs/wait",
            json={"assistant_id": "agent", "input": {"topic": "x"}},
        )
        assert r.status_code == 200
        run_id = r.headers["Content-Location"].rsplit("/", 1)[1]
        assert (await h.get(f"/threads/{thread['thread_id']}/runs/{run_id}")).status_code == 200
        assert (await h.get("/no/such/route?token=abc")).status_code == 404
    lines = await poll(lambda: _async(access(logs)), lambda rs: len(rs) >= 4)
    assert len(lines) == 4, [r.getMessage() for r in lines]
    by_route = {r.route: r for r in lines}  # type: ignore[attr-defined]
    assert by_route["/threads"].status == 200  # type: ignore[attr-defined]
    wait = by_route["/threads/{thread_id}/runs/wait"]
    get = by_route["/threads/{thread_id}/runs/{run_id}"]
    missing = by_route["/no/such/route"]
    assert (wait.method, wait.status, wait.run_id) == ("POST", 200, run_id)  # type: ignore[attr-defined]
    assert wait.getMessage().startswith("POST /threads/{thread_id}/runs/wait 200 ")
    assert f"run={run_id}" in wait.getMessage()
    assert wait.duration_ms > 0  # type: ignore[attr-defined]
    assert get.run_id == run_id  # type: ignore[attr-defined]
    assert missing.getMessage().startswith("GET /no/such/route 404 ")  # no query string
    assert all(r.levelno == logging.INFO for r in lines)


async def _async(value: Any) -> Any:
    return value


async def test_one_line_per_run_transition(server: Server, logs: pytest.LogCaptureFixture) -> None:
    async with server.http() as h:
        ok = await h.post("/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}})
        bad = await h.post("/runs/wait", json={"assistant_id": "erroring", "input": {}})
    run_ids = [r.headers["Content-Location"].rsplit("/", 1)[1] for r in (ok, bad)]

    def of(run_id: str) -> list[logging.LogRecord]:
        return [r for r in logs.records if r.name == "triograph.runs" and r.run_id == run_id]  # type: ignore[attr-defined]

    await poll(lambda: _async([of(i) for i in run_ids]), lambda ls: all(len(x) == 3 for x in ls))
    (ok_lines, bad_lines) = (of(i) for i in run_ids)
    assert [r.outcome for r in ok_lines] == ["pending", "running", "success"]  # type: ignore[attr-defined]
    assert [r.outcome for r in bad_lines] == ["pending", "running", "error"]  # type: ignore[attr-defined]
    assert bad_lines[-1].error == "ValueError: boom from node"  # type: ignore[attr-defined]
    assert "boom from node" in bad_lines[-1].getMessage()
    assert ok_lines[-1].duration_ms > 0  # type: ignore[attr-defined]
    assert not [r for r in logs.records if r.levelno >= logging.WARNING]


async def test_a_client_that_leaves_is_one_info_line(
    server: Server, logs: pytest.LogCaptureFixture
) -> None:
    """A client leaving mid-stream, or before its body is read, or by a reset: one INFO
    line each, nothing at WARNING or above."""
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"assistant_id": "slow", "input": {"delay": 0.2}, "stream_mode": ["values"]}'
    for reset in (False, True):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(
            b"POST /runs/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await stream.receive_some(10)  # the response has started
        if reset:  # RST instead of FIN
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()
    partial = await trio.open_tcp_stream(host, int(port))
    await partial.send_all(
        b'POST /runs/wait HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{"assist'
    )
    await trio.sleep(0.1)
    await partial.aclose()
    left = await poll(
        lambda: _async([r for r in access(logs) if r.__dict__.get("disconnected")]),
        lambda rs: len(rs) == 3,
    )
    assert {r.route for r in left} == {"/runs/stream", "/runs/wait"}  # type: ignore[attr-defined]
    assert all(r.levelno == logging.INFO and "client disconnected" in r.getMessage() for r in left)
    await trio.sleep(0.5)  # the runs go on and finish: still nothing worse than INFO
    assert not [r for r in logs.records if r.levelno >= logging.WARNING], every_line(logs)


async def test_no_secret_is_logged(
    nursery: trio.Nursery, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authorization headers, webhook header templates and a webhook URL's token appear in
    no log line, at any level, even when the webhook fails."""
    monkeypatch.setenv("LG_WEBHOOK_TOKEN", SECRET)
    webhooks = {
        "url": {"disable_loopback": False},
        "headers": {"Authorization": "Bearer ${{ env.LG_WEBHOOK_TOKEN }}"},
        "max_attempts": 2,
        "retry_base_seconds": 0.01,
    }
    settings = example_settings(shutdown_grace=0.5, webhooks=webhooks)
    async for s in start_server(nursery, settings):
        async with s.http(headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}) as h:
            r = await h.post(
                "/runs/wait",
                json={
                    "assistant_id": "agent",
                    "input": {"topic": "x"},
                    "webhook": f"http://user:{SECRET}@127.0.0.1:9/hook?token={SECRET}",
                },
            )
            assert r.status_code == 200
        await poll(
            lambda: _async(every_line(logs)), lambda text: "giving up" in text
        )  # the webhook failed, and said so
    text = every_line(logs)
    assert "127.0.0.1:9/hook" in text
    assert SECRET not in text


def test_cli_json_lines(tmp_path: Any) -> None:
    """``triograph dev --log-format json``: every stderr line is one JSON object, none
    twice; access and run lines carry their fields."""
    if TEST_STORAGE != "memory":
        pytest.skip("the command line's logging does not depend on the backend")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "triograph.core.http.cli", "dev", "--port", "0"]
    cmd += ["--config", str(EXAMPLES / "langgraph.json"), "--log-format", "json"]
    stderr = tmp_path / "stderr"
    with (
        stderr.open("wb") as err,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env) as proc,
    ):
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().decode().split()[2]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SECRET}"}) as c:
                assert c.get("/ok").status_code == 200
                c.post("/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}})
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    lines = [json.loads(line) for line in stderr.read_text().splitlines()]
    assert lines, "nothing logged"
    # no line in Hypercorn's own format (it would not parse) and none twice
    assert len({(x["time"], x["logger"], x["message"]) for x in lines}) == len(lines)
    ok = next(x for x in lines if x["logger"] == "triograph.access" and x["route"] == "/ok")
    assert ok["method"] == "GET"
    assert ok["status"] == 200
    assert ok["level"] == "INFO"
    runs = [x for x in lines if x["logger"] == "triograph.runs"]
    assert [x["outcome"] for x in runs] == ["pending", "running", "success"]
    assert all("time" in x and x["run_id"] == runs[0]["run_id"] for x in runs)
    assert SECRET not in stderr.read_text()


async def test_hypercorn_logs_through_our_handler_once(server: Server) -> None:
    """Hypercorn is handed its logger as an object, so it adds no handler of its own: its
    lines reach the root handler once, in our format (it used to print each twice)."""
    assert logging.getLogger("hypercorn.error").handlers == []
    assert logging.getLogger("hypercorn.error").propagate
    assert logging.getLogger("hypercorn.access").handlers == []
