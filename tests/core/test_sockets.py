"""A connection's socket (``triograph.core.http.sockets.SocketStream``) on real loopback TCP
connections: reads and writes that need not wait take no turn of the scheduler, but a busy
connection still yields every few; waits end with the data, the peer's end or the close."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from triograph.core.http.sockets import YIELD_EVERY, SocketStream


@contextmanager
def _tcp_pair() -> Iterator[tuple[SocketStream, socket.socket]]:
    """A server-side stream and its (blocking) client, connected over loopback."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    stream = SocketStream(accepted)
    try:
        yield stream, client
    finally:
        stream.close()
        client.close()


async def test_reads_that_need_not_wait_take_a_turn_only_every_few() -> None:
    turns = 0
    seen: list[int] = []  # the other task's turns, after each read

    async def other_task() -> None:
        nonlocal turns
        while True:
            await trio.lowlevel.checkpoint()
            turns += 1

    with _tcp_pair() as (stream, client):
        assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client.sendall(b"x" * 40)
        await trio.sleep(0.05)  # all 40 bytes are in the kernel's buffer
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.lowlevel.checkpoint()  # the other task is running
            for _ in range(40):
                assert await stream.receive_some(1) == b"x"
                seen.append(turns)
            nursery.cancel_scope.cancel()
    # not a turn per read (Trio's own socket takes one each time)...
    assert len(set(seen)) <= 40 // YIELD_EVERY + 1
    # ...but the others run every YIELD_EVERY reads (a turn runs the ready tasks in random
    # order: the other task's count may go up only after the reader's next few reads)
    window = 2 * YIELD_EVERY
    assert all(seen[i + window] > seen[i] for i in range(len(seen) - window))


async def test_a_read_waits_for_data_and_returns_empty_once_the_peer_shuts_its_end() -> None:
    with _tcp_pair() as (stream, client):
        async with trio.open_nursery() as nursery:

            async def send_later() -> None:
                await trio.sleep(0.05)
                client.sendall(b"hello")
                await trio.sleep(0.05)
                client.shutdown(socket.SHUT_WR)

            nursery.start_soon(send_later)
            assert await stream.receive_some(100) == b"hello"
            assert await stream.receive_some(100) == b""


async def test_closing_the_stream_wakes_a_waiting_read() -> None:
    with _tcp_pair() as (stream, _):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_close_later, stream)
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some(100)
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(100)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"late")
        await stream.aclose()  # closing twice is harmless


async def _close_later(stream: SocketStream) -> None:
    await trio.sleep(0.05)
    await stream.aclose()


async def test_send_all_waits_for_a_slow_reader_and_sends_everything_in_order() -> None:
    data = bytes(range(256)) * 16 * 1024  # 4 MiB: much more than the kernel's buffers
    received = bytearray()
    sent = trio.Event()
    with _tcp_pair() as (stream, client):
        client.setblocking(False)
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                await stream.send_all(data)
                sent.set()

            nursery.start_soon(send)
            await trio.sleep(0.1)
            assert not sent.is_set()  # waiting for the reader
            while len(received) < len(data):
                await trio.lowlevel.wait_readable(client)
                received.extend(client.recv(65536))
            await sent.wait()
    assert bytes(received) == data


async def test_send_now_sends_what_the_kernel_takes_and_send_rest_the_rest() -> None:
    """A write that fits goes out whole without waiting; one larger than the kernel's
    buffers is sent in part (0 bytes once they are full), and ``send_rest`` sends the rest
    in order, as the reader drains it."""
    data = bytes(range(256)) * 16 * 1024  # 4 MiB: much more than the kernel's buffers
    received = bytearray()
    with _tcp_pair() as (stream, client):
        client.setblocking(False)
        assert stream.send_now(b"small") == 5
        sent = stream.send_now(data)
        assert 0 < sent < len(data)
        while more := stream.send_now(data[sent:]):  # until the buffers are full: 0, no wait
            sent += more
        assert sent < len(data)
        done = trio.Event()
        async with trio.open_nursery() as nursery:

            async def rest() -> None:
                await stream.send_rest(data, sent)
                done.set()

            nursery.start_soon(rest)
            while len(received) < len(data) + 5:
                await trio.lowlevel.wait_readable(client)
                received.extend(client.recv(65536))
            await done.wait()
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            stream.send_now(b"more")
    assert bytes(received) == b"small" + data


async def test_a_connection_reset_by_the_peer_breaks_the_stream() -> None:
    with _tcp_pair() as (stream, client):
        # close with a reset (RST) instead of the orderly FIN
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        await trio.sleep(0.05)
        with pytest.raises(trio.BrokenResourceError):
            await stream.receive_some(100)
        with pytest.raises(trio.BrokenResourceError):
            await stream.send_all(b"x" * 1024)


async def test_sending_after_the_end_was_sent_is_refused() -> None:
    with _tcp_pair() as (stream, client):
        await stream.send_all(b"last")
        await stream.send_eof()
        await stream.send_eof()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        assert client.recv(100) == b"last"
        assert client.recv(100) == b""
