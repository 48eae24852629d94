"""Instructions per request, counted by valgrind's callgrind: figures the machine's speed
does not move, to compare two commits of the hot path on a machine whose speed varies.

```sh
.venv/bin/python bench/instructions.py                # 100 requests of each probe
.venv/bin/python bench/instructions.py --requests 200 --json /tmp/ir.json
```

The server (``triograph serve --storage memory`` with ``bench/langgraph.json``) runs under
``valgrind --tool=callgrind --separate-threads=yes``, about 50 times slower than natively
(start-up takes a minute or two). Each probe (``GET /ok``, ``POST /runs/wait`` and
``POST /runs/stream`` of the echo graph, stateless) sends its warm-up requests on a
keep-alive connection, then the counters are zeroed (``callgrind_control --zero``), the
measured requests sent, and the counters dumped (``--dump``): instructions per request of
the main thread (Trio's: HTTP, the run path, the supervisor) and of the others together
(the graph loop's, LangGraph's worker threads for synchronous nodes, the log writer's).
The floor is wait.py's in-process ``graph.astream`` of the same graph under callgrind:
the instructions of 30 + N runs less those of 30.

What is counted is user-space instructions only. What the kernel does for the process
(system calls, scheduling) and how fast the instructions run (caches shared with the other
threads on the core) are not in them: that is what the CPU time of ``run.py`` measures,
noisily. Two runs of one commit agree within ~2% (the server's own timers, heartbeats and
sweeps, fall in the measured window or not).

The server runs with ``PYTHONMALLOC=malloc``, as ``triograph serve`` makes itself run (it
runs itself again with it otherwise, a process valgrind would not follow).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from harness import (
    HERE,
    HOST,
    BenchError,
    free_port,
    git_state,
    machine,
    print_rows,
    serve_command,
    server,
)

ECHO_INPUT = {"msg": "hello", "n": 0}
EXPECTED = b'{"msg":"hello","n":3}'
WARMUP = 30
STARTUP_TIMEOUT = 900.0
#: (name, method, path, JSON body) of each probe
PROBES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET /ok", "GET", "/ok", None),
    ("POST /runs/wait", "POST", "/runs/wait", {"assistant_id": "echo", "input": ECHO_INPUT}),
    (
        "POST /runs/stream",
        "POST",
        "/runs/stream",
        {"assistant_id": "echo", "input": ECHO_INPUT, "stream_mode": ["values"]},
    ),
]


def request_bytes(method: str, path: str, body: dict[str, Any] | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request``, read its whole response (of known length, or chunked)."""
    sock.sendall(request)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError(f"the server closed the connection: {data[:200]!r}")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            if body.endswith(b"0\r\n\r\n"):
                return head, body
            continue
        length = re.search(rb"content-length: *(\d+)", lowered)
        if length is None:
            raise BenchError(f"a response of unknown length: {head!r}")
        if len(body) >= int(length.group(1)):
            return head, body


def check(name: str, head: bytes, body: bytes) -> None:
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"{name}: {head.splitlines()[0]!r}")
    if name != "GET /ok" and EXPECTED not in body.replace(b" ", b""):
        raise BenchError(f"{name}: unexpected body {body[:300]!r}")


def dump_totals(directory: pathlib.Path, dump: int) -> dict[int, int]:
    """Instructions of each thread in the ``dump``-th dump (callgrind numbers threads from 1,
    the main thread)."""
    totals: dict[int, int] = {}
    for path in directory.glob(f"cg.*.{dump}-*"):
        text = path.read_text(errors="replace")
        thread = re.search(r"^thread: *(\d+)", text, re.M)
        summary = re.search(r"^summary: *(\d+)", text, re.M)
        if thread and summary:
            totals[int(thread.group(1))] = int(summary.group(1))
    if not totals:
        raise BenchError(f"callgrind wrote no dump {dump} in {directory}")
    return totals


def control(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True)


def measure_server(requests: int) -> dict[str, dict[str, float]]:
    port = free_port()
    out = pathlib.Path(tempfile.mkdtemp(prefix="triograph-callgrind-"))
    valgrind = ["valgrind", "--tool=callgrind", "--separate-threads=yes"]
    cmd = [*valgrind, f"--callgrind-out-file={out}/cg.%p", *serve_command(port, "memory")]
    results: dict[str, dict[str, float]] = {}
    try:
        with (
            server(cmd, pin=False, env={"PYTHONMALLOC": "malloc"}) as proc,
            connect(proc, port) as sock,
        ):
            for dump, (name, method, path, body) in enumerate(PROBES, start=1):
                request = request_bytes(method, path, body)
                for _ in range(WARMUP):
                    check(name, *exchange(sock, request))
                control("--zero", proc.pid)
                for _ in range(requests):
                    check(name, *exchange(sock, request))
                control("--dump", proc.pid)
                totals = dump_totals(out, dump)
                main = totals.get(1, 0) / requests
                others = sum(v for k, v in totals.items() if k != 1) / requests
                results[name] = {"main": main, "others": others, "total": main + others}
                print(f"{name}: {(main + others) / 1e6:.2f} M instructions", file=sys.stderr)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return results


def connect(proc: subprocess.Popen[bytes], port: int) -> socket.socket:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited early with code {proc.returncode}")
        try:
            sock = socket.create_connection((HOST, port))
        except OSError:
            time.sleep(1.0)
            continue
        try:
            check("GET /ok", *exchange(sock, request_bytes("GET", "/ok", None)))
        except (OSError, BenchError):
            sock.close()
            time.sleep(1.0)
            continue
        return sock
    raise BenchError(f"the server was not ready after {STARTUP_TIMEOUT:.0f} s")


def floor_runs(runs: int) -> None:
    """The ``--floor-runs`` child: wait.py's in-process astream, ``WARMUP + runs`` times."""
    sys.path.insert(0, str(HERE))
    from echo import graph

    async def once() -> None:
        run_id = uuid.uuid4()
        config = {
            "configurable": {"graph_id": "echo"},
            "metadata": {"run_id": str(run_id)},
            "run_id": run_id,
            "run_name": "echo",
        }
        async for _chunk in graph.astream(dict(ECHO_INPUT), config, stream_mode=["values"]):
            pass

    async def main() -> None:
        for _ in range(WARMUP + runs):
            await once()

    asyncio.run(main())


def counted(runs: int) -> int:
    """Instructions of a ``--floor-runs`` child under callgrind."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--floor-runs",
            str(runs),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONMALLOC": "malloc"},
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise BenchError(f"no count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="measured requests per probe")
    parser.add_argument("--json", metavar="PATH", help="write the figures there as JSON")
    parser.add_argument("--floor-runs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_runs is not None:
        floor_runs(args.floor_runs)
        return 0
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is needed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        server = measure_server(args.requests)
        floor = (counted(args.requests) - counted(0)) / args.requests
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    rows = [("probe", "Trio thread M", "other threads M", "total M", "x floor")]
    for name, figures in server.items():
        rows.append(
            (
                name,
                f"{figures['main'] / 1e6:.3f}",
                f"{figures['others'] / 1e6:.3f}",
                f"{figures['total'] / 1e6:.3f}",
                f"{figures['total'] / floor:.2f}" if name != "GET /ok" else "",
            )
        )
    rows.append(("in-process astream (floor)", "", "", f"{floor / 1e6:.3f}", "1.00"))
    print("instructions per request (millions), counted by callgrind")
    print_rows(rows)
    figures = {
        "git": git_state(),
        "machine": machine(),
        "python": sys.version.split()[0],
        "requests": args.requests,
        "server": server,
        "floor": floor,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
