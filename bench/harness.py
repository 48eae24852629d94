"""What every benchmark scenario shares: the server under test, pinning, and the meters.

The server is ``triograph serve`` in its own process on 127.0.0.1 (a free port), pinned to
core 0 with every thread it starts; the load generator (the benchmark process) is pinned
to core 1. CPU is read from ``/proc``: utime + stime of the server's whole process tree
(its threads, and the children it has reaped), so a figure is the server's own work however
busy the machine is; wall-clock figures are not, so each phase also reports how much CPU
other processes took on the two cores ("foreign").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import psycopg

from triograph.storage.sql import COUNTS_ENV, Counts

HERE = pathlib.Path(__file__).resolve().parent
CONFIG = HERE / "langgraph.json"
HOST = "127.0.0.1"
SERVER_CORE = 0
CLIENT_CORE = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    pass


# -- /proc ------------------------------------------------------------------------------------


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


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants (workers), in MiB."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += proc_rss_mib(current)
            todo += proc_children(current)
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


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


def load_average() -> float:
    """The machine's 1-minute load average (how many processes wanted a CPU)."""
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


# -- meters -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Watched:
    """The processes whose CPU a phase measures: the server (its whole process tree) and,
    when it runs on this machine, the database server the storage uses (its whole tree: every
    client's connections, not only the server's)."""

    server: int
    database: int | None = None
    #: where the server's SQL engines count their statements (``TRIOGRAPH_SQL_COUNTS``)
    sql_counts: pathlib.Path | None = None


class Meter:
    """A snapshot of wall time, server and database CPU, this process's CPU and every core's
    busy time."""

    def __init__(self, watched: Watched) -> None:
        self.wall = time.perf_counter()
        self.server = tree_cpu_seconds(watched.server)
        self.database = tree_cpu_seconds(watched.database) if watched.database else None
        self.client = time.process_time()
        self.cores = cpu_busy_seconds()
        self.sql = Counts.read(watched.sql_counts) if watched.sql_counts else {}
        # the worker processes of ``serve --workers N`` (none with one process)
        self.workers = {pid: tree_cpu_seconds(pid) for pid in proc_children(watched.server)}

    def since(self, before: Meter, runs: int) -> dict[str, Any]:
        wall = self.wall - before.wall
        server, client = self.server - before.server, self.client - before.client
        database = (self.database or 0.0) - (before.database or 0.0)
        cores = {c: self.cores[c] - before.cores.get(c, 0.0) for c in self.cores}
        # CPU used on the two cores by processes other than the server, its database and this
        # one: anything well above zero means the machine was not quiet and wall-clock figures
        # suffer (the database is not pinned: on more than two cores it may run elsewhere)
        foreign = cores.get(SERVER_CORE, 0.0) + cores.get(CLIENT_CORE, 0.0) - server - client
        runs = max(runs, 1)
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
        counted = [
            (pid, {k: n - before.sql.get(pid, {}).get(k, 0) for k, n in counts.items()})
            for pid, counts in self.sql.items()
        ]
        if any(counts["calls"] for _, counts in counted):
            # per run: the storage's statements, transactions, round trips, thread hops
            for name in Counts.FIELDS:
                figures[f"sql_{name}_per_run"] = sum(c[name] for _, c in counted) / runs
        if len(self.workers) > 1:
            # each worker: its CPU, and its share of the statements (so of the runs: every
            # run sends as many)
            statements = {pid: c["statements"] for pid, c in counted}
            total = sum(statements.values()) or 1
            figures["workers"] = {
                str(pid): {
                    "cpu_s": cpu - before.workers.get(pid, 0.0),
                    "cpu_util": (cpu - before.workers.get(pid, 0.0)) / wall,
                    "share_of_statements": statements.get(pid, 0) / total,
                }
                for pid, cpu in self.workers.items()
            }
        return figures


