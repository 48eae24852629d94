"""What only the file backend does: where its files are, refusing what it cannot open, and
how its LangGraph saver and store behave on the bridge's graph loop when a job is cancelled.
The protocol itself is checked by ``test_contract.py``."""

from __future__ import annotations

import asyncio  # noqa: TID251 -- drives the graph loop the saver and store run on
import contextlib
import operator
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import pytest
import trio
import trio.testing
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from tests.conftest import EXAMPLES
from tests.sdk import poll
from triograph.core.infra.errors import ConfigError
from triograph.core.infra.graph_bridge import CLEANUP_TIMEOUT, GraphBridge
from triograph.core.infra.settings import Settings
from triograph.storage.file import MIGRATIONS, open_file_storage


def cli(*args: str, cwd: pathlib.Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRIOGRAPH_STORAGE"}
    return subprocess.Popen(
        [sys.executable, "-m", "triograph.core.http.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )


async def test_a_path_that_cannot_be_opened_is_a_config_error(tmp_path: pathlib.Path) -> None:
    spec = f"file:{tmp_path / 'missing' / 'db.sqlite'}"
    with pytest.raises(ConfigError, match=r"cannot open '.*/missing/db\.sqlite'"):
        async with open_file_storage(spec, Settings()):
            pass
    with pytest.raises(ConfigError, match="file:PATH"):
        async with open_file_storage("file:", Settings()):
            pass


async def test_a_database_of_a_newer_triograph_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    async with open_file_storage(f"file:{path}", Settings()):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer"):
        async with open_file_storage(f"file:{path}", Settings()):
            pass


async def test_writes_queued_for_the_writer_run_in_order_each_alone(
    tmp_path: pathlib.Path,
) -> None:
    """The writes that queue while the writer connection is busy run after it in one worker
    thread call, in their order, each its own transaction: one that fails changes none of
    the others, one cancelled while it waits never runs, and each caller gets its own
    result."""
    async with open_file_storage(f"file:{tmp_path / 'db.sqlite'}", Settings()) as storage:
        engine = storage.threads._engine  # the metadata file's SqlEngine
        started, release = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> str:
            started.set()
            release.wait(10)
            conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            return "held"

        def insert(n: int) -> Any:
            return lambda conn: conn.execute(
                "INSERT INTO t VALUES (?) RETURNING n", (n,)
            ).fetchone()[0]

        results: dict[str, Any] = {}

        async def write(name: str, fn: Any, scope: trio.CancelScope | None = None) -> None:
            try:
                with scope or trio.CancelScope():
                    results[name] = await engine.write(fn)
                    return
            except sqlite3.Error as exc:
                results[name] = type(exc).__name__
            if scope is not None and scope.cancelled_caught:
                results[name] = "cancelled"

        cancelled = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "hold", hold)
            await trio.to_thread.run_sync(started.wait)
            for name, n in [("1", 1), ("2", 2), ("again 2", 2), ("3", 3)]:
                nursery.start_soon(write, name, insert(n))
                await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(write, "4", insert(4), cancelled)
            await trio.testing.wait_all_tasks_blocked()
            cancelled.cancel()
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        rows = await engine.read(lambda conn: conn.execute("SELECT n FROM t ORDER BY n").fetchall())
    assert results == {
        "hold": "held",
        "1": 1,
        "2": 2,
        "again 2": "IntegrityError",
        "3": 3,
        "4": "cancelled",
    }
    assert [n for (n,) in rows] == [1, 2, 3]


async def test_serve_keeps_everything_in_the_working_directory(tmp_path: pathlib.Path) -> None:
    proc = cli("serve", "--config", str(EXAMPLES / "langgraph.json"), "--port", "0", cwd=tmp_path)
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("triograph serving "):
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            assert line, "the server exited before serving"
        assert line.rstrip().endswith("(storage: file:./triograph.sqlite)"), line
        names = {p.name for p in await trio.Path(tmp_path).iterdir()}
        assert {
            "triograph.sqlite",
            "triograph.sqlite-checkpoints",
            "triograph.sqlite-store",
        } <= names
    finally:
        proc.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 0


async def test_serve_exits_2_naming_a_file_it_cannot_open(tmp_path: pathlib.Path) -> None:
    spec = f"file:{tmp_path / 'missing' / 'db.sqlite'}"
    config = str(EXAMPLES / "langgraph.json")
    proc = cli("serve", "--config", config, "--port", "0", "--storage", spec, cwd=tmp_path)
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    assert proc.returncode == 2, out
    path = tmp_path / "missing" / "db.sqlite"
    assert out == (
        f"triograph: storage {spec!r}: cannot open {str(path)!r}: unable to open database file\n"
    )


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


async def test_the_checkpoint_writes_of_a_cancelled_run_have_landed_when_the_cancel_returns(
    tmp_path: pathlib.Path,
) -> None:
    """LangGraph writes a run's checkpoints in background tasks, each after the one before
    (eager tasks on Python 3.12+, which skip the loop's task factory). A run cancelled once
    its nodes are done, while its loop waits for those writes, is cut loose from them; they
    must still all have landed when the cancel returns, since the supervisor then reads the
    thread's values, or a rollback deletes the run's checkpoints.

    The saver is busy (its lock taken by the first node) until just after the cancel: every
    write after the input's is pending when it reaches the run."""
    async with (
        open_file_storage(f"file:{tmp_path / 'db.sqlite'}", Settings()) as storage,
        GraphBridge().open() as bridge,
    ):
        saver = storage.checkpointer

        async def first(state: Log) -> Log:
            await saver.lock.acquire()
            return {"log": ["first"]}

        async def second(state: Log) -> Log:
            get_stream_writer()("nodes done")
            return {"log": ["second"]}

        graph = (
            StateGraph(Log)
            .add_node("first", first)
            .add_node("second", second)
            .add_edge(START, "first")
            .add_edge("first", "second")
            .add_edge("second", END)
            .compile(checkpointer=saver)
        )
        config: Any = {"configurable": {"thread_id": "t"}, "metadata": {"run_id": "r"}}

        async def release() -> None:
            saver.lock.release()

        async def free_the_saver(leaving: trio.Event) -> None:
            await leaving.wait()
            await bridge.call(release)  # reaches the graph loop after the cancel

        async with trio.open_nursery() as nursery:
            leaving = trio.Event()
            nursery.start_soon(free_the_saver, leaving)
            stream = graph.astream({"log": []}, config, stream_mode="custom", durability="async")
            async with bridge.stream(lambda: stream) as batches:
                async for batch in batches:
                    if "nodes done" in batch:
                        await bridge.call(idle)  # the run's loop now waits for its writes
                        leaving.set()
                        break  # leaving cancels the run, and waits for it

        async def stored() -> list[Any]:
            return [c.checkpoint["id"] async for c in saver.alist(config)]

        written = await bridge.call(stored)
        await bridge.call(drain)
        assert await bridge.call(stored) == written
        assert len(written) == 4  # the input, then the steps of __start__, first and second
        await bridge.call(lambda: saver.adelete_for_runs(["r"]))
        assert await bridge.call(stored) == []


async def test_a_checkpoint_write_cancelled_mid_statement_has_committed_when_the_cancel_returns(
    tmp_path: pathlib.Path,
) -> None:
    """aiosqlite runs a statement once queued, even if the coroutine awaiting it is
    cancelled. A checkpoint write cancelled while its INSERT waits for the connection's
    thread must still commit it: else the INSERT lands after the cancel, in a transaction
    nobody commits (unseen by other connections, and the saver's next transaction fails to
    begin). Here the thread is busy until just after the cancel reached the write."""
    path = tmp_path / "db.sqlite"
    async with (
        open_file_storage(f"file:{path}", Settings()) as storage,
        GraphBridge().open() as bridge,
    ):
        saver = storage.checkpointer
        free = threading.Event()

        async def occupy() -> asyncio.Future[Any]:
            await saver.setup()
            await saver.conn.create_function("occupied", 0, free.wait)
            busy = asyncio.ensure_future(saver.conn.execute_fetchall("SELECT occupied()"))
            await asyncio.sleep(0)  # queued: the connection's thread now waits for `free`
            return busy

        async def writing() -> bool:
            return saver.lock.locked()  # the write's INSERT waits in the queue

        async def release() -> None:
            free.set()

        busy = await bridge.call(occupy)
        config: Any = {
            "configurable": {"thread_id": "t", "checkpoint_ns": ""},
            "metadata": {"run_id": "r"},
        }
        write = trio.CancelScope()

        async def put() -> None:
            with write:
                await bridge.call(lambda: saver.aput(config, empty_checkpoint(), {"step": -1}, {}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(put)
            await poll(lambda: bridge.call(writing), bool)
            write.cancel()
            await trio.testing.wait_all_tasks_blocked()  # the cancel is on its way ...
            await bridge.call(release)  # ... and reaches the graph loop first
        assert write.cancelled_caught
        await bridge.call(lambda: busy)

        def committed() -> int:
            with contextlib.closing(sqlite3.connect(f"{path}-checkpoints")) as other:
                return int(other.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0])

        assert await trio.to_thread.run_sync(committed) == 1
        await bridge.call(lambda: saver.adelete_for_runs(["r"]))
        assert await trio.to_thread.run_sync(committed) == 0


async def test_a_cancelled_job_does_not_wait_for_the_batch_task_of_the_store(
    tmp_path: pathlib.Path,
) -> None:
    """The store's batch task, started by its first operation, serves every later one and
    never ends: the job that happened to start it must not wait for it once cancelled (it
    would be given up on only after the bridge's cleanup timeout)."""
    async with (
        open_file_storage(f"file:{tmp_path / 'db.sqlite'}", Settings()) as storage,
        GraphBridge().open() as bridge,
    ):
        store = storage.store

        async def put_then_wait() -> AsyncIterator[str]:
            await store.aput(("ns",), "key", {"v": 1})
            yield "stored"
            await asyncio.Event().wait()

        with trio.fail_after(CLEANUP_TIMEOUT / 2):
            async with bridge.stream(put_then_wait) as batches:
                async for _ in batches:
                    break  # leaving cancels the producer, and waits for it
            item = await bridge.call(lambda: store.aget(("ns",), "key"))  # served still
        assert item is not None
        assert item.value == {"v": 1}


async def idle() -> None:
    """Let whatever runs on the graph loop go on until it waits (here, on the saver)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def drain() -> None:
    """Wait until nothing else runs on the graph loop (a write left behind would land)."""
    me = asyncio.current_task()
    while others := [t for t in asyncio.all_tasks() if t is not me]:
        await asyncio.wait(others)
