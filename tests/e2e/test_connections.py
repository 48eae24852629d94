"""HTTP/1.1 connections on a raw socket: an early response never leaves the connection
hanging, idle and half-open connections are closed after the configured time, and request
bodies are bounded (``limits`` in ``langgraph.json``; see core/http/transport.py).

These do not depend on the storage backend, so they always run on memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

from tests.concurrency import until
from tests.conftest import example_settings, start_server
from tests.sdk import Server
from triograph.core.infra.limits import Limits

#: a connection the server should have closed or answered by now is hung (not a speed check)
HUNG = 20


@attrs.define
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class RawConnection:
    """One TCP connection to the server, speaking HTTP/1.1 by hand."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bytes:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return chunk

    async def response(self) -> Response:
        """The next whole response (a ``Content-Length`` body)."""
        with trio.fail_after(HUNG):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._more():
                    raise EOFError("closed before a response")
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines)}
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                if not await self._more():
                    raise EOFError("closed in a response body")
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status=int(status_line.split()[1]), headers=headers, body=body)

    async def closed(self) -> bool:
        """Wait until the server closes the connection (True), or it sends something (False)."""
        with trio.fail_after(HUNG):
            try:
                return not self.buffer and not await self._more()
            except trio.BrokenResourceError:  # closed with a reset: closed too
                return True


@pytest.fixture
async def conn_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    limits = Limits(keep_alive_timeout=0.5, body_timeout=0.5, max_body_bytes=64 * 1024)
    settings = example_settings(storage="memory", limits=limits, heartbeat_interval=0.2)
    async for s in start_server(nursery, settings):
        yield s


@asynccontextmanager
async def connect(server: Server) -> AsyncIterator[RawConnection]:
    host, port = server.url.removeprefix("http://").split(":")
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        yield RawConnection(stream)


def head(method: str, path: str, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/nope", 404),  # no such route
        ("PUT", "/ok", 405),  # no such method
        ("POST", "/threads/not-a-uuid/copy", 422),  # a bad id, answered without the body
        ("OPTIONS", "/threads/search", 200),
    ],
)
async def test_a_response_sent_before_the_body_arrived_keeps_the_connection_working(
    conn_server: Server, method: str, path: str, status: int
) -> None:
    """The issue's repro: the response goes out before the 8 body bytes are in; the next
    request on the same connection is answered (it used to hang there for good)."""
    async with connect(conn_server) as conn:
        await conn.send(head(method, path, **{"Content-Length": "8"}))
        await trio.sleep(0.05)
        await conn.send(b"12345678")
        response = await conn.response()
        assert response.status == status
        assert "connection" not in response.headers
        await conn.send(head("GET", "/ok"))
        assert (await conn.response()).status == 200


async def test_an_early_response_whose_body_never_comes_closes_the_connection(
    conn_server: Server,
) -> None:
    async with connect(conn_server) as conn:
        await conn.send(head("POST", "/nope", **{"Content-Length": "8"}) + b"1234")
        assert (await conn.response()).status == 404
        assert await conn.closed()


async def test_keep_alive_goes_on_after_a_response_to_a_whole_request(conn_server: Server) -> None:
    async with connect(conn_server) as conn:
        for _ in range(3):
            await conn.send(head("POST", "/threads/search", **{"Content-Length": "2"}) + b"{}")
            response = await conn.response()
            assert response.status == 200
            assert "connection" not in response.headers
        await conn.send(head("GET", "/ok"))
        assert (await conn.response()).status == 200


async def test_an_http_client_pool_never_waits_on_early_responses(conn_server: Server) -> None:
    """What the SDKs do: one httpx pool (so one reused connection here), requests answered
    before their body has been sent."""

    async def late_body() -> AsyncIterator[bytes]:
        yield b'{"x": '
        await trio.sleep(0.02)
        yield b'"y"}'

    async with conn_server.http() as http:
        for _ in range(10):
            response = await http.post("/threads/not-a-uuid/copy", content=late_body())
            assert response.status_code == 422
        assert (await http.get("/ok")).status_code == 200


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(
    conn_server: Server,
) -> None:
    async with connect(conn_server) as conn:
        await conn.send(head("GET", "/ok"))
        assert (await conn.response()).status == 200
        assert await conn.closed()


@pytest.fixture
async def patient_server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """A server whose keep-alive timeout is far longer than any test waits."""
    settings = example_settings(storage="memory", limits=Limits(keep_alive_timeout=60))
    async for s in start_server(nursery, settings):
        yield s


