"""Benchmark triograph's stateless ``POST /runs/wait`` on a 3-node echo graph.

Starts ``triograph serve`` on 127.0.0.1 (a free port) pinned to core 0, drives it from this
process pinned to core 1, and measures latency at concurrency 1, throughput at concurrency
64, the server's CPU time per run (utime + stime from ``/proc/<pid>/stat``, the server's
whole process tree), the same two loads on ``GET /ok`` (the HTTP stack alone), and the
in-process floor (the same graph run with ``graph.ainvoke``, and with ``astream`` as the
server runs it). Prints a table, then the figures as JSON on the last line of stdout.
Bounded in requests and time; the server is killed on exit, also on error.

``--backends`` instead measures the runs' cost on each storage backend side by side: memory,
a ``file:`` database in a temporary directory and, given ``--postgres URL``, a fresh
database on that Postgres server (dropped at the end).

``--scale-out URL`` measures the throughput of the runs at concurrency 64 with
``triograph serve --workers 1`` and then ``--workers 2`` on fresh databases of the Postgres
server ``URL`` names, nothing pinned (the workers, the database and this process share
every core), and the ratio of the two.

    /tmp/v13/bin/python bench/run.py [--quick] [--storage SPEC]
    /tmp/v13/bin/python bench/run.py --backends [--quick] [--postgres URL]
    /tmp/v13/bin/python bench/run.py --scale-out URL [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import psycopg

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE / "langgraph.json"
HOST = "127.0.0.1"
SERVER_CORE = 0
CLIENT_CORE = 1
GRAPH_ID = "echo"
BODY = {"assistant_id": GRAPH_ID, "input": {"msg": "hello", "n": 0}}
EXPECTED = {"msg": "hello", "n": 3}
#: (method, path, JSON body) of the requests of a phase: a run, and the HTTP stack alone
RUN = ("POST", "/runs/wait", BODY)
OK = ("GET", "/ok", None)
Probe = tuple[str, str, dict[str, Any] | None]

#: budgets from the issue (informational), and the official server's figures for comparison
BUDGET_P50_MS = 5.0
BUDGET_CPU_MS = 2.5
OFFICIAL = "official server: ~1 s p50 at concurrency 1, ~6 ms server CPU per run"

FULL = {"c1_warmup": 50, "c1": 500, "cN_warmup": 200, "cN": 3000, "floor_warmup": 100}
FULL |= {"floor": 2000, "deadline": 600.0}
QUICK = {"c1_warmup": 20, "c1": 200, "cN_warmup": 64, "cN": 500, "floor_warmup": 20}
QUICK |= {"floor": 300, "deadline": 120.0}

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# -- helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after "pid (comm)": field N of stat(5) is [N - 3]."""
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def proc_children(pid: int) -> list[int]:
    children: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            children += map(int, (task / "children").read_text().split())
    return children


