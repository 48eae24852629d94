"""What lease fencing costs a run's checkpoints on Postgres.

On Postgres every statement that writes a run's checkpoint, channel values or pending
writes first looks up the run's row (by primary key) and locks it for share, inserting
nothing if another worker owns the run (``storage/pg_graph.py``, ``_OWNED``): no round trip
more, a lookup and a row lock more per statement. This times the same runs through
``PostgresCheckpointer`` with fencing (``owner`` set, each run's row owned by it) and
without (``owner=None``, LangGraph's statements as they are), alternating the two in each
repeat: a graph of three nodes in a line over ``{"log": list}`` (a list: channel values
are blobs, as a chat's messages are), one new thread per run, ``durability="async"`` as the
server runs graphs; once one run at a time, once ``--concurrency`` at a time. Per run: the
wall clock, the CPU of this process (LangGraph and psycopg, client side) and, when the
Postgres server runs on this machine, its CPU (its whole process tree): on a busy machine
the CPU figures are the ones to read.

    .ci/postgres sh -c '.venv/bin/python bench/fencing.py --postgres "$TRIOGRAPH_TEST_POSTGRES"'

It creates a database on that server for the run and drops it after. Prints a table (medians
of the repeats) and the figures as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import operator
import statistics
import time
import uuid
from typing import Annotated, Any

import psycopg
from harness import fresh_postgres_database, local_postgres_pid, tree_cpu_seconds
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from triograph.storage.pg_graph import PostgresCheckpointer
from triograph.storage.postgres import _set_up

OWNER = "bench-worker"


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _graph(checkpointer: PostgresCheckpointer) -> Any:
    def node(name: str) -> Any:
        return lambda state: {"log": [name]}

    return (
        StateGraph(State)
        .add_node("a", node("a"))
        .add_node("b", node("b"))
        .add_node("c", node("c"))
        .add_edge(START, "a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .add_edge("c", END)
        .compile(checkpointer=checkpointer)
    )


def _add_runs(conninfo: str, run_ids: list[str]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO threads (thread_id, status, created_at, updated_at,
                state_updated_at, metadata, "values", doc)
            VALUES ('bench', 'busy', now(), now(), now(), '{}', '{}', '{}')
            ON CONFLICT DO NOTHING"""
        )
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO runs (run_id, thread_id, status, created_at, updated_at, doc,
                    owner) VALUES (%s, 'bench', 'running', now(), now(), '{}', %s)""",
                [(run_id, OWNER) for run_id in run_ids],
            )


async def _phase(
    graph: Any, run_ids: list[str], concurrency: int, db_pid: int | None
) -> dict[str, float]:
    """Milliseconds per run (wall clock, this process's CPU, the database's CPU),
    ``concurrency`` runs at a time."""
    queue = list(run_ids)

    async def worker() -> None:
        while queue:
            run_id = queue.pop()
            config = {"configurable": {"thread_id": run_id}, "metadata": {"run_id": run_id}}
            out = await graph.ainvoke({"log": []}, config, durability="async")
            assert out == {"log": ["a", "b", "c"]}, out

    db = tree_cpu_seconds(db_pid) if db_pid else math.nan
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    per_run = 1000 / len(run_ids)
    return {
        "wall": (time.perf_counter() - began) * per_run,
        "cpu": (time.process_time() - cpu) * per_run,
        "db_cpu": ((tree_cpu_seconds(db_pid) - db) if db_pid else math.nan) * per_run,
    }


async def _measure(
    conninfo: str, runs: int, repeat: int, concurrency: int, db_pid: int | None
) -> dict[str, Any]:
    fenced = PostgresCheckpointer(conninfo, owner=OWNER)
    plain = PostgresCheckpointer(conninfo)
    graphs = {"fenced": _graph(fenced), "unfenced": _graph(plain)}
    phases = {"c=1": 1, f"c={concurrency}": concurrency}
    figures: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {label: [] for label in phases} for name in graphs
    }
    try:
        for graph in graphs.values():  # warm-up: pools, prepared plans
            ids = [str(uuid.uuid4()) for _ in range(20)]
            await asyncio.to_thread(_add_runs, conninfo, ids)
            await _phase(graph, ids, 1, None)
            stored = await graph.aget_state({"configurable": {"thread_id": ids[0]}})
            assert stored.values == {"log": ["a", "b", "c"]}, stored  # written, fenced or not
        for _ in range(repeat):
            for name, graph in graphs.items():
                for label, c in phases.items():
                    ids = [str(uuid.uuid4()) for _ in range(runs)]
                    await asyncio.to_thread(_add_runs, conninfo, ids)
                    figures[name][label].append(await _phase(graph, ids, c, db_pid))
    finally:
        for saver in (fenced, plain):
            if saver.pool is not None:
                await saver.pool.close()
    return {
        name: {
            label: {key: statistics.median(v[key] for v in values) for key in values[0]}
            for label, values in by_phase.items()
        }
        for name, by_phase in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="a server's URL (a database to connect)")
    parser.add_argument("--runs", type=int, default=300, help="runs per phase")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with fresh_postgres_database(args.postgres) as url:
        _set_up(url, None)
        db_pid = local_postgres_pid(url)
        result = asyncio.run(_measure(url, args.runs, args.repeat, args.concurrency, db_pid))
    labels = list(result["fenced"])
    keys = ("wall", "cpu", "db_cpu")
    columns = [(label, key) for label in labels for key in keys]
    print(f"{'ms per run':<12}" + "".join(f"{label + ' ' + key:>16}" for label, key in columns))
    for variant, by_phase in result.items():
        print(f"{variant:<12}" + "".join(f"{by_phase[x][k]:>16.3f}" for x, k in columns))
    cost = [result["fenced"][x][k] - result["unfenced"][x][k] for x, k in columns]
    print(f"{'fenced - un':<12}" + "".join(f"{c:>+16.3f}" for c in cost))
    print(json.dumps({"bench": "fencing", "runs": args.runs, "repeat": args.repeat, **result}))


if __name__ == "__main__":
    main()