async def test_a_client_that_leaves_has_its_connection_closed_at_once(
    patient_server: Server,
) -> None:
    """A client that shuts its end after a response is not kept until the keep-alive timeout
    (Hypercorn held each such socket, in CLOSE-WAIT, and its state for that long)."""
    for _ in range(2):
        async with connect(patient_server) as conn:
            await conn.send(head("GET", "/ok"))
            assert (await conn.response()).status == 200
            await conn.stream.send_eof()
            assert await conn.closed()


def _half_closed(port: int) -> int:
    """The server's sockets on ``port`` whose client has closed (``CLOSE_WAIT``), from
    ``/proc/net/tcp`` (the server runs in this process)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state == "08":
            count += 1
    return count


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
async def test_clients_leaving_in_the_middle_of_streams_have_their_connections_closed(
    patient_server: Server,
) -> None:
    port = int(patient_server.url.rsplit(":", 1)[1])
    body = b'{"assistant_id": "slow", "input": {"delay": 3}}'
    request = head("POST", "/runs/stream", **{"Content-Length": str(len(body))}) + body
    for _ in range(3):
        async with connect(patient_server) as conn:
            await conn.send(request)
            while b"event: metadata" not in conn.buffer:
                await conn._more()
    await until(lambda: not _half_closed(port))


async def test_a_connection_that_never_sends_a_request_is_closed(conn_server: Server) -> None:
    async with connect(conn_server) as conn:
        assert await conn.closed()


async def test_a_half_sent_request_head_is_closed(conn_server: Server) -> None:
    async with connect(conn_server) as conn:
        await conn.send(b"POST /threads HTTP/1.1\r\nHost: test\r\nContent-Le")
        assert await conn.closed()


async def test_a_body_that_stops_arriving_is_a_408_and_the_connection_closes(
    conn_server: Server,
) -> None:
    async with connect(conn_server) as conn:
        await conn.send(head("POST", "/threads", **{"Content-Length": "20"}) + b'{"metadata"')
        response = await conn.response()
        assert response.status == 408
        assert response.headers["connection"] == "close"
        assert await conn.closed()
    async with conn_server.http() as http:  # and nothing was created
        assert (await http.post("/threads/count", json={})).json() == 0


async def test_a_stream_outliving_the_keep_alive_timeout_stays_open(conn_server: Server) -> None:
    """Busy connections are not idle: a thread stream longer than the timeout keeps going
    (its heartbeats are what it sends)."""
    async with conn_server.http() as http:
        thread = (await http.post("/threads", json={})).json()
        beats = 0
        async with http.stream("GET", f"/threads/{thread['thread_id']}/stream") as stream:
            with trio.move_on_after(1.5):
                async for chunk in stream.aiter_bytes():
                    beats += chunk.count(b": heartbeat")
        assert beats >= 3


async def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(
    conn_server: Server,
) -> None:
    async with connect(conn_server) as conn:
        await conn.send(head("POST", "/threads", **{"Content-Length": str(10 * 1024 * 1024)}))
        response = await conn.response()
        assert response.status == 413
        assert response.body == b'{"detail":"Request body too large (limit: 65536 bytes)"}'
        assert response.headers["connection"] == "close"
        assert await conn.closed()


async def test_a_body_over_the_limit_sent_whole_with_its_head_is_a_413(
    conn_server: Server,
) -> None:
    """All of it is in when the request is handled: not read (nor waited for) either."""
    body = b"x" * (70 * 1024)
    async with connect(conn_server) as conn:
        await conn.send(head("POST", "/threads", **{"Content-Length": str(len(body))}) + body)
        response = await conn.response()
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert await conn.closed()


async def test_a_chunked_body_is_cut_off_at_the_limit(conn_server: Server) -> None:
    async with connect(conn_server) as conn:
        await conn.send(head("POST", "/threads", **{"Transfer-Encoding": "chunked"}))
        chunk = b"x" * 16384
        with trio.move_on_after(HUNG):  # the server answers and closes while we still send
            try:
                for _ in range(64):  # 1 MiB, far over 64 KiB
                    await conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except trio.BrokenResourceError:
                pass
        response = await conn.response()
        assert response.status == 413
        async with conn_server.http() as http:
            assert (await http.post("/threads/count", json={})).json() == 0


async def test_a_body_within_the_limit_is_served(conn_server: Server) -> None:
    async with conn_server.http() as http:
        response = await http.post("/threads", json={"metadata": {"note": "x" * 30_000}})
        assert response.status_code == 200
        too_big = await http.post("/threads", json={"metadata": {"note": "x" * 70_000}})
        assert too_big.status_code == 413


class _Spawned(trio.abc.Instrument):
    """The names of the tasks started meanwhile (the code each runs)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.names.append(task.coro.cr_code.co_name)