def tree_cpu_seconds(pid: int) -> float:
    """CPU of a process and all its descendants, in seconds: utime + stime (all threads) and
    cutime + cstime (the children it has reaped) of each, so a server with worker processes,
    or a database server with a process per connection, is measured whole."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):  # gone meanwhile: its parent has its time
            fields = proc_stat(current)
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            todo += proc_children(current)
    return total / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_affinities(pid: int) -> set[str]:
    """The ``Cpus_allowed_list`` of every thread of ``pid`` (to check the pinning held)."""
    out = set()
    for task in pathlib.Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    out.add(line.split(":", 1)[1].strip())
    return out


def cpu_busy_seconds() -> dict[int, float]:
    """Busy time of each CPU since boot, from ``/proc/stat``: user, system and steal time of
    all processes (irq and softirq left out: loopback traffic is processed there)."""
    busy = {}
    for line in pathlib.Path("/proc/stat").read_text().splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name != "cpu":
            user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, ticks[:8])
            busy[int(name[3:])] = (user + nice + system + steal) / CLK_TCK
    return busy


@dataclasses.dataclass(frozen=True)
class Watched:
    """The processes whose CPU a phase measures: the server (its whole process tree) and,
    when it runs on this machine, the database server the storage uses (its whole tree: every
    client's connections, not only the server's)."""

    server: int
    database: int | None = None


class Meter:
    """A snapshot of wall time, server and database CPU, this process's CPU and every core's
    busy time."""

    def __init__(self, watched: Watched) -> None:
        self.wall = time.perf_counter()
        self.server = tree_cpu_seconds(watched.server)
        self.database = tree_cpu_seconds(watched.database) if watched.database else None
        self.client = time.process_time()
        self.cores = cpu_busy_seconds()

    def since(self, before: Meter, runs: int) -> dict[str, Any]:
        wall = self.wall - before.wall
        server, client = self.server - before.server, self.client - before.client
        database = (self.database or 0.0) - (before.database or 0.0)
        cores = {c: self.cores[c] - before.cores.get(c, 0.0) for c in self.cores}
        # CPU used on the two cores by processes other than the server, its database and this
        # one: anything well above zero means the machine was not quiet and wall-clock figures
        # suffer (the database is not pinned: on more than two cores it may run elsewhere)
        foreign = cores.get(SERVER_CORE, 0.0) + cores.get(CLIENT_CORE, 0.0) - server - client
        figures = {
            "requests": runs,
            "wall_s": wall,
            "runs_per_s": runs / wall,
            "server_cpu_ms_per_run": server * 1000 / runs,
            "server_cpu_util": server / wall,
            "client_cpu_ms_per_run": client * 1000 / runs,
            "client_cpu_util": client / wall,
            "foreign_cpu_util": max(0.0, (foreign - database) / wall),
        }
        if self.database is not None:
            figures["database_cpu_ms_per_run"] = database * 1000 / runs
        return figures


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds."""
    if not samples_s:
        return {}
    ms = sorted(s * 1000 for s in samples_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(ms),
        "max_ms": ms[-1],
    }


def check_response(response: httpx.Response, probe: Probe = RUN) -> None:
    method, path, _ = probe
    if response.status_code != 200:
        raise BenchError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
    if probe is RUN and (body := response.json()) != EXPECTED:
        raise BenchError(f"unexpected {path} body: {body!r}")


def remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BenchError("benchmark deadline exceeded")
    return left


