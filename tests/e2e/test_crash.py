"""Crash recovery for real (docs/architecture.md): ``triograph serve`` on a durable backend as a
subprocess, runs in flight, ``SIGKILL``, a restart on the same storage, and then every run's
final status and every thread's state, over raw HTTP. On the file backend the restart takes
the runs over at start-up; on Postgres (when ``TRIOGRAPH_TEST_POSTGRES`` is set) once the
killed worker's lease (1 s here) has run out.

Runs use the ``gated`` example graph: ``step2`` waits until the file named by the run's
``gate`` exists, so the test decides which runs are still mid-run when it kills a server
(no timing involved). ``triograph.max_attempts`` is 2 in the test's ``langgraph.json``, so
a run killed twice mid-run fails on the third start.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

from tests import pg
from tests.concurrency import sse
from tests.conftest import EXAMPLES, ROOT
from tests.sdk import poll
from triograph.core.infra.plugin_manager import fill_registry, make_plugin_manager
from triograph.core.infra.storage import StorageRegistry

SERVING = re.compile(rb"triograph serving (\S+)")
STEPS = ["step1", "step2"]


def _registered() -> StorageRegistry:
    registry = StorageRegistry()
    fill_registry(make_plugin_manager(), "triograph_register_storage", registry)
    return registry


@pytest.fixture(params=["file", "postgres"])
async def storage_spec(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[str]:
    """The durable storage the servers of a test share: a SQLite file, or a fresh database."""
    if request.param not in _registered():
        pytest.skip(f"the {request.param!r} backend is not registered in this build")
    if request.param == "file":
        yield f"file:{tmp_path / 'db.sqlite'}"
        return
    if pg.ADMIN_DSN is None:
        pytest.skip("needs TRIOGRAPH_TEST_POSTGRES (a server to create databases on)")
    url = await trio.to_thread.run_sync(pg.fresh_database)
    try:
        yield url
    finally:
        await trio.to_thread.run_sync(pg.drop_database, url)


@attrs.define
class Child:
    """One ``triograph serve`` process and everything it printed."""

    proc: trio.Process
    output: bytearray = attrs.Factory(bytearray)
    url: str = ""

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    async def kill(self) -> None:
        """``kill -9`` (its workers too): no process gets a chance to record anything."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()


Launch = Callable[..., Awaitable[Child]]


