"""What lease fencing costs a run's checkpoints on Postgres.

On Postgres every statement that writes a run's checkpoint, channel values or pending
writes first looks up the run's row (by primary key) and locks it for share, inserting
nothing if another worker owns the run (``storage/pg_graph.py``, ``_OWNED``): no round trip
more, a lookup and a row lock more per statement. This times the same runs through
``PostgresCheckpointer`` with fencing (``owner`` set, each run's row owned by it) and
without (``owner=None``, LangGraph's statements as they are), alternating the two in each
repeat: a graph of three nodes in a line over ``{"log": list}`` (a list: channel values
are blobs, as a chat's messages are), one new thread per run, ``durability="async"`` as the
server runs graphs; once one run at a time, once ``--concurrency`` at a time.

    .ci/postgres sh -c '.venv/bin/python bench/fencing.py --postgres "$TRIOGRAPH_TEST_POSTGRES"'

It creates a database on that server for the run and drops it after. Prints a table and the
figures as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import statistics
import time
import uuid
from typing import Annotated, Any

import psycopg
from langgraph.graph import END, START, StateGraph
from psycopg.conninfo import conninfo_to_dict, make_conninfo
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


async def _phase(graph: Any, run_ids: list[str], concurrency: int) -> float:
    """Milliseconds per run, ``concurrency`` runs at a time."""
    queue = list(run_ids)

    async def worker() -> None:
        while queue:
            run_id = queue.pop()
            config = {"configurable": {"thread_id": run_id}, "metadata": {"run_id": run_id}}
            out = await graph.ainvoke({"log": []}, config, durability="async")
            assert out == {"log": ["a", "b", "c"]}, out

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.perf_counter() - began) * 1000 / len(run_ids)


async def _measure(conninfo: str, runs: int, repeat: int, concurrency: int) -> dict[str, Any]:
    fenced = PostgresCheckpointer(conninfo, owner=OWNER)
    plain = PostgresCheckpointer(conninfo)
    graphs = {"fenced": _graph(fenced), "unfenced": _graph(plain)}
    figures: dict[str, dict[str, list[float]]] = {
        name: {"c=1": [], f"c={concurrency}": []} for name in graphs
    }
    try:
        for graph in graphs.values():  # warm-up: pools, prepared plans
            ids = [str(uuid.uuid4()) for _ in range(20)]
            await asyncio.to_thread(_add_runs, conninfo, ids)
            await _phase(graph, ids, 1)
            stored = await graph.aget_state({"configurable": {"thread_id": ids[0]}})
            assert stored.values == {"log": ["a", "b", "c"]}, stored  # written, fenced or not
        for _ in range(repeat):
            for name, graph in graphs.items():
                for label, c in (("c=1", 1), (f"c={concurrency}", concurrency)):
                    ids = [str(uuid.uuid4()) for _ in range(runs)]
                    await asyncio.to_thread(_add_runs, conninfo, ids)
                    figures[name][label].append(await _phase(graph, ids, c))
    finally:
        for saver in (fenced, plain):
            if saver.pool is not None:
                await saver.pool.close()
    return {
        name: {label: statistics.median(values) for label, values in by_phase.items()}
        for name, by_phase in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True, help="a server's URL (a database to connect)")
    parser.add_argument("--runs", type=int, default=300, help="runs per phase")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    name = f"triograph_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    conninfo = make_conninfo(args.postgres, dbname=name)
    try:
        _set_up(conninfo, None)
        result = asyncio.run(_measure(conninfo, args.runs, args.repeat, args.concurrency))
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    labels = list(result["fenced"])
    print(
        f"{'ms per run (median of ' + str(args.repeat) + ')':<28}"
        + "".join(f"{x:>12}" for x in labels)
    )
    for variant, by_phase in result.items():
        print(f"{variant:<28}" + "".join(f"{by_phase[x]:>12.3f}" for x in labels))
    cost = {x: result["fenced"][x] - result["unfenced"][x] for x in labels}
    print(f"{'fencing costs':<28}" + "".join(f"{cost[x]:>+12.3f}" for x in labels))
    server = conninfo_to_dict(args.postgres).get("host", "")
    print(json.dumps({"bench": "fencing", "server": server, "runs": args.runs, **result}))


if __name__ == "__main__":
    main()