def git_state() -> str:
    """The checkout being measured: short commit, ``+dirty`` if core files are modified."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE.parent, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "core", "plugins", "storage"],
            cwd=HERE.parent,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


# -- the server -------------------------------------------------------------------------------


def _pin_child() -> None:  # runs in the child between fork and exec: every thread inherits
    os.sched_setaffinity(0, {SERVER_CORE})


def serve_command(port: int, storage: str, workers: int = 1) -> list[str]:
    """The ``triograph serve`` command line of the server under test."""
    cmd = [sys.executable, "-m", "triograph.core.http.cli", "serve", "--config", str(CONFIG)]
    cmd += ["--host", HOST, "--port", str(port), "--storage", storage]
    return [*cmd, "--workers", str(workers)] if workers > 1 else cmd


@contextlib.contextmanager
def server(cmd: list[str], pin: bool) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="triograph-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=HERE,
        preexec_fn=_pin_child if pin else None,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    except BaseException:
        log.flush()
        tail = pathlib.Path(log.name).read_text(errors="replace").splitlines()[-20:]
        print("--- server log (tail) ---", *tail, "---", sep="\n", file=sys.stderr)
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        os.unlink(log.name)


def wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"server exited early with code {proc.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if client.get("/ok").status_code == 200:
                    return
            time.sleep(0.05)
    raise BenchError(f"server not ready after {timeout:.0f} s")


# -- the phases -------------------------------------------------------------------------------


def phase_serial(
    base: str, watched: Watched, warmup: int, count: int, deadline: float, probe: Probe = RUN
) -> dict[str, Any]:
    """Concurrency 1: one keep-alive connection, one request after the other."""
    method, path, body = probe
    samples: list[float] = []
    with httpx.Client(base_url=base, timeout=30.0) as client:
        for _ in range(warmup):
            check_response(client.request(method, path, json=body), probe)
        before = Meter(watched)
        for _ in range(count):
            remaining(deadline)
            start = time.perf_counter()
            response = client.request(method, path, json=body)
            samples.append(time.perf_counter() - start)
            check_response(response, probe)
        after = Meter(watched)
    return {"concurrency": 1, **after.since(before, count), **percentiles(samples)}


async def _concurrent(
    base: str,
    watched: Watched,
    concurrency: int,
    warmup: int,
    count: int,
    deadline: float,
    probe: Probe,
) -> dict[str, Any]:
    method, path, body = probe
    # one keep-alive client (one connection) per worker: a single shared httpx pool of 64
    # connections costs the client ~3x more CPU per request and becomes the bottleneck
    clients = [httpx.AsyncClient(base_url=base, timeout=60.0) for _ in range(concurrency)]

    async def drive(total: int, samples: list[float]) -> None:
        left = total

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                remaining(deadline)
                start = time.perf_counter()
                response = await client.request(method, path, json=body)
                samples.append(time.perf_counter() - start)
                check_response(response, probe)

        async with asyncio.TaskGroup() as tg:
            for client in clients:
                tg.create_task(worker(client))

    try:
        await drive(max(warmup, concurrency), [])  # opens the connections
        samples: list[float] = []
        before = Meter(watched)
        await asyncio.wait_for(drive(count, samples), timeout=remaining(deadline))
        after = Meter(watched)
    finally:
        for client in clients:
            await client.aclose()
    return {"concurrency": concurrency, **after.since(before, count), **percentiles(samples)}


def phase_concurrent(
    base: str,
    watched: Watched,
    concurrency: int,
    warmup: int,
    count: int,
    deadline: float,
    probe: Probe = RUN,
) -> dict[str, Any]:
    """Concurrency N: N workers, each with its own keep-alive connection."""
    try:
        return asyncio.run(_concurrent(base, watched, concurrency, warmup, count, deadline, probe))
    except* BenchError as group:
        raise group.exceptions[0] from None
    except* TimeoutError:
        raise BenchError("benchmark deadline exceeded") from None


async def _floor(warmup: int, count: int, as_served: bool) -> dict[str, Any]:
    sys.path.insert(0, str(HERE))
    try:
        from echo import graph
    finally:
        sys.path.remove(str(HERE))
    inp = BODY["input"]
    if as_served:
        # what the server asks of LangGraph for a stateless run: astream of the "values" mode
        # with a run id and metadata, no checkpointer (temporary runs get none)

        async def once() -> Any:
            run_id = uuid.uuid4()
            config = {
                "configurable": {"graph_id": GRAPH_ID},
                "metadata": {"run_id": str(run_id)},
                "run_id": run_id,
                "run_name": GRAPH_ID,
            }
            last = None
            async for _mode, chunk in graph.astream(inp, config, stream_mode=["values"]):
                last = chunk
            return last
    else:

        async def once() -> Any:
            return await graph.ainvoke(inp)

    for _ in range(warmup):
        if await once() != EXPECTED:
            raise BenchError("in-process echo graph returned an unexpected state")
    samples: list[float] = []
    core0 = cpu_busy_seconds().get(CLIENT_CORE, 0.0)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(count):
        start = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - start)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    foreign = cpu_busy_seconds().get(CLIENT_CORE, 0.0) - core0 - cpu
    return {
        "runs": count,
        "wall_s": wall,
        "runs_per_s": count / wall,
        "cpu_ms_per_run": cpu * 1000 / count,
        "foreign_cpu_util": max(0.0, foreign / wall),
        **percentiles(samples),
    }


def phase_floor(warmup: int, count: int, as_served: bool) -> dict[str, Any]:
    return asyncio.run(_floor(warmup, count, as_served))


# -- report -----------------------------------------------------------------------------------


def verdict(value: float, budget: float) -> str:
    return "PASS" if value <= budget else "FAIL"


def _row(name: str, f: dict[str, Any]) -> tuple[str, ...]:
    http = "requests" in f
    return (
        name,
        str(f["requests"] if http else f["runs"]),
        f"{f['runs_per_s']:.0f}",
        f"{f['p50_ms']:.2f}",
        f"{f['p90_ms']:.2f}",
        f"{f['p99_ms']:.2f}",
        f"{f['server_cpu_ms_per_run'] if http else f['cpu_ms_per_run']:.2f}",
        f"{f['client_cpu_ms_per_run']:.2f}" if http else "-",
    )


def print_rows(rows: Sequence[tuple[str, ...]]) -> None:
    """A table: the first row is the header, the first column left-aligned."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        cells = [
            str(c).ljust(w) if j == 0 else str(c).rjust(w)
            for j, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()


