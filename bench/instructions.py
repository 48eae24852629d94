"""Instructions per request, counted by valgrind's callgrind: figures the machine's speed
does not move, to compare two commits of the hot path on a machine whose speed varies.

```sh
.venv/bin/python bench/instructions.py                # 100 requests of each probe
.venv/bin/python bench/instructions.py --requests 200 --json /tmp/ir.json
.venv/bin/python bench/instructions.py --probes ok,wait,stream  # those only (~8 min)
```

The server (``triograph serve --storage memory`` with ``bench/langgraph.json``) runs under
``valgrind --tool=callgrind --separate-threads=yes``, about 50 times slower than natively
(start-up takes a minute or two). Each probe (``GET /ok``; ``POST /runs/wait`` and
``POST /runs/stream`` of the echo graph, stateless; ``POST /runs/stream`` of the chat
graph, ``messages-tuple``, a reply of 99 tokens, streamed in one go and ``interleaved``,
half as many requests) sends its warm-up requests on a keep-alive connection, then the
counters are zeroed (``callgrind_control --zero``), the measured requests sent, and the
counters dumped (``--dump``): instructions per request of the main thread (Trio's: HTTP,
the run path, the supervisor) and of the others together (the graph loop's, LangGraph's
worker threads for synchronous nodes, the log writer's), and per token for the chat
probes. Each run probe's floor is its graph run in process with ``graph.astream`` as the
server runs it (wait.py's floor for the echo graph) under callgrind: the instructions of
30 + N runs less those of 30.

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
import concurrent.futures
import dataclasses
import importlib
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
from typing import Any

from harness import (
    HERE,
    HOST,
    BenchError,
    astream_as_served,
    free_port,
    git_state,
    machine,
    print_rows,
    python_build,
    serve_command,
    server,
)

from triograph.core.infra.graph_bridge import new_graph_loop

ECHO_INPUT = {"msg": "hello", "n": 0}
EXPECTED = b'{"msg":"hello","n":3}'
#: tokens of a chat probe's reply (an odd count: words and the spaces between them)
TOKENS = 99
WARMUP = 30
STARTUP_TIMEOUT = 900.0


def chat_input(interleave: bool) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "hi"}],
        "tokens": TOKENS,
        "interleave": interleave,
    }


@dataclasses.dataclass(frozen=True)
class Probe:
    #: how ``--probes`` names it
    key: str
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    #: what its response's body must hold (None: nothing checked)
    expect: bytes | None = None
    #: the graph of the in-process floor it is compared with (None: no floor)
    floor: str | None = None
    #: tokens its reply streams (figures per token too)
    tokens: int = 0
    #: measured requests, as a share of ``--requests`` (a chat run streams ~100 events)
    share: float = 1.0


def chat_probe(interleave: bool) -> Probe:
    """A stateless ``/runs/stream`` of the chat graph, ``messages-tuple``."""
    body = {"assistant_id": "chat", "input": chat_input(interleave)}
    return Probe(
        "chat-interleaved" if interleave else "chat",
        "chat tokens, interleaved" if interleave else "chat tokens",
        "POST",
        "/runs/stream",
        {**body, "stream_mode": ["messages-tuple"]},
        floor="chat-interleaved" if interleave else "chat",
        tokens=TOKENS,
        share=0.5,
    )


ECHO_RUN = {"assistant_id": "echo", "input": ECHO_INPUT}
OK = Probe("ok", "GET /ok", "GET", "/ok")
PROBES = [
    OK,
    Probe("wait", "POST /runs/wait", "POST", "/runs/wait", ECHO_RUN, expect=EXPECTED, floor="echo"),
    Probe(
        "stream",
        "POST /runs/stream",
        "POST",
        "/runs/stream",
        {**ECHO_RUN, "stream_mode": ["values"]},
        expect=EXPECTED,
        floor="echo",
    ),
    chat_probe(interleave=False),
    chat_probe(interleave=True),
]
#: what the server asks of LangGraph for each floor's graph: its input and stream mode
FLOORS: dict[str, tuple[str, dict[str, Any], str]] = {
    "echo": ("echo", ECHO_INPUT, "values"),
    "chat": ("chat", chat_input(False), "messages"),
    "chat-interleaved": ("chat", chat_input(True), "messages"),
}


#: seconds between a split request's head and its body (``exchange``)
SPLIT_PAUSE = 0.02


def request_bytes(method: str, path: str, body: dict[str, Any] | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def exchange(sock: socket.socket, request: bytes, *, split: bool = False) -> tuple[bytes, bytes]:
    """Send ``request``, read its whole response (of known length, or chunked). ``split``
    sends its head and its body as two writes :data:`SPLIT_PAUSE` seconds apart, as httpx
    (the official Python SDK's client) writes them: the server reads the head alone."""
    head_end = request.find(b"\r\n\r\n") + 4
    if split and head_end < len(request):
        sock.sendall(request[:head_end])
        time.sleep(SPLIT_PAUSE)
        sock.sendall(request[head_end:])
    else:
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


def check(probe: Probe, head: bytes, body: bytes) -> None:
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"{probe.name}: {head.splitlines()[0]!r}")
    if probe.tokens:
        if body.count(b"event: messages") < probe.tokens:
            raise BenchError(f"{probe.name}: too few tokens in {body[:300]!r}")
    elif probe.expect is not None and probe.expect not in body.replace(b" ", b""):
        raise BenchError(f"{probe.name}: unexpected body {body[:300]!r}")


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


