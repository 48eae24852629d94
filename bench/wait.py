"""Stateless ``POST /runs/wait`` on a 3-node echo graph: latency at concurrency 1,
throughput at concurrency 64, the server's CPU per run, the same two loads on ``GET /ok``
(the HTTP stack alone), and the in-process floor (the same graph run with
``graph.ainvoke``, and with ``astream`` as the server runs it). ``--backends`` runs the two
run phases on each storage backend; ``--scale-out`` compares one and two worker processes
on Postgres. Every response is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import sys
import tempfile
import time
from typing import Any

import httpx
from harness import (
    CLIENT_CORE,
    HERE,
    SERVER_CORE,
    BenchError,
    Meter,
    Watched,
    astream_as_served,
    cpu_busy_seconds,
    fresh_postgres_database,
    percentiles,
    print_rows,
    proc_rss_mib,
    remaining,
    serving,
    thread_affinities,
    warn_if_busy,
)

from triograph.core.infra.graph_bridge import new_graph_loop

GRAPH_ID = "echo"
BODY = {"assistant_id": GRAPH_ID, "input": {"msg": "hello", "n": 0}}
EXPECTED = {"msg": "hello", "n": 3}
#: (method, path, JSON body) of the requests of a phase: a run, and the HTTP stack alone
RUN = ("POST", "/runs/wait", BODY)
OK = ("GET", "/ok", None)
Probe = tuple[str, str, dict[str, Any] | None]
OFFICIAL = "official server: ~1 s p50 at concurrency 1, ~6.4 ms server CPU per run"


def check_response(response: httpx.Response, probe: Probe = RUN) -> None:
    method, path, _ = probe
    if response.status_code != 200:
        raise BenchError(f"{method} {path} -> {response.status_code}: {response.text[:300]}")
    if probe is RUN and (body := response.json()) != EXPECTED:
        raise BenchError(f"unexpected {path} body: {body!r}")


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

        async def once() -> Any:
            return await astream_as_served(graph, GRAPH_ID, inp, "values")
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
    # on the event loop the server runs its graphs on (uvloop's where it is installed)
    with asyncio.Runner(loop_factory=new_graph_loop) as runner:
        return runner.run(_floor(warmup, count, as_served))


# -- the scenarios ----------------------------------------------------------------------------


def run(args: argparse.Namespace, plan: dict[str, Any], pin: bool) -> dict[str, Any]:
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
            if workers == 1:  # the load each of two workers gets (its half of the clients)
                figures["workers_1_half"] = phase_concurrent(
                    base, watched, args.concurrency // 2, plan["cN_warmup"], plan["cN"], deadline
                )
    one, two = figures["workers_1"]["runs_per_s"], figures["workers_2"]["runs_per_s"]
    figures["ratio"] = two / one
    # what two workers can do over one, from the CPU each spends per run (two workers, each
    # on a core of its own, at that cost): not hostage to what else the machine runs
    cpu_one = figures["workers_1"]["server_cpu_ms_per_run"]
    cpu_two = figures["workers_2"]["server_cpu_ms_per_run"]
    figures["cpu_ratio"] = 2 * cpu_one / cpu_two
    # the same with one worker under the load each of the two had: a worker serving fewer
    # clients at once does less of its work in batches, and spends more CPU per run
    figures["cpu_ratio_same_load"] = (
        2 * figures["workers_1_half"]["server_cpu_ms_per_run"] / cpu_two
    )
    return figures


def print_scale_out(results: dict[str, Any]) -> None:
    rows = [("workers", "runs/s", "server CPU ms/run", "DB CPU ms/run", "p50 ms", "round trips")]
    each = [("worker of 2", "runs/s", "CPU ms/run", "CPU util")]
    scale_out = results["scale_out"]
    n = results.get("concurrency", 64)
    for name, label in (("1", f"1, c={n}"), ("1_half", f"1, c={n // 2}"), ("2", f"2, c={n}")):
        f = scale_out[f"workers_{name}"]
        rows.append(
            (
                label,
                f"{f['runs_per_s']:.0f}",
                f"{f['server_cpu_ms_per_run']:.2f}",
                _ms(f, "database_cpu_ms_per_run"),
                f"{f['p50_ms']:.1f}",
                _per_run(f, "round_trips"),
            )
        )
        for pid, w in f.get("workers", {}).items():
            runs = w["share_of_statements"] * f["requests"]
            each.append(
                (
                    f"pid {pid}",
                    f"{w['share_of_statements'] * f['runs_per_s']:.0f}",
                    f"{w['cpu_s'] * 1000 / runs:.2f}" if runs else "-",
                    f"{w['cpu_util']:.0%}",
                )
            )
    print_rows(rows)
    if len(each) > 1:
        print("each worker (its runs: its share of the statements, every run sends as many):")
        print_rows(each)
    print(
        f"2 workers / 1: throughput x{scale_out['ratio']:.2f} (wall clock, on this machine), "
        f"x{scale_out['cpu_ratio']:.2f} from the CPU per run (2 x one worker's / two's), "
        f"x{scale_out['cpu_ratio_same_load']:.2f} against one worker with c={n // 2}"
    )


# -- report -----------------------------------------------------------------------------------


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
    print(OFFICIAL)


def _ms(f: dict[str, Any], key: str) -> str:
    return f"{f[key]:.2f}" if key in f else "-"


def _per_run(f: dict[str, Any], name: str) -> str:
    key = f"sql_{name}_per_run"
    return f"{f[key]:.2f}" if key in f else "-"


def print_sql(backends: dict[str, Any], n: int) -> None:
    """What the storage sent per run, counted by the server (``TRIOGRAPH_SQL_COUNTS``)."""
    rows = [("backend", "phase", "statements", "transactions", "round trips", "thread hops")]
    for name, f in backends.items():
        for phase, key in (("c=1", "serial"), (f"c={n}", "concurrent")):
            if "sql_calls_per_run" in f[key]:
                counted = [_per_run(f[key], k) for k in ("statements", "transactions")]
                trips = _per_run(f[key], "round_trips") if name == "postgres" else "-"
                rows.append((name, phase, *counted, trips, _per_run(f[key], "calls")))
    if len(rows) > 1:
        print("SQL per run (the server's own count: transactions are explicit ones, a single")
        print("statement is its own; round trips to Postgres; hops into a worker thread):")
        print_rows(rows)


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
    print_sql(backends, n)
    warn_if_busy(
        {
            f"{name} {phase}": f[key]["foreign_cpu_util"]
            for name, f in backends.items()
            for phase, key in (("c=1", "serial"), (f"c={n}", "concurrent"))
        }
    )
    print(f"checkout {results['git']}, Python {results['python']}")