def print_table(results: dict[str, Any]) -> None:
    c1, cn = results["serial"], results["concurrent"]
    floor, floor_as = results["floor_ainvoke"], results["floor_astream"]
    ok1, okn = results["ok_serial"], results["ok_concurrent"]
    n = cn["concurrency"]
    rows = [
        ("phase", "count", "per s", "p50 ms", "p90 ms", "p99 ms", "server CPU ms", "client CPU ms"),
        _row("POST /runs/wait c=1", c1),
        _row(f"POST /runs/wait c={n}", cn),
        _row("in-process ainvoke", floor),
        _row("in-process astream", floor_as),
        _row("GET /ok c=1 (HTTP only)", ok1),
        _row(f"GET /ok c={n} (HTTP only)", okn),
    ]
    print_rows(rows)
    for label, value, budget in results["budgets"]:
        print(f"{label:<40} {value:7.2f} ms  (budget {budget} ms)  {verdict(value, budget)}")
    print(
        f"server CPU over the in-process astream floor: c=1 "
        f"{c1['server_cpu_ms_per_run'] - floor_as['cpu_ms_per_run']:.2f} ms/run, c={n} "
        f"{cn['server_cpu_ms_per_run'] - floor_as['cpu_ms_per_run']:.2f} ms/run "
        f"(HTTP stack alone, GET /ok: {ok1['server_cpu_ms_per_run']:.2f} and "
        f"{okn['server_cpu_ms_per_run']:.2f} ms/request)"
    )
    print(
        f"CPU utilisation at c={n}: server {cn['server_cpu_util']:.0%} of core {SERVER_CORE}, "
        f"client {cn['client_cpu_util']:.0%} of core {CLIENT_CORE}"
    )
    if "database_cpu_ms_per_run" in c1:
        print(
            f"database server CPU per run: c=1 {c1['database_cpu_ms_per_run']:.2f} ms, "
            f"c={n} {cn['database_cpu_ms_per_run']:.2f} ms (the whole server: other clients too)"
        )
    phases = {"c=1": c1, f"c={n}": cn, "ainvoke": floor, "astream": floor_as, "/ok": okn}
    warn_if_busy({name: f["foreign_cpu_util"] for name, f in phases.items()})
    print(
        f"server RSS after the run: {results['server_rss_mib']:.0f} MiB; "
        f"server threads pinned to CPUs {results['server_affinity']}"
    )
    print(f"checkout {results['git']}, Python {results['python']}; {OFFICIAL}")


def warn_if_busy(foreign: dict[str, float]) -> None:
    print(
        "CPU used by other processes on the bench cores (should be ~0%): "
        + ", ".join(f"{name} {value:.0%}" for name, value in foreign.items())
    )
    if max(foreign.values()) > 0.1:
        print("WARNING: the machine was not quiet; wall-clock figures are pessimistic")


def _ms(f: dict[str, Any], key: str) -> str:
    return f"{f[key]:.2f}" if key in f else "-"


def print_backends(results: dict[str, Any]) -> None:
    backends: dict[str, Any] = results["backends"]
    n = results["concurrency"]
    rows = [
        (
            "backend",
            "c=1 p50 ms",
            "c=1 server CPU ms",
            "c=1 DB CPU ms",
            f"c={n} per s",
            f"c={n} p50 ms",
            f"c={n} server CPU ms",
            f"c={n} DB CPU ms",
            "RSS MiB",
        )
    ]
    for name, f in backends.items():
        c1, cn = f["serial"], f["concurrent"]
        rows.append(
            (
                name,
                f"{c1['p50_ms']:.2f}",
                f"{c1['server_cpu_ms_per_run']:.2f}",
                _ms(c1, "database_cpu_ms_per_run"),
                f"{cn['runs_per_s']:.0f}",
                f"{cn['p50_ms']:.2f}",
                f"{cn['server_cpu_ms_per_run']:.2f}",
                _ms(cn, "database_cpu_ms_per_run"),
                f"{f['server_rss_mib']:.0f}",
            )
        )
    print_rows(rows)
    memory = backends["memory"]["serial"]
    for name, f in backends.items():
        if name == "memory":
            continue
        c1 = f["serial"]
        extra = c1["server_cpu_ms_per_run"] - memory["server_cpu_ms_per_run"]
        with_db = ""
        if "database_cpu_ms_per_run" in c1:
            with_db = f" (+{extra + c1['database_cpu_ms_per_run']:.2f} ms with the database)"
        print(
            f"{name} over memory at c=1: +{extra:.2f} ms server CPU per run{with_db}, "
            f"p50 x{c1['p50_ms'] / memory['p50_ms']:.1f}"
        )
    print(
        "DB CPU: the whole local Postgres server (other clients too), "
        "- when it is not on this machine; the file backend's SQLite is in the server's CPU"
    )
    warn_if_busy(
        {
            f"{name} {phase}": f[key]["foreign_cpu_util"]
            for name, f in backends.items()
            for phase, key in (("c=1", "serial"), (f"c={n}", "concurrent"))
        }
    )
    print(f"checkout {results['git']}, Python {results['python']}")


