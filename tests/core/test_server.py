"""The accept loop of ``triograph.core.http.server``: a burst of connections is taken from
the kernel's queue at once, not one per turn of the scheduler; while the server is swamped
they are held, in arrival order, and served once it is not."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from triograph.core.http import server
from triograph.core.http.sockets import SocketStream


@contextmanager
def _connected(count: int) -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A listening socket and ``count`` clients whose handshakes the kernel has completed
    (all waiting in its accept queue); every socket is closed on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    clients: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4 * server.START_BATCH)
        listener.setblocking(False)
        for _ in range(count):
            clients.append(socket.create_connection(listener.getsockname()))
        yield listener, clients
    finally:
        for client in clients:
            client.close()
        listener.close()


async def test_every_queued_connection_is_accepted_before_any_is_served() -> None:
    accepted_by_then: list[int] = []
    all_served = trio.Event()
    with _connected(50) as (listener, clients):
        async with trio.open_nursery() as handlers:

            async def handler(stream: SocketStream) -> None:
                accepted_by_then.append(len(handlers.child_tasks))
                if len(accepted_by_then) == len(clients):
                    all_served.set()

            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(server._accept, listener, handler, handlers, _never)
                await all_served.wait()
                acceptor.cancel_scope.cancel()
    # the first connection served found all 50 accepted already (Hypercorn's own loop,
    # trio.serve_listeners, accepts one per turn: the first found 1)
    assert accepted_by_then[0] == 50


def _never() -> bool:
    return False


async def test_connections_wait_in_arrival_order_while_the_server_is_swamped() -> None:
    swamped = True
    served: list[int] = []  # the clients' ports, as their connections are served
    all_served = trio.Event()
    with _connected(server.START_BATCH + 6) as (listener, clients):
        ports = [client.getsockname()[1] for client in clients]
        async with trio.open_nursery() as handlers:

            async def handler(stream: SocketStream) -> None:
                served.append(stream.socket.getpeername()[1])
                if len(served) == len(clients):
                    all_served.set()

            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(server._accept, listener, handler, handlers, lambda: swamped)
                await trio.sleep(20 * server.SWAMPED_POLL)
                assert served == []  # none is served...
                with pytest.raises(BlockingIOError):
                    listener.accept()  # ...but every one was taken from the kernel's queue
                swamped = False
                await all_served.wait()
                acceptor.cancel_scope.cancel()
    # in arrival order, a batch per turn (Trio runs the tasks of one turn in either order)
    batch = server.START_BATCH
    assert set(served[:batch]) == set(ports[:batch])
    assert set(served[batch:]) == set(ports[batch:])


async def test_connections_held_when_the_server_stops_are_closed() -> None:
    with _connected(3) as (listener, clients):
        async with trio.open_nursery() as handlers, trio.open_nursery() as acceptor:
            acceptor.start_soon(server._accept, listener, _unexpected, handlers, lambda: True)
            await trio.sleep(20 * server.SWAMPED_POLL)
            with pytest.raises(BlockingIOError):
                listener.accept()
            acceptor.cancel_scope.cancel()
        for client in clients:
            client.settimeout(5)
            assert client.recv(1) == b""  # the server's end is closed


async def _unexpected(stream: SocketStream) -> None:
    raise AssertionError("a held connection was served")


async def test_a_server_cancelled_with_idle_connections_ends_cleanly() -> None:
    """Cancelling the server from outside (an embedding app's nursery), not shutting it down,
    while connections are idle: each one closes as its task ends. Closing them at the end of
    ``serve`` found their task groups closing already (RuntimeError, masking the cancel)."""
    from tests.conftest import example_settings
    from triograph.core.http.app import create_app, serve_app

    app = create_app(example_settings(storage="memory"))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = (
                await nursery.start(
                    lambda task_status: serve_app(
                        app, host="127.0.0.1", port=0, task_status=task_status
                    )
                )
            )[0]
            host, port = url.removeprefix("http://").split(":")
            streams = [await trio.open_tcp_stream(host, int(port)) for _ in range(3)]
            for stream in streams:  # each served once, then idle on keep-alive
                await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
            nursery.cancel_scope.cancel()
    for stream in streams:
        await stream.aclose()
