"""The accept loop of ``triograph.core.http.server``: a burst of connections is taken from
the kernel's queue at once, not one per turn of the scheduler; while the server is swamped
they are held, in arrival order, and served once it is not."""

from __future__ import annotations

import socket

import pytest
import trio

from triograph.core.http import server


async def test_every_queued_connection_is_accepted_before_any_is_served() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    # 50 clients whose handshakes the kernel has completed: all wait in the accept queue
    clients = [socket.create_connection(listener.getsockname()) for _ in range(50)]
    accepted_by_then: list[int] = []
    all_served = trio.Event()
    try:
        async with trio.open_nursery() as handlers:

            async def handler(stream: trio.SocketStream) -> None:
                accepted_by_then.append(len(handlers.child_tasks))
                if len(accepted_by_then) == len(clients):
                    all_served.set()

            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(server._accept, listener, handler, handlers, _never)
                await all_served.wait()
                acceptor.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
        listener.close()
    # the first connection served found all 50 accepted already (Hypercorn's own loop,
    # trio.serve_listeners, accepts one per turn: the first found 1)
    assert accepted_by_then[0] == 50


def _never() -> bool:
    return False


def _listening() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4 * server.START_BATCH)
    listener.setblocking(False)
    return listener


async def test_connections_wait_in_arrival_order_while_the_server_is_swamped() -> None:
    listener = _listening()
    swamped = True
    clients = [
        socket.create_connection(listener.getsockname()) for _ in range(server.START_BATCH + 6)
    ]
    ports = [client.getsockname()[1] for client in clients]
    served: list[int] = []  # the clients' ports, as their connections are served
    all_served = trio.Event()
    try:
        async with trio.open_nursery() as handlers:

            async def handler(stream: trio.SocketStream) -> None:
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
    finally:
        for client in clients:
            client.close()
        listener.close()
    # in arrival order, a batch per turn (Trio runs the tasks of one turn in either order)
    batch = server.START_BATCH
    assert set(served[:batch]) == set(ports[:batch])
    assert set(served[batch:]) == set(ports[batch:])


async def test_connections_held_when_the_server_stops_are_closed() -> None:
    listener = _listening()
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        async with trio.open_nursery() as handlers, trio.open_nursery() as acceptor:
            acceptor.start_soon(server._accept, listener, _unexpected, handlers, lambda: True)
            await trio.sleep(20 * server.SWAMPED_POLL)
            with pytest.raises(BlockingIOError):
                listener.accept()
            acceptor.cancel_scope.cancel()
        for client in clients:
            client.settimeout(5)
            assert client.recv(1) == b""  # the server's end is closed
    finally:
        for client in clients:
            client.close()
        listener.close()


async def _unexpected(stream: trio.SocketStream) -> None:
    raise AssertionError("a held connection was served")