async def test_a_body_of_declared_length_is_read_without_a_task_of_its_own(
    conn_server: Server,
) -> None:
    """A small request's body arrives with its head, or just after it (httpx, the SDKs'
    client, writes the two apart): either way it is read in the request's own task, and the
    end of the exchange (Hypercorn's ``http.disconnect`` after the response) starts no task
    either. A chunked body that comes later gets a task waiting for it, as before."""
    spawned = _Spawned()
    chunked = b"2\r\n{}\r\n0\r\n\r\n"
    async with connect(conn_server) as conn:
        trio.lowlevel.add_instrument(spawned)
        try:
            for _ in range(3):
                await conn.send(head("POST", "/threads/search", **{"Content-Length": "2"}) + b"{}")
                assert (await conn.response()).status == 200
            whole = list(spawned.names)
            spawned.names.clear()
            await conn.send(head("POST", "/threads/search", **{"Content-Length": "2"}))
            for part in (b"{", b"}"):  # the body after its head, in two parts
                await trio.sleep(0.05)
                await conn.send(part)
            assert (await conn.response()).status == 200
            late = list(spawned.names)
            spawned.names.clear()
            await conn.send(head("POST", "/threads/search", **{"Transfer-Encoding": "chunked"}))
            await trio.sleep(0.05)
            await conn.send(chunked)
            assert (await conn.response()).status == 200
            late_chunked = list(spawned.names)
        finally:
            trio.lowlevel.remove_instrument(spawned)
    # one task per request: the app runs in the task that read it, the reading goes on in
    # a new one (core/http/server.py)...
    assert whole == ["_read_on"] * 3  # ...and nothing else to read or end it
    assert late == ["_read_on"]
    assert "handle_messages" not in late  # the late body was waited for in place
    assert late_chunked.count("handle_messages") == 1  # a chunked one: in a task


async def test_pipelined_requests_read_in_one_go_are_answered_in_order(
    conn_server: Server,
) -> None:
    """Requests written back to back, before any response: the first one's app runs before
    the protocol goes on to the next (which waits for the first response), then the next
    one's, each answered once and in order."""
    async with connect(conn_server) as conn:
        created = await _create_threads(conn, 3)
        await conn.send(
            b"".join(head("GET", f"/threads/{t}") for t in created) + head("GET", "/ok")
        )
        for thread_id in created:
            response = await conn.response()
            assert response.status == 200
            assert thread_id.encode() in response.body
        assert (await conn.response()).status == 200


async def _create_threads(conn: RawConnection, n: int) -> list[str]:
    """``n`` threads created in one write of ``n`` pipelined requests: their ids in order."""
    body = b"{}"
    one = head("POST", "/threads", **{"Content-Length": str(len(body))}) + body
    await conn.send(one * n)
    ids = []
    for _ in range(n):
        response = await conn.response()
        assert response.status == 200
        ids.append(response.body.split(b'"thread_id":"')[1].split(b'"')[0].decode())
    assert len(set(ids)) == n
    return ids


async def test_a_chunked_body_of_many_chunks_read_in_one_go_is_served(
    conn_server: Server,
) -> None:
    """More chunks in one read than the app's queue holds (Hypercorn's
    ``max_app_queue_size``, 10): the request's app starts to take them as they come, the
    connection does not wait for it forever."""
    body = b'{"metadata": {"note": "%s"}}' % (b"x" * 200)
    chunked = b"".join(b"1\r\n%s\r\n" % body[i : i + 1] for i in range(len(body)))
    async with connect(conn_server) as conn:
        request = head("POST", "/threads", **{"Transfer-Encoding": "chunked"})
        await conn.send(request + chunked + b"0\r\n\r\n")
        response = await conn.response()
        assert response.status == 200
        assert b'"note":"' + b"x" * 200 + b'"' in response.body


async def test_a_chunked_body_sent_whole_is_served(conn_server: Server) -> None:
    body = b'{"metadata": {"note": "chunked"}}'
    async with connect(conn_server) as conn:
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        await conn.send(head("POST", "/threads", **{"Transfer-Encoding": "chunked"}) + chunked)
        response = await conn.response()
        assert response.status == 200
        assert b'"note":"chunked"' in response.body