def percentiles(samples_s: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds (keys prefixed with ``prefix``)."""
    if not samples_s:
        return {}
    ms = sorted(s * 1000 for s in samples_s)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {
        f"{prefix}p50_ms": pct(50),
        f"{prefix}p90_ms": pct(90),
        f"{prefix}p99_ms": pct(99),
        f"{prefix}mean_ms": statistics.fmean(ms),
        f"{prefix}max_ms": ms[-1],
    }


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


def machine() -> str:
    """One line about the machine: CPU model, cores, memory, kernel."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Linux {os.uname().release}"


def python_build() -> str:
    """The interpreter and how it was built: ``3.13.0 (no PGO, no LTO, libpython shared)``.
    The same code runs several percent faster on a CPython built with profile-guided and
    link-time optimisation (as the python Docker images', Debian's and uv's are; pyenv's
    are not unless asked): compare figures taken on the same build only (bench/README.md)."""
    args = sysconfig.get_config_var("CONFIG_ARGS") or ""
    flags = [
        "PGO" if "--enable-optimizations" in args else "no PGO",
        "LTO" if "--with-lto" in args else "no LTO",
    ]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        flags.append("libpython shared")
    return f"{sys.version.split()[0]} ({', '.join(flags)})"


# -- the floor --------------------------------------------------------------------------------


async def astream_as_served(graph: Any, graph_id: str, graph_input: Any, mode: str) -> Any:
    """One run of ``graph`` as the server asks LangGraph for a stateless run: ``astream`` of
    the stream mode ``mode`` with a run id and metadata, no checkpointer (temporary runs get
    none). Returns the last chunk streamed."""
    run_id = uuid.uuid4()
    config = {
        "configurable": {"graph_id": graph_id},
        "metadata": {"run_id": str(run_id)},
        "run_id": run_id,
        "run_name": graph_id,
    }
    last = None
    async for _mode, chunk in graph.astream(graph_input, config, stream_mode=[mode]):
        last = chunk
    return last


# -- the server -------------------------------------------------------------------------------


def _pin_child() -> None:  # runs in the child between fork and exec: every thread inherits
    os.sched_setaffinity(0, {SERVER_CORE})


def serve_command(
    port: int, storage: str, workers: int = 1, extra: Sequence[str] = ()
) -> list[str]:
    """The ``triograph serve`` command line of the server under test."""
    cmd = [sys.executable, "-m", "triograph.core.http.cli", "serve", "--config", str(CONFIG)]
    cmd += ["--host", HOST, "--port", str(port), "--storage", storage, *extra]
    return [*cmd, "--workers", str(workers)] if workers > 1 else cmd


@contextlib.contextmanager
def server(
    cmd: list[str], pin: bool, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="triograph-bench-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=HERE,
        preexec_fn=_pin_child if pin else None,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
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
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        os.unlink(log.name)


def wait_ready(proc: subprocess.Popen[bytes], base: str, timeout: float = 60.0) -> None:
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


def pinning() -> bool:
    """Whether this machine has the two cores to pin the server and the load apart."""
    return len(os.sched_getaffinity(0)) >= 2 and (os.cpu_count() or 1) >= 2


@contextlib.contextmanager
def serving(
    storage: str, pin: bool, workers: int = 1, extra: Sequence[str] = ()
) -> Iterator[tuple[str, Watched, subprocess.Popen[bytes]]]:
    """A ready server on ``storage``: its base URL, the processes to measure, the process."""
    port = free_port()
    base = f"http://{HOST}:{port}"
    database = local_postgres_pid(storage) if is_postgres(storage) else None
    with (
        tempfile.TemporaryDirectory(prefix="triograph-sql-counts-") as counts,
        server(serve_command(port, storage, workers, extra), pin, {COUNTS_ENV: counts}) as proc,
    ):
        wait_ready(proc, base)
        print(f"server pid {proc.pid} on {base}", file=sys.stderr)
        yield base, Watched(proc.pid, database, pathlib.Path(counts)), proc


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


# -- printing ---------------------------------------------------------------------------------


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


def warn_if_busy(foreign: dict[str, float]) -> None:
    print(
        "CPU used by other processes on the bench cores (should be ~0%): "
        + ", ".join(f"{name} {value:.0%}" for name, value in foreign.items())
    )
    if max(foreign.values(), default=0.0) > 0.1:
        print("WARNING: the machine was not quiet; wall-clock figures are pessimistic")
