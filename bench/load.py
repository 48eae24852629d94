"""A small HTTP/1.1 client for load generation: thousands of connections from one core.

httpx costs the client ~3x the CPU per request that the server under test spends at high
concurrency, and tens of KB per connection; this one is a plain asyncio stream per
connection that writes a request, reads the head, and reads the body (``Content-Length`` or
chunked) while counting SSE events, so one pinned core can drive 10,000 streams. It is a
measuring tool, not a general client: no TLS, no redirects, no compression.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import orjson


@dataclasses.dataclass
class Reply:
    """What a client saw of one response; times are ``time.perf_counter()`` values."""

    status: int = 0
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    #: the head arrived / the first SSE event / the first one named ``count_name`` / the
    #: body ended
    head_at: float | None = None
    first_event_at: float | None = None
    first_counted_at: float | None = None
    end_at: float | None = None
    #: SSE events seen, and those whose name is ``count_name``
    events: int = 0
    counted: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status == 200 and self.end_at is not None


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it go one after the other."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    def close(self) -> None:
        self.writer.close()

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        keep_body: bool = True,
        count_name: bytes | None = None,
        on_event: Callable[[Reply], None] | None = None,
        read_body: bool = True,
    ) -> Reply:
        """Send one request and read its response. For an SSE body, ``events`` counts the
        frames and ``counted`` those named ``count_name``; ``on_event`` is called once with
        the reply when the first event arrives. ``read_body=False`` returns after the head
        (the connection is then unusable for another request)."""
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        reply = Reply()
        self.writer.write(head + payload)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        reply.head_at = time.perf_counter()
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        reply.status = int(status_line.split(" ", 2)[1])
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                reply.headers[name.strip().lower()] = value.strip()
        if not read_body:
            return reply
        sse = _SseCounter(reply, count_name, on_event)
        parts: list[bytes] = []
        if reply.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = (await self.reader.readexactly(size + 2))[:-2]
                sse.feed(data)
                if keep_body:
                    parts.append(data)
        else:
            data = await self.reader.readexactly(int(reply.headers.get("content-length", "0")))
            sse.feed(data)
            parts.append(data)
        reply.end_at = time.perf_counter()
        reply.body = b"".join(parts)
        return reply


class _SseCounter:
    """Counts ``event: `` lines as body bytes arrive; a line may straddle two chunks, so the
    end of each chunk, too short to hold a whole match, is carried over to the next."""

    MARK = b"event: "

    def __init__(
        self, reply: Reply, count_name: bytes | None, on_event: Callable[[Reply], None] | None
    ) -> None:
        self.reply, self.on_event = reply, on_event
        self.named = self.MARK + count_name + b"\r" if count_name is not None else None
        self.tail = self.named_tail = b""

    def feed(self, data: bytes) -> None:
        text = self.tail + data
        events = text.count(self.MARK)
        self.tail = text[-(len(self.MARK) - 1) :]
        if events and self.reply.first_event_at is None:
            self.reply.first_event_at = time.perf_counter()
            if self.on_event is not None:
                self.on_event(self.reply)
        self.reply.events += events
        if self.named is not None:
            text = self.named_tail + data
            counted = text.count(self.named)
            if counted and self.reply.first_counted_at is None:
                self.reply.first_counted_at = time.perf_counter()
            self.reply.counted += counted
            self.named_tail = text[-(len(self.named) - 1) :]


async def one_request(
    host: str, port: int, method: str, path: str, body: object = None, **kwargs: object
) -> Reply:
    """One request on a connection of its own; errors are reported in the reply."""
    reply = Reply()
    try:
        conn = await Connection.open(host, port)
    except OSError as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
        return reply
    try:
        return await conn.request(method, path, body, **kwargs)  # type: ignore[arg-type]
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
        return reply
    finally:
        conn.close()
