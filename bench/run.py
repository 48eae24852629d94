"""Benchmark triograph: the scenarios of the performance goals, one summary table, JSON.

Each scenario starts ``triograph serve`` (memory storage unless told otherwise) pinned to
core 0, drives it from this process pinned to core 1, and stops it; ``--repeat N`` runs
each one N times on a fresh server, and the table gives min, median and max of every
figure with the goal it is held to. Scenarios (``--scenario``, comma separated; all by
default):

- ``wait``: stateless ``POST /runs/wait`` on the echo graph at concurrency 1 and 64, the
  server's CPU per run, ``GET /ok`` alone, the in-process floor (``wait.py``);
- ``streams``: 10,000 streams opened at once on a graph that sleeps 20 s (``streams.py``);
- ``tokens``: chat tokens with ``messages-tuple`` from 16 clients (``tokens.py``);
- ``burst``: 1,000 background ``POST /runs`` from 64 senders (``burst.py``);
- ``slow-readers``: RSS after rounds of clients that never read (``slow_readers.py``).

``--backends`` and ``--scale-out URL`` measure the storage backends and worker processes
(``wait.py``). The table goes to stdout, progress to stderr, the figures as one JSON object
to ``--json PATH`` and as the last line of stdout. Every phase is bounded in requests and
time; the server is killed on exit, also on error.

    .venv/bin/python bench/run.py [--quick] [--repeat 3] [--scenario wait,streams]
    .venv/bin/python bench/run.py --backends [--quick] [--postgres URL]
    .venv/bin/python bench/run.py --scale-out URL [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import burst
import psycopg
import slow_readers
import streams
import tokens
import wait
from harness import (
    CLIENT_CORE,
    BenchError,
    git_state,
    is_postgres,
    load_average,
    machine,
    pinning,
    print_rows,
    python_build,
)

FULL: dict[str, Any] = {
    "c1_warmup": 50,
    "c1": 500,
    "cN_warmup": 200,
    "cN": 3000,
    "floor_warmup": 100,
    "floor": 2000,
    "deadline": 600.0,
    "streams": 10_000,
    "stream_seconds": 20.0,
    "stream_timeout": 600.0,
    "token_clients": 16,
    "token_runs": 160,
    "tokens_per_run": 500,
    "burst_runs": 1000,
    "burst_senders": 64,
    "slow_readers": 200,
    "slow_rounds": 3,
    "slow_tokens": 2000,
    "slow_timeout": 300.0,
}
QUICK: dict[str, Any] = {
    **FULL,
    "c1_warmup": 20,
    "c1": 200,
    "cN_warmup": 64,
    "cN": 500,
    "floor_warmup": 20,
    "floor": 300,
    "deadline": 120.0,
    "streams": 1000,
    "stream_seconds": 5.0,
    "token_runs": 48,
    "burst_runs": 500,
    "slow_readers": 50,
    "slow_rounds": 2,
}
SCENARIOS = ("wait", "streams", "tokens", "burst", "slow-readers")

#: the official server (langgraph-api 0.16.7, same machine, same harness), from the issue
OFFICIAL_COMPLETIONS_PER_S = 120.0


#: (scenario, figure key, label, goal, "<=" or ">=", format); a goal of None is informative
Goal = tuple[str, str, str, float | None, str, str]
GOALS: tuple[Goal, ...] = (
    ("wait", "c1_server_cpu_ms", "wait c=1: server CPU ms/run", 2.0, "<=", "{:.2f}"),
    ("wait", "c64_server_cpu_ms", "wait c=64: server CPU ms/run", 2.0, "<=", "{:.2f}"),
    ("wait", "c1_p50_ms", "wait c=1: p50 ms", 2.5, "<=", "{:.2f}"),
    ("wait", "c64_runs_per_s", "wait c=64: runs/s", None, ">=", "{:.0f}"),
    ("wait", "floor_cpu_ms", "in-process astream: CPU ms/run", None, "<=", "{:.2f}"),
    ("wait", "ok_server_cpu_ms", "GET /ok c=64: server CPU ms", None, "<=", "{:.2f}"),
    ("streams", "failed", "streams: failed (of N)", 0, "<=", "{:.0f}"),
    ("streams", "all_open_s", "streams: all open, s", 30.0, "<=", "{:.1f}"),
    ("streams", "open_1000_s", "streams: 1,000 open, s", 2.0, "<=", "{:.2f}"),
    ("streams", "kib_per_open_stream", "streams: KiB per open stream", 40.0, "<=", "{:.1f}"),
    ("streams", "open_server_cpu_ms_per_stream", "streams: CPU ms per open", None, "<=", "{:.2f}"),
    ("tokens", "tokens_per_s", "tokens: tokens/s (c=16)", 10_000.0, ">=", "{:.0f}"),
    ("tokens", "first_event_p50_ms", "tokens: first event p50 ms", 15.0, "<=", "{:.1f}"),
    ("tokens", "first_token_p50_ms", "tokens: first token p50 ms", None, "<=", "{:.1f}"),
    ("tokens", "server_cpu_us_per_token", "tokens: server CPU us/token", None, "<=", "{:.1f}"),
    ("tokens", "interleaved_tokens_per_s", "tokens interleaved: tokens/s", None, ">=", "{:.0f}"),
    (
        "tokens",
        "interleaved_first_token_p50_ms",
        "tokens interleaved: first token p50 ms",
        None,
        "<=",
        "{:.1f}",
    ),
    (
        "tokens",
        "interleaved_server_cpu_us_per_token",
        "tokens interleaved: CPU us/token",
        None,
        "<=",
        "{:.1f}",
    ),
    ("burst", "submissions_per_s", "burst: submissions/s", 800.0, ">=", "{:.0f}"),
    (
        "burst",
        "completions_per_s",
        "burst: completions/s",
        3 * OFFICIAL_COMPLETIONS_PER_S,
        ">=",
        "{:.0f}",
    ),
    ("slow-readers", "after_over_baseline", "slow readers: RSS after/before", 1.10, "<=", "{:.2f}"),
    ("slow-readers", "peak_over_baseline", "slow readers: peak RSS/before", None, "<=", "{:.2f}"),
)


def _wait(args: argparse.Namespace, plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    raw = wait.run(args, plan, pin)
    return {
        "c1_server_cpu_ms": raw["serial"]["server_cpu_ms_per_run"],
        "c64_server_cpu_ms": raw["concurrent"]["server_cpu_ms_per_run"],
        "c1_p50_ms": raw["serial"]["p50_ms"],
        "c64_runs_per_s": raw["concurrent"]["runs_per_s"],
        "floor_cpu_ms": raw["floor_astream"]["cpu_ms_per_run"],
        "ok_server_cpu_ms": raw["ok_concurrent"]["server_cpu_ms_per_run"],
        "foreign_cpu_util": max(raw[k]["foreign_cpu_util"] for k in ("serial", "concurrent")),
        "raw": raw,
    }


def _streams(args: argparse.Namespace, plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    figures = streams.run(plan, pin, args.max_runs)
    figures["failed"] = figures["streams"] - figures["succeeded"]
    return figures


def _slow(args: argparse.Namespace, plan: dict[str, Any], pin: bool) -> dict[str, Any]:
    figures = slow_readers.run(plan, pin)
    peak = max(v for k, v in figures.items() if k.endswith("_peak_mib"))
    figures["peak_over_baseline"] = peak / figures["rss_baseline_mib"]
    return figures


RUNNERS: dict[str, Callable[[argparse.Namespace, dict[str, Any], bool], dict[str, Any]]] = {
    "wait": _wait,
    "streams": _streams,
    "tokens": lambda args, plan, pin: tokens.run(plan, pin),
    "burst": lambda args, plan, pin: burst.run(plan, pin),
    "slow-readers": _slow,
}


def summarize(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per goal figure over the repetitions: min, median, max, and the verdict of
    the median (every repetition must pass for "met")."""
    rows = []
    for scenario, key, label, goal, sense, fmt in GOALS:
        values = [r[key] for r in results.get(scenario, []) if r.get(key) is not None]
        if scenario not in results:
            continue
        row: dict[str, Any] = {"scenario": scenario, "figure": key, "label": label}
        row |= {"goal": goal, "sense": sense, "format": fmt, "values": values}
        if len(values) < len(results[scenario]):
            row["verdict"] = "MISSING"  # a repetition had no such figure (e.g. never all open)
        elif goal is None:
            row["verdict"] = ""
        else:
            passed = [v <= goal if sense == "<=" else v >= goal for v in values]
            row["verdict"] = "met" if all(passed) else "NOT MET"
        rows.append(row)
    return rows