def measure_server(probes: list[Probe], requests: int) -> dict[str, dict[str, float]]:
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
            for dump, probe in enumerate(probes, start=1):
                request = request_bytes(probe.method, probe.path, probe.body)
                count = max(1, round(requests * probe.share))
                for _ in range(WARMUP):
                    check(probe, *exchange(sock, request))
                control("--zero", proc.pid)
                for _ in range(count):
                    check(probe, *exchange(sock, request))
                control("--dump", proc.pid)
                totals = dump_totals(out, dump)
                main = totals.get(1, 0) / count
                others = sum(v for k, v in totals.items() if k != 1) / count
                results[probe.name] = {"main": main, "others": others, "total": main + others}
                print(f"{probe.name}: {(main + others) / 1e6:.2f} M instructions", file=sys.stderr)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return results


def connect(
    proc: subprocess.Popen[bytes], port: int, timeout: float = STARTUP_TIMEOUT
) -> socket.socket:
    """A keep-alive connection to the server once it answers ``GET /ok``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the server exited early with code {proc.returncode}")
        try:
            sock = socket.create_connection((HOST, port))
        except OSError:
            time.sleep(1.0)
            continue
        try:
            check(OK, *exchange(sock, request_bytes(OK.method, OK.path, OK.body)))
        except (OSError, BenchError):
            sock.close()
            time.sleep(1.0)
            continue
        return sock
    raise BenchError(f"the server was not ready after {timeout:.0f} s")


def floor_runs(runs: int, floor: str) -> None:
    """The ``--floor-runs`` child: ``floor``'s graph run in process with ``astream`` as the
    server runs it (wait.py's floor for the echo graph), ``WARMUP + runs`` times."""
    graph_id, graph_input, mode = FLOORS[floor]
    sys.path.insert(0, str(HERE))
    graph = importlib.import_module(graph_id).graph

    async def main() -> None:
        for _ in range(WARMUP + runs):
            await astream_as_served(graph, graph_id, dict(graph_input), mode)

    with asyncio.Runner(loop_factory=new_graph_loop) as runner:  # the server's graph loop
        runner.run(main())


def counted(runs: int, floor: str) -> int:
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
            "--floor",
            floor,
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


def measure_floors(probes: list[Probe], requests: int) -> dict[str, float]:
    """Instructions per run of each probe's floor: its child processes (N runs, and none)
    run side by side, one per core (what they count does not depend on it)."""
    runs = {p.floor: max(1, round(requests * p.share)) for p in probes if p.floor is not None}
    jobs = [(floor, n) for floor, count in runs.items() for n in (count, 0)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip(jobs, pool.map(lambda job: counted(job[1], job[0]), jobs), strict=True))
    return {floor: (counts[floor, n] - counts[floor, 0]) / n for floor, n in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="measured requests per probe")
    parser.add_argument("--json", metavar="PATH", help="write the figures there as JSON")
    parser.add_argument(
        "--probes",
        default=",".join(p.key for p in PROBES),
        help="the probes to run, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--floor-runs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor", default="echo", choices=sorted(FLOORS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_runs is not None:
        floor_runs(args.floor_runs, args.floor)
        return 0
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is needed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    keys = args.probes.split(",")
    if unknown := set(keys) - {p.key for p in PROBES}:
        parser.error(f"unknown probe(s) {sorted(unknown)}: choose from {[p.key for p in PROBES]}")
    probes = [p for p in PROBES if p.key in keys]
    started = time.monotonic()
    try:
        server = measure_server(probes, args.requests)
        floors = measure_floors(probes, args.requests)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    rows = [("probe", "Trio thread M", "other threads M", "total M", "x floor", "total K/token")]
    for probe in probes:
        figures = server[probe.name]
        floor = floors.get(probe.floor) if probe.floor is not None else None
        rows.append(
            (
                probe.name,
                f"{figures['main'] / 1e6:.3f}",
                f"{figures['others'] / 1e6:.3f}",
                f"{figures['total'] / 1e6:.3f}",
                f"{figures['total'] / floor:.2f}" if floor else "",
                f"{figures['total'] / probe.tokens / 1e3:.1f}" if probe.tokens else "",
            )
        )
    tokens_of = {probe.floor: probe.tokens for probe in probes if probe.floor is not None}
    for name, floor in floors.items():
        tokens = tokens_of[name]
        per_token = f"{floor / tokens / 1e3:.1f}" if tokens else ""
        rows.append(
            (f"in-process astream, {name} (floor)", "", "", f"{floor / 1e6:.3f}", "1.00", per_token)
        )
    print("instructions per request (millions), counted by callgrind")
    print_rows(rows)
    figures = {
        "git": git_state(),
        "machine": machine(),
        "python": python_build(),
        "requests": args.requests,
        "tokens": TOKENS,
        "server": server,
        "floor": floors.get("echo"),
        "floors": floors,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
