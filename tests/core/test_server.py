"""The accept loop of ``triograph.core.http.server``: a burst of connections is taken from
the kernel's queue at once, not one per turn of the scheduler."""

from __future__ import annotations

import socket

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
                acceptor.start_soon(server._accept, listener, handler, handlers)
                await all_served.wait()
                acceptor.cancel_scope.cancel()
    finally:
        for client in clients:
            client.close()
        listener.close()
    # the first connection served found all 50 accepted already (Hypercorn's own loop,
    # trio.serve_listeners, accepts one per turn: the first found 1)
    assert accepted_by_then[0] == 50
