"""Benchmark cancel latency: from the cancel request to the run's terminal status.

Serves ``examples/langgraph.json`` in this process (Hypercorn on 127.0.0.1, a free port,
memory storage; the client shares the Trio loop) and measures ``POST
/threads/{tid}/runs/{rid}/cancel?wait=1``, which answers once the run has recorded its
outcome (run status, thread status, hooks), for:

* a running run: a ``slow`` run asleep in its first node (the cancel crosses the asyncio
  bridge, LangGraph unwinds, the thread status is recomputed from the checkpointer);
* a pending run: queued behind a running run of its thread (it never starts).

Each sample uses a fresh thread; the status is checked after each cancel. Prints a table,
then the figures as JSON on the last line of stdout. Bounded in samples and time.

    /tmp/v13/bin/python bench/cancel.py [--samples N]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import httpx
import trio

from triograph.core.http.app import create_app, serve_app
from triograph.core.infra.settings import load_settings

CONFIG = pathlib.Path(__file__).resolve().parent.parent / "examples" / "langgraph.json"
#: seconds per node of the runs that get cancelled: they never end on their own
FOREVER = {"assistant_id": "slow", "input": {"delay": 3600}}
#: seconds the whole benchmark may take
DEADLINE = 300.0


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (at most 10 s): the status lives server-side."""
    with trio.fail_after(10):
        while True:
            if await check():
                return
            await trio.sleep(0.005)


async def status(http: httpx.AsyncClient, tid: str, rid: str) -> str:
    return (await http.get(f"/threads/{tid}/runs/{rid}")).json()["status"]  # type: ignore[no-any-return]


async def running_run(http: httpx.AsyncClient) -> tuple[str, str]:
    """A thread and a run of it that is inside its first node (its input is saved)."""
    tid = (await http.post("/threads", json={})).json()["thread_id"]
    rid = (await http.post(f"/threads/{tid}/runs", json=FOREVER)).json()["run_id"]

    async def in_node() -> bool:
        state = (await http.get(f"/threads/{tid}/state")).json()
        return bool(state["next"])

    await until(in_node)
    return tid, rid


async def cancel(http: httpx.AsyncClient, tid: str, rid: str) -> float:
    """Seconds from sending the cancel to the answer (sent once the outcome is recorded)."""
    start = time.perf_counter()
    r = await http.post(f"/threads/{tid}/runs/{rid}/cancel", params={"wait": "1"})
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    if (got := await status(http, tid, rid)) != "interrupted":
        raise RuntimeError(f"run {rid} is {got} after its cancel")
    return elapsed


async def sample_running(http: httpx.AsyncClient) -> float:
    return await cancel(http, *await running_run(http))


async def sample_pending(http: httpx.AsyncClient) -> float:
    tid, first = await running_run(http)
    queued = (await http.post(f"/threads/{tid}/runs", json=FOREVER)).json()["run_id"]
    elapsed = await cancel(http, tid, queued)
    await cancel(http, tid, first)
    return elapsed


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, round(p / 100 * (len(ms) - 1)))]

    return {"p50_ms": pct(50), "p95_ms": pct(95), "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


@attrs.define
class Bench:
    samples: int
    results: dict[str, Any] = attrs.Factory(dict)

    async def measure(self, base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30.0) as http:
            for name, sample in (("running", sample_running), ("pending", sample_pending)):
                for _ in range(3):  # warm-up
                    await sample(http)
                times = [await sample(http) for _ in range(self.samples)]
                self.results[name] = {"samples": self.samples, **percentiles(times)}
                print(f"{name}: done", file=sys.stderr)

    async def main(self) -> None:
        app = create_app(load_settings(CONFIG, shutdown_grace=0.0))
        stop = trio.Event()
        with trio.fail_after(DEADLINE):
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    lambda task_status: serve_app(
                        app, port=0, shutdown_trigger=stop.wait, task_status=task_status
                    )
                )
                try:
                    await self.measure(urls[0])
                finally:
                    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50, help="cancels of each kind")
    args = parser.parse_args(argv)
    bench = Bench(samples=args.samples)
    trio.run(bench.main)
    print(f"{'run':<10}{'n':>5}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, r in bench.results.items():
        print(
            f"{name:<10}{r['samples']:>5}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{r['max_ms']:>10.2f}"
        )
    print(json.dumps(bench.results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