# -- storage ----------------------------------------------------------------------------------


def is_postgres(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new empty database on the server ``admin_url`` names, as a URL; dropped at the end."""
    name = f"triograph_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urllib.parse.urlsplit(admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def local_postgres_pid(url: str) -> int | None:
    """The postmaster of the Postgres server ``url`` names, if it runs on this machine (in
    this process namespace): the parent of our connection's backend, both ``postgres``."""
    with psycopg.connect(url) as conn:  # the backend exits with the connection: look now
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = int(row[0])
        try:
            postmaster = int(proc_stat(backend)[1])  # field 4 of stat(5): the parent
            comms = {
                pathlib.Path(f"/proc/{p}/comm").read_text().strip() for p in (backend, postmaster)
            }
        except OSError:
            return None
    return postmaster if comms == {"postgres"} else None


# -- main -------------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(
    storage: str, pin: bool, workers: int = 1
) -> Iterator[tuple[str, Watched, subprocess.Popen[bytes]]]:
    """A ready server on ``storage``: its base URL, the processes to measure, the process."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    database = local_postgres_pid(storage) if is_postgres(storage) else None
    with server(serve_command(port, storage, workers), pin) as proc:
        wait_ready(proc, base)
        print(f"server pid {proc.pid} on {base}", file=sys.stderr)
        yield base, Watched(proc.pid, database), proc


def bench_server(args: argparse.Namespace, plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    """The default run: both loads on runs and on ``GET /ok``, then the in-process floor."""
    deadline = time.monotonic() + plan["deadline"]
    n = args.concurrency
    results: dict[str, Any] = {}
    with serving(args.storage, pin) as (base, watched, proc):
        results["server_affinity"] = ",".join(sorted(thread_affinities(proc.pid)))
        print("phase: concurrency 1 ...", file=sys.stderr)
        results["serial"] = phase_serial(base, watched, plan["c1_warmup"], plan["c1"], deadline)
        print(f"phase: concurrency {n} ...", file=sys.stderr)
        results["concurrent"] = phase_concurrent(
            base, watched, n, plan["cN_warmup"], plan["cN"], deadline
        )
        print("phase: HTTP stack alone (GET /ok) ...", file=sys.stderr)
        results["ok_serial"] = phase_serial(
            base, watched, plan["c1_warmup"], plan["c1"], deadline, OK
        )
        results["ok_concurrent"] = phase_concurrent(
            base, watched, n, plan["cN_warmup"], plan["cN"], deadline, OK
        )
        results["server_rss_mib"] = proc_rss_mib(proc.pid)
        results["server_affinity"] = ",".join(sorted(thread_affinities(proc.pid)))
    print("phase: in-process floor ...", file=sys.stderr)
    results["floor_ainvoke"] = phase_floor(plan["floor_warmup"], plan["floor"], False)
    remaining(deadline)
    results["floor_astream"] = phase_floor(plan["floor_warmup"], plan["floor"], True)
    results["budgets"] = [
        ("p50 latency, concurrency 1", results["serial"]["p50_ms"], BUDGET_P50_MS),
        (
            "server CPU per run, concurrency 1",
            results["serial"]["server_cpu_ms_per_run"],
            BUDGET_CPU_MS,
        ),
        (
            f"server CPU per run, concurrency {n}",
            results["concurrent"]["server_cpu_ms_per_run"],
            BUDGET_CPU_MS,
        ),
    ]
    return results


def bench_backends(
    args: argparse.Namespace, plan: dict[str, Any], pin: bool
) -> dict[str, dict[str, Any]]:
    """Both loads on runs against a server on each backend in turn, each in its own time
    budget: memory, a new ``file:`` database, a new database on ``--postgres`` if given."""
    figures: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        tmp = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="triograph-")))
        specs = {"memory": "memory", "file": f"file:{tmp / 'bench.sqlite'}"}
        if args.postgres:
            specs["postgres"] = stack.enter_context(fresh_postgres_database(args.postgres))
        for name, spec in specs.items():
            deadline = time.monotonic() + plan["deadline"]
            print(f"backend {name} ...", file=sys.stderr)
            with serving(spec, pin) as (base, watched, proc):
                serial = phase_serial(base, watched, plan["c1_warmup"], plan["c1"], deadline)
                concurrent = phase_concurrent(
                    base, watched, args.concurrency, plan["cN_warmup"], plan["cN"], deadline
                )
                rss = proc_rss_mib(proc.pid)
            figures[name] = {"serial": serial, "concurrent": concurrent, "server_rss_mib": rss}
    return figures


def bench_scale_out(args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    """The load phase with one worker process, then two, each on a fresh Postgres database."""
    figures: dict[str, Any] = {}
    for workers in (1, 2):
        deadline = time.monotonic() + plan["deadline"]
        print(f"workers {workers} ...", file=sys.stderr)
        with (
            fresh_postgres_database(args.scale_out) as url,
            serving(url, False, workers) as (base, watched, _),
        ):
            figures[f"workers_{workers}"] = phase_concurrent(
                base, watched, args.concurrency, plan["cN_warmup"], plan["cN"], deadline
            )
    one, two = figures["workers_1"]["runs_per_s"], figures["workers_2"]["runs_per_s"]
    figures["ratio"] = two / one
    return figures


def print_scale_out(results: dict[str, Any]) -> None:
    rows = [("workers", "runs/s", "server CPU ms/run", "DB CPU ms/run", "p50 ms")]
    for workers in (1, 2):
        f = results["scale_out"][f"workers_{workers}"]
        rows.append(
            (
                str(workers),
                f"{f['runs_per_s']:.0f}",
                f"{f['server_cpu_ms_per_run']:.2f}",
                _ms(f, "database_cpu_ms_per_run"),
                f"{f['p50_ms']:.1f}",
            )
        )
    print_rows(rows)
    print(f"throughput ratio, 2 workers / 1: {results['scale_out']['ratio']:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer requests)")
    parser.add_argument("--concurrency", type=int, default=64, help="clients of the load phase")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--storage", default="memory", metavar="SPEC", help="the server's --storage (memory)"
    )
    which.add_argument(
        "--scale-out",
        metavar="URL",
        help="throughput with 1 and 2 worker processes on fresh databases of this Postgres "
        "server (postgresql://...)",
    )
    which.add_argument(
        "--backends",
        action="store_true",
        help="the runs' cost on each storage backend: memory, file, postgres (with --postgres)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="with --backends: a postgresql:// database on a server where a fresh database "
        "is created for the run (and dropped)",
    )
    args = parser.parse_args(argv)
    if args.postgres is not None and not (args.backends and is_postgres(args.postgres)):
        parser.error("--postgres takes a postgresql:// URL, and goes with --backends")
    plan = QUICK if args.quick else FULL

    pin = len(os.sched_getaffinity(0)) >= 2 and (os.cpu_count() or 1) >= 2
    if args.scale_out is not None:
        if not is_postgres(args.scale_out):
            parser.error("--scale-out takes a postgresql:// URL")
        pin = False  # the workers need every core
    elif pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # before any thread exists: all inherit
    else:
        print("warning: fewer than 2 CPUs available, not pinning", file=sys.stderr)

    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "pinned": pin}
    results |= {"git": git_state(), "python": sys.version.split()[0]}
    try:
        if args.scale_out is not None:
            results |= {"concurrency": args.concurrency, "scale_out": bench_scale_out(args, plan)}
        elif args.backends:
            results |= {
                "concurrency": args.concurrency,
                "backends": bench_backends(args, plan, pin),
            }
        else:
            results |= {"storage": args.storage} | bench_server(args, plan, pin)
    except (BenchError, psycopg.Error) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1

    if args.scale_out is not None:
        print_scale_out(results)
    elif args.backends:
        print_backends(results)
    else:
        print_table(results)
        results["budgets"] = [
            {
                "what": label,
                "value_ms": value,
                "budget_ms": budget,
                "verdict": verdict(value, budget),
            }
            for label, value, budget in results["budgets"]
        ]
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
