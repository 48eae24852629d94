"""A connection's socket as Hypercorn's ``TCPServer`` uses it, in fewer layers than Trio's.

``trio.SocketStream`` reads and writes through four layers of coroutines and context
managers (the stream, its conflict detector and error translation, Trio's socket wrapper,
its non-blocking helper), ~1 KiB of frames held for as long as a read waits: an open
stream's whole life, ten thousand of them in bench ``streams``. And every read or write that
did not have to wait still yields a turn of the scheduler after it (Trio's rule that every
``await`` of its I/O is a schedule point), two more turns in each small request's path.
:class:`SocketStream` calls the non-blocking stdlib socket directly and waits for it with
``trio.lowlevel.wait_readable``/``wait_writable`` only when it would block. A connection's
reader or writer that never has to wait still lets the others run: it yields every
:data:`YIELD_EVERY` operations that did not.

It sets what ``trio.SocketStream`` sets on a TCP connection (``TCP_NODELAY``, and
``TCP_NOTSENT_LOWAT`` at 16 KiB where the platform has it: a slow reader's data waits in the
app, not in the kernel) and raises Trio's stream errors: ``trio.ClosedResourceError`` once
it is closed (a read waiting meanwhile gets it too, by ``trio.lowlevel.notify_closing``),
``trio.BrokenResourceError`` for any other failure of the socket.
"""

from __future__ import annotations

import contextlib
import errno
import socket as stdlib_socket

import trio

#: operations in a row that did not have to wait, after which one yields a turn
YIELD_EVERY = 8
#: bytes of unsent data the kernel queues at most (``TCP_NOTSENT_LOWAT``, as Trio sets it)
NOTSENT_LOWAT = 2**14


def _error(exc: OSError) -> trio.ClosedResourceError | trio.BrokenResourceError:
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class SocketStream:
    """A connected TCP socket: ``receive_some``, ``send_all``, ``send_eof`` and ``aclose`` of a
    ``trio.abc.HalfCloseableStream``, for one reading and one writing task at a time (the
    connection's reader, and whoever holds its send lock)."""

    __slots__ = ("_shut", "_unwaited", "socket")

    def __init__(self, sock: stdlib_socket.socket) -> None:
        sock.setblocking(False)
        self.socket = sock
        self._shut = False
        #: operations in a row that did not wait (see :data:`YIELD_EVERY`)
        self._unwaited = 0
        with contextlib.suppress(OSError):
            sock.setsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_NODELAY, True)
        if hasattr(stdlib_socket, "TCP_NOTSENT_LOWAT"):
            with contextlib.suppress(OSError):
                lowat = stdlib_socket.TCP_NOTSENT_LOWAT
                sock.setsockopt(stdlib_socket.IPPROTO_TCP, lowat, NOTSENT_LOWAT)

    async def _pace(self) -> None:
        """One more operation that did not wait: every YIELD_EVERY, a turn for the others."""
        self._unwaited += 1
        if self._unwaited >= YIELD_EVERY:
            self._unwaited = 0
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_some(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes the peer sent; ``b""`` once it has shut its end."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sock = self.socket
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                pass
            except OSError as exc:
                raise _error(exc) from exc
            else:
                await self._pace()
                return data
            self._unwaited = 0
            await trio.lowlevel.wait_readable(sock)  # open: recv would have failed otherwise

    async def send_all(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the kernel's buffer is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.send_rest(data, self.send_now(data))

    def send_now(self, data: bytes) -> int:
        """Send what of ``data`` the kernel takes now, without waiting: how many bytes. A
        writer that must not be cut off halfway (a cancel would leave a frame half sent)
        needs to shield only :meth:`send_rest`, when there is a rest: a small write almost
        always goes out whole here (a cancel scope costs ~50 calls into Trio)."""
        if self._shut:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise _error(exc) from exc

    async def send_rest(self, data: bytes, sent: int) -> None:
        """Send ``data`` from byte ``sent`` on (what :meth:`send_now` did not), waiting while
        the kernel's buffer is full; then count the operation (see :data:`YIELD_EVERY`)."""
        if sent < len(data):
            sock = self.socket
            with memoryview(data) as view:
                while True:
                    self._unwaited = 0
                    await trio.lowlevel.wait_writable(sock)
                    try:
                        sent += sock.send(view[sent:])
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        raise _error(exc) from exc
                    if sent >= len(view):
                        break
        await self._pace()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()
        if self._shut:
            return
        self._shut = True
        try:
            self.socket.shutdown(stdlib_socket.SHUT_WR)
        except OSError as exc:
            raise _error(exc) from exc

    def close(self) -> None:
        """Close the socket now (idempotent); a read or write waiting on it is woken with
        ``trio.ClosedResourceError``."""
        if self.socket.fileno() != -1:
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
