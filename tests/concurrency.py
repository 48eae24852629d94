"""Helpers for the concurrency tests (multitask, cancel, hook sequence, stress).

Runs use the ``slow`` example graph: two nodes that sleep ``delay`` seconds and append
``step1``/``step2`` to ``log``. ``log`` adds up across runs, so a run given
``{"log": [marker]}`` as input leaves its marker in the thread's values, followed by the
steps it completed: the order of the markers is the order the runs executed in.

``exchange`` is a bare HTTP/1.1 client (h11 over a Trio socket) for clients that leave
in the middle of a response; ``quiet`` asserts the server keeps nothing for runs that have
ended.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable
from typing import Any

import attrs
import h11
import orjson
import trio

from tests.sdk import Server, get, poll

#: seconds per node of ``slow`` for a run that stays in flight until the test cancels it
SLOW = 3.0
#: seconds per node of ``slow`` when a test waits for step1's checkpoint, then acts
#: while step2 runs
STEP = 1.0
#: seconds per node of ``slow`` when a run should just run
FAST = 0.02
#: how long any bare exchange may take
EXCHANGE_TIMEOUT = 20.0


def slow_input(delay: float, marker: str | None = None) -> dict[str, Any]:
    return {"delay": delay, "log": [marker] if marker is not None else []}


async def new_thread(server: Server) -> str:
    thread = await server.sync(lambda c: c.threads.create())
    return thread["thread_id"]  # type: ignore[no-any-return]


async def start_slow(
    server: Server, tid: str, delay: float = SLOW, marker: str | None = None, **kwargs: Any
) -> str:
    """A background ``slow`` run; returns its id."""
    run = await server.sync(
        lambda c: c.runs.create(tid, "slow", input=slow_input(delay, marker), **kwargs)
    )
    return run["run_id"]  # type: ignore[no-any-return]


async def run_status(server: Server, tid: str, rid: str) -> str | None:
    """The run's status, or None once it does not exist (rolled back)."""
    code, run = await get(server, f"/threads/{tid}/runs/{rid}")
    assert code in (200, 404), (code, run)
    return run["status"] if code == 200 else None  # type: ignore[no-any-return]


async def run_reaches(server: Server, tid: str, rid: str, *statuses: str | None) -> str | None:
    """Wait until the run's status is one of ``statuses`` (None: deleted)."""
    return await poll(lambda: run_status(server, tid, rid), lambda s: s in statuses)


async def run_ends(server: Server, tid: str, rid: str) -> str | None:
    return await run_reaches(server, tid, rid, "success", "error", "interrupted", None)


async def thread_settles(server: Server, tid: str) -> dict[str, Any]:
    """The thread once it is no longer ``busy``."""
    return await poll(  # type: ignore[no-any-return]
        lambda: server.sync(lambda c: c.threads.get(tid)), lambda t: t["status"] != "busy"
    )


async def log_reaches(server: Server, tid: str, log: list[str]) -> None:
    """Wait until the thread's head checkpoint has ``log`` (a step was saved)."""
    await poll(
        lambda: get(server, f"/threads/{tid}/state"),
        lambda v: v[0] == 200 and (v[1]["values"] or {}).get("log") == log,
    )


async def checkpoints(server: Server, tid: str) -> list[dict[str, Any]]:
    """The thread's checkpoints, oldest first."""
    history = await server.sync(lambda c: c.threads.get_history(tid, limit=1000))
    return list(reversed(history))


def writers(history: list[dict[str, Any]]) -> list[str]:
    """The run ids that wrote ``history``, each once, in the order they first wrote."""
    return list(dict.fromkeys(s["metadata"]["run_id"] for s in history))


async def until(check: Callable[[], bool]) -> None:
    """Wait until ``check()`` holds (at most 10 s): for state that only the server sees."""
    with trio.fail_after(10):
        while True:
            if check():
                return
            await trio.sleep(0.02)


async def quiet(server: Server) -> None:
    """Once every run has recorded its outcome and every client that left has been noticed
    (waited for: a client sees a run end a moment before its task does, and the server
    sees a disconnect a moment after it), nothing is kept for them: no run in flight, no
    thread lane, no record lock, no stream subscriber; finished runs still remembered
    (retained for joins) have an expiry, and sweeping past it forgets them."""
    core = server.core
    supervisor = core.supervisor

    async def busy() -> int:
        return (
            supervisor.lanes
            + sum(not h.done.is_set() for h in supervisor.handles.values())
            + sum(h.stream.subscriber_count for h in supervisor.handles.values())
            + sum(map(core.thread_streams.subscriber_count, list(core.thread_streams._streams)))
        )

    await poll(busy, lambda n: n == 0)
    assert supervisor.all_in_flight() == []
    assert len(core.threads.record_lock) == 0
    assert all(handle.expires_at < math.inf for handle in supervisor.handles.values())
    supervisor.sweep(at=math.inf)
    assert supervisor.handles == {}


# -- a bare HTTP client ------------------------------------------------------------------------


@attrs.define
class Exchange:
    status: int = 0
    headers: dict[str, str] = attrs.Factory(dict)
    body: bytes = b""
    #: the response ended (the client did not leave first)
    complete: bool = False


async def exchange(
    server: Server,
    method: str,
    path: str,
    body: Any = None,
    *,
    leave: Callable[[bytes], bool] | None = None,
) -> Exchange:
    """One request on its own connection. Reads the response to its end, or until
    ``leave(body so far)`` holds (checked once the headers arrived, then after each chunk):
    then the connection closes, as a client going away."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    payload = b"" if body is None else orjson.dumps(body)
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method=method,
        target=path,
        headers=[
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
        ],
    )
    out = Exchange()
    with trio.fail_after(EXCHANGE_TIMEOUT):
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            data = conn.send(request) + conn.send(h11.Data(data=payload))
            await stream.send_all(data + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some())
                    continue
                if isinstance(event, h11.Response):
                    out.status = event.status_code
                    out.headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    out.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    out.complete = True
                    return out
                else:
                    raise AssertionError(f"unexpected {event!r}")
                if leave is not None and leave(out.body):
                    return out


def sse(body: bytes) -> list[tuple[str, Any]]:
    """The ``(event, data)`` frames of an SSE body (heartbeats left out)."""
    events = []
    for frame in body.split(b"\r\n\r\n"):
        fields = dict(
            line.split(b": ", 1) for line in frame.split(b"\r\n") if line and line[:1] != b":"
        )
        if b"event" in fields:
            events.append((fields[b"event"].decode(), orjson.loads(fields[b"data"])))
    return events


def run_id_of(response: Exchange) -> str:
    return response.headers["content-location"].rsplit("/", 1)[-1]


# -- a storage that yields ---------------------------------------------------------------------


class Yielding:
    """A repository whose every call first yields to other tasks 0-2 times, as a call to a
    database would. The memory backend never yields, so without this two storage calls of
    different tasks cannot interleave and races between them cannot show."""

    def __init__(self, repo: Any, rng: random.Random) -> None:
        self._repo = repo
        self._rng = rng

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._repo, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._rng.randint(0, 2)):
                await trio.lowlevel.checkpoint()
            return await attr(*args, **kwargs)

        return call


def make_storage_yield(server: Server, rng: random.Random) -> None:
    storage: Any = server.core.storage
    storage.threads = Yielding(storage.threads, rng)
    storage.runs = Yielding(storage.runs, rng)