def print_summary(rows: list[dict[str, Any]], repeat: int) -> None:
    table = [("figure", "min", "median", "max", "goal", "")]
    for row in rows:
        fmt, values = row["format"], row["values"]
        cells = [fmt.format(f(values)) if values else "-" for f in (min, statistics.median, max)]
        goal = "" if row["goal"] is None else f"{row['sense']} {fmt.format(row['goal'])}"
        table.append((row["label"], *cells, goal, row["verdict"]))
    print(f"== summary: {repeat} run(s) of each scenario, min / median / max")
    print_rows(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller scenarios, for development")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario (3)")
    parser.add_argument("--scenario", default=",".join(SCENARIOS), help="comma separated")
    parser.add_argument("--json", metavar="PATH", help="write every figure there as JSON")
    parser.add_argument("--concurrency", type=int, default=64, help="clients of the load phase")
    parser.add_argument("--max-runs", type=int, help="the server's --max-runs in 'streams'")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--storage", default="memory", metavar="SPEC", help="the server's --storage in 'wait'"
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
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(unknown)}; choose among {list(SCENARIOS)}")
    plan = QUICK if args.quick else FULL

    pin = pinning()
    if args.scale_out is not None:
        if not is_postgres(args.scale_out):
            parser.error("--scale-out takes a postgresql:// URL")
        pin = False  # the workers need every core
    elif pin:
        os.sched_setaffinity(0, {CLIENT_CORE})  # before any thread exists: all inherit
    else:
        print("warning: fewer than 2 CPUs available, not pinning", file=sys.stderr)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # thousands of connections
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    out: dict[str, Any] = {"mode": "quick" if args.quick else "full", "pinned": pin}
    out |= {"git": git_state(), "python": python_build(), "machine": machine()}
    out["load_average_before"] = load_average()
    try:
        if args.scale_out is not None:
            out["concurrency"] = args.concurrency
            out["scale_out"] = wait.bench_scale_out(args, plan)
            wait.print_scale_out(out)
        elif args.backends:
            out |= {
                "concurrency": args.concurrency,
                "backends": wait.bench_backends(args, plan, pin),
            }
            wait.print_backends(out)
        else:
            results: dict[str, list[dict[str, Any]]] = {}
            for scenario in scenarios:
                for n in range(args.repeat):
                    print(f"== {scenario} ({n + 1}/{args.repeat})", file=sys.stderr)
                    started = time.monotonic()
                    figures = RUNNERS[scenario](args, plan, pin)
                    figures["load_average"] = load_average()
                    figures["seconds"] = time.monotonic() - started
                    results.setdefault(scenario, []).append(figures)
                    if scenario == "wait" and args.repeat == 1:
                        wait.print_table(figures["raw"])
            out["results"] = results
            out["summary"] = summarize(results)
            print_summary(out["summary"], args.repeat)
            loads = [f["load_average"] for runs in results.values() for f in runs]
            print(
                f"machine: {out['machine']}; load average {min(loads):.1f}-{max(loads):.1f} "
                f"during the runs (2 would be this benchmark alone); checkout {out['git']}, "
                f"Python {out['python']}"
            )
    except (BenchError, psycopg.Error) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(out, sort_keys=True, default=str)
    if args.json:
        pathlib.Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
