"""Start-up and shutdown: the CLI, SIGTERM, and runs in flight at shutdown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import httpx
import trio

from tests.conftest import EXAMPLES, ROOT
from tests.sdk import Server, stored


async def _wait_status(server: Server, thread_id: str, run_id: str, want: str) -> None:
    with trio.fail_after(10):  # polling the API is the point: the status lives server-side
        while True:
            if (await server.sync(lambda c: c.runs.get(thread_id, run_id)))["status"] == want:
                return
            await trio.sleep(0.05)


async def test_shutdown_interrupts_and_records_runs_in_flight(server: Server) -> None:
    thread = await server.sync(lambda c: c.threads.create())
    tid = thread["thread_id"]
    run = await server.sync(lambda c: c.runs.create(tid, "slow", input={"delay": 5}))
    queued = await server.sync(lambda c: c.runs.create(tid, "slow", input={"delay": 5}))
    await _wait_status(server, tid, run["run_id"], "running")

    await server.shutdown()  # grace is 0.5 s in the fixture: both runs get interrupted

    async with stored(server) as storage:
        first = await storage.runs.get(run["run_id"])
        second = await storage.runs.get(queued["run_id"])
        stored_thread = await storage.threads.get(tid)
    assert first is not None
    assert first.status == "interrupted"
    assert second is not None
    assert stored_thread is not None
    assert stored_thread.error == {"error": "UserInterrupt", "message": "server shutting down"}
    if server.core.storage.cluster is not None:  # shared storage: the queued run is left to others
        assert second.status == "pending"
        assert stored_thread.status == "busy"
    else:
        assert second.status == "interrupted"
        assert stored_thread.status != "busy"


def _start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "triograph.core.http.cli", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_cli_serves_prints_url_and_stops_on_sigterm() -> None:
    proc = _start_cli("dev", "--config", str(EXAMPLES / "langgraph.json"), "--port", "0")
    try:
        url = None
        with trio.fail_after(30):
            while url is None:
                assert proc.stdout is not None
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                assert line, "server exited before printing its URL"
                if line.startswith("triograph serving "):
                    url = line.split()[2]
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/ok")).json()["ok"] is True
            wait = await http.post(
                "/runs/wait", json={"assistant_id": "agent", "input": {"topic": "x"}}
            )
            assert wait.json()["joke"] == "This is a joke about x and cats"
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            code = await trio.to_thread.run_sync(proc.wait)
        assert code == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_cli_names_storage_backends_that_are_not_here() -> None:
    proc = _start_cli(
        "serve", "--config", str(EXAMPLES / "langgraph.json"), "--storage", "redis://nowhere/0"
    )
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2
    assert "'redis' backend" in out
    assert "available backends: file, memory" in out


async def test_cli_refuses_workers_on_a_storage_of_one_process() -> None:
    config = str(EXAMPLES / "langgraph.json")
    proc = _start_cli("serve", "--config", config, "--storage", "memory", "--workers", "2")
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2
    assert "--workers 2 needs a storage shared by processes" in out


async def test_cli_reports_a_missing_config() -> None:
    proc = _start_cli("dev", "--config", "/nonexistent/langgraph.json")
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2
    assert "not found" in out


async def test_cli_says_in_one_line_that_the_port_is_in_use() -> None:
    """It used to print a 50-line exception group and exit 1, after opening the storage."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = str(EXAMPLES / "langgraph.json")
        proc = _start_cli("dev", "--config", config, "--port", str(port))
        out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2
    assert out == f"triograph: cannot listen on 127.0.0.1:{port}: Address already in use\n"


async def test_cli_says_in_one_line_that_the_storage_cannot_be_opened() -> None:
    """No traceback, and no "serving" line before the refusal (there used to be both)."""
    spec = "postgresql://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1
    config = str(EXAMPLES / "langgraph.json")
    proc = _start_cli("serve", "--config", config, "--port", "0", "--storage", spec)
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2
    assert out.count("\n") == 1, out
    assert out.startswith(f"triograph: storage {spec!r}: connection failed: "), out
