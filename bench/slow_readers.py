"""Memory after slow readers: rounds of R stateless chat streams (``messages-tuple``, a long
reply: hundreds of KB of events each) whose clients send the request, read the status line
and then nothing more.

Each client's receive buffer is set small (16 KiB) so the kernel absorbs little and the
events pile up where the server keeps them. A round waits until every run has finished
(the busy-thread count drops to zero), records the server's peak RSS, closes the sockets,
waits until the server has let the connections go, leaves it quiet for a few seconds, and
records its RSS again. Reported:
the RSS before the first round (after a warm-up), the peak and the RSS after each round,
and the last one over the first, which should be close to 1.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import orjson
from burst import _in_flight
from harness import HOST, BenchError, open_fds, proc_rss_mib, serving
from load import Connection
from tokens import body

RECEIVE_BUFFER = 16 * 1024
#: seconds the server is left quiet before its RSS is read again: it gives memory back to
#: the system at its first sweep (every 5 s) that finds no run in flight
QUIET_S = 6.0


async def _open_silent(port: int, request: bytes) -> socket.socket:
    """A connection that sends ``request``, reads the first bytes of the answer (so the run
    exists) and then nothing more."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.setblocking(False)
    await loop.sock_connect(sock, (HOST, port))
    await loop.sock_sendall(sock, request)
    if not (await loop.sock_recv(sock, 12)).startswith(b"HTTP/1.1 200"):
        raise BenchError("slow readers: a stream was refused")
    return sock


async def _settle(watcher: Connection, pid: int, fds: int, limit_s: float) -> None:
    """Wait until no run is in flight and the server holds no more descriptors than ``fds``."""
    deadline = time.monotonic() + limit_s
    while await _in_flight(watcher) or open_fds(pid) > fds:
        if time.monotonic() > deadline:
            raise BenchError("slow readers: the server did not settle")
        await asyncio.sleep(0.1)


async def _rounds(base: str, pid: int, plan: dict[str, Any]) -> dict[str, Any]:
    port = int(base.rsplit(":", 1)[1])
    readers, rounds, tokens = plan["slow_readers"], plan["slow_rounds"], plan["slow_tokens"]
    data = orjson.dumps(body(tokens))
    request = (
        b"POST /runs/stream HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    watcher = await Connection.open(HOST, port)
    try:
        warm = await watcher.request("POST", "/runs/stream", body(tokens), keep_body=False)
        if warm.status != 200:
            raise BenchError(f"slow readers: warm-up stream -> {warm.status}")
        fds = open_fds(pid)
        await asyncio.sleep(1.0)
        baseline = proc_rss_mib(pid)
        figures: dict[str, Any] = {"readers": readers, "tokens_per_run": tokens}
        figures["rss_baseline_mib"] = baseline
        for n in range(1, rounds + 1):
            socks = await asyncio.gather(*(_open_silent(port, request) for _ in range(readers)))
            peak = proc_rss_mib(pid)
            deadline = time.monotonic() + plan["slow_timeout"]
            while await _in_flight(watcher):
                peak = max(peak, proc_rss_mib(pid))
                if time.monotonic() > deadline:
                    raise BenchError("slow readers: runs did not finish")
                await asyncio.sleep(0.1)
            peak = max(peak, proc_rss_mib(pid))
            for sock in socks:
                sock.close()
            await _settle(watcher, pid, fds, plan["slow_timeout"])
            await asyncio.sleep(QUIET_S)
            figures[f"round{n}_peak_mib"] = peak
            figures[f"round{n}_after_mib"] = proc_rss_mib(pid)
        figures["rss_after_mib"] = figures[f"round{rounds}_after_mib"]
        figures["after_over_baseline"] = figures["rss_after_mib"] / baseline
        return figures
    finally:
        watcher.close()


def run(plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    with serving("memory", pin) as (base, watched, _):
        return asyncio.run(_rounds(base, watched.server, plan))