@pytest.fixture
async def launch(
    nursery: trio.Nursery, tmp_path: pathlib.Path, storage_spec: str
) -> AsyncIterator[Launch]:
    """``await launch()`` starts ``triograph serve`` on the test's storage (graph ``gated``,
    ``max_attempts`` 2, a lease of 1 s) and returns once it serves; every process still
    alive at the end of the test is killed."""
    config = tmp_path / "langgraph.json"
    graph = EXAMPLES / "graphs" / "gated.py"
    own = {"max_attempts": 2, "lease": 1}
    config.write_text(json.dumps({"graphs": {"gated": f"{graph}:graph"}, "triograph": own}))
    command = [sys.executable, "-m", "triograph.core.http.cli", "serve", "--config", str(config)]
    command += ["--storage", storage_spec, "--port", "0"]
    children: list[Child] = []

    async def drain(child: Child) -> None:
        assert child.proc.stdout is not None
        async for chunk in child.proc.stdout:
            child.output += chunk

    async def start(*options: str) -> Child:
        proc = await trio.lowlevel.open_process(
            [*command, *options],
            start_new_session=True,  # a process group: kill() takes ``--workers`` children too
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        child = Child(proc)
        children.append(child)
        nursery.start_soon(drain, child)
        with trio.fail_after(60):
            while (found := SERVING.search(child.output)) is None:
                assert proc.poll() is None, f"the server exited:\n{child.output.decode()}"
                await trio.sleep(0.05)
        child.url = found.group(1).decode()
        return child

    try:
        yield start
    finally:
        for child in children:
            if child.proc.returncode is None:
                await child.kill()


async def create(
    http: httpx.AsyncClient, tid: str | None, gate: pathlib.Path, **fields: Any
) -> Any:
    """A background ``gated`` run (stateless without ``tid``); returns it as created."""
    body = {"assistant_id": "gated", "input": {"gate": str(gate), "log": []}, **fields}
    r = await http.post(f"/threads/{tid}/runs" if tid else "/runs", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def status(http: httpx.AsyncClient, run: dict[str, Any]) -> str | None:
    r = await http.get(f"/threads/{run['thread_id']}/runs/{run['run_id']}")
    return r.json()["status"] if r.status_code == 200 else None


async def joined(http: httpx.AsyncClient, run: dict[str, Any]) -> Any:
    r = await http.get(f"/threads/{run['thread_id']}/runs/{run['run_id']}/join")
    assert r.status_code == 200, r.text
    return r.json()


async def state_log(http: httpx.AsyncClient, tid: str) -> Any:
    return ((await http.get(f"/threads/{tid}/state")).json()["values"] or {}).get("log")


async def test_runs_survive_sigkill_and_restart(launch: Launch, tmp_path: pathlib.Path) -> None:
    gate, gate2 = tmp_path / "gate", tmp_path / "gate2"
    first_server = await launch()
    async with first_server.http() as http:
        tids = [(await http.post("/threads", json={})).json()["thread_id"] for _ in range(5)]
        t1, t2, t3, t4, t5 = tids
        first = await create(http, t1, gate)
        second = await create(http, t1, gate, input={"gate": str(gate), "log": ["second"]})
        unsaved = await create(http, t2, gate, durability="exit")
        doomed = await create(http, t3, gate2)
        later = await create(http, t5, gate, after_seconds=600)
        stateless = await create(http, None, gate)
        for tid in (t1, t3):  # waiting in step2, step1 checkpointed
            await poll(lambda tid=tid: state_log(http, tid), lambda log: log == ["step1"])
        for run in (unsaved, stateless):
            await poll(lambda run=run: status(http, run), lambda s: s == "running")
    await first_server.kill()

    await trio.Path(gate).touch()  # everything but ``doomed`` may finish now
    second_server = await launch()
    async with second_server.http() as http:
        # the first reader of a run gets it from its start: the retry's metadata first
        events = sse((await http.get(f"/threads/{t1}/runs/{first['run_id']}/stream")).content)
        assert events[0] == ("metadata", {"run_id": first["run_id"], "attempt": 2})
        assert events[-1] == ("values", {"gate": str(gate), "log": STEPS})  # step1 once
        assert await joined(http, first) == {"gate": str(gate), "log": STEPS}
        assert (await joined(http, second))["log"] == [*STEPS, "second", *STEPS]
        assert (await joined(http, unsaved))["log"] == STEPS  # it had saved nothing: rerun
        assert (await joined(http, stateless))["log"] == STEPS
        assert await status(http, stateless) is None  # its temporary thread went with it
        await poll(lambda: status(http, doomed), lambda s: s == "running")
        assert await status(http, later) == "pending"  # still waiting for its 600 s
    await second_server.kill()  # ``doomed`` is killed mid-run a second time

    last_server = await launch()
    async with last_server.http() as http:
        crashed = {
            "error": "WorkerCrashed",
            "message": "the server stopped 2 times while running this run; giving up "
            "(max_attempts=2)",
        }
        assert await joined(http, doomed) == {"__error__": crashed}
        later_run = (await http.get(f"/threads/{t5}/runs/{later['run_id']}")).json()
        assert later_run["status"] == "pending"
        assert later_run["created_at"] == later["created_at"]  # its schedule kept
        cancel = await http.post(f"/threads/{t5}/runs/{later['run_id']}/cancel?wait=true")
        assert cancel.status_code == 200, cancel.text

        finals = {}
        for tid in (t1, t2, t3, t5):
            for run in (await http.get(f"/threads/{tid}/runs")).json():
                finals[run["run_id"]] = run["status"]
        assert finals == {
            first["run_id"]: "success",
            second["run_id"]: "success",
            unsaved["run_id"]: "success",
            doomed["run_id"]: "error",
            later["run_id"]: "interrupted",
        }
        threads = {t["thread_id"]: t for t in (await http.post("/threads/search", json={})).json()}
        assert set(threads) == set(tids)
        assert {tid: threads[tid]["status"] for tid in tids} == {
            t1: "idle",
            t2: "idle",
            t3: "error",
            t4: "idle",
            t5: "idle",
        }
        assert threads[t1]["values"]["log"] == [*STEPS, "second", *STEPS]
        assert threads[t2]["values"]["log"] == STEPS
        assert threads[t3]["values"]["log"] == ["step1"]
        assert threads[t3]["error"] == crashed
    last_server.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await last_server.proc.wait() == 0


async def test_workers_share_the_port_and_the_runs(
    launch: Launch, storage_spec: str, tmp_path: pathlib.Path
) -> None:
    if not storage_spec.startswith("postgresql"):
        pytest.skip("--workers needs a storage shared by processes")
    server = await launch("--workers", "2")
    gate = tmp_path / "gate"  # never opened: every run waits in step2

    async def one(results: list[Any]) -> None:
        async with server.http() as http:  # a connection each: the workers accept in turn
            tid = (await http.post("/threads", json={})).json()["thread_id"]
            results.append(await create(http, tid, gate))

    runs: list[Any] = []
    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(one, runs)
    owners = await trio.to_thread.run_sync(_owners, storage_spec)
    assert len(owners) == 2, owners  # both workers execute runs
    async with server.http() as http:
        for run in runs:  # each run is cancelled through whichever worker takes the request
            r = await http.post(f"/threads/{run['thread_id']}/runs/{run['run_id']}/cancel?wait=1")
            assert r.status_code == 200, r.text
            assert await status(http, run) == "interrupted"
    server.proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await server.proc.wait() == 0


def _owners(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT owner FROM runs")}
