"""What custom auth costs: ``POST /runs/wait`` (stateless, the echo graph) and ``GET /info``
on a server without auth and on one serving ``examples/auth/auth.py`` (an HS256
JWT checked by an ``async`` authenticate handler on the graph loop, an ``@auth.on`` handler
stamping the owner and answering a filter), each at concurrency 1.

Reuses ``bench/run.py``'s server, pinning and meters; prints a table and the figures as
JSON on the last line.

    .venv/bin/python bench/auth.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import httpx
import jwt
import run as bench

SECRET = "bench-secret-of-at-least-32-bytes-long!!"
AUTHED = bench.HERE / "auth" / "langgraph.json"
INFO: bench.Probe = ("GET", "/info", None)


def serial(
    base: str, watched: bench.Watched, probe: bench.Probe, headers: dict[str, str], count: int
) -> dict[str, Any]:
    """Concurrency 1 on one keep-alive connection, with ``headers`` on every request."""
    method, path, body = probe
    samples: list[float] = []
    with httpx.Client(base_url=base, timeout=30.0, headers=headers) as client:
        for _ in range(max(count // 10, 20)):
            bench.check_response(client.request(method, path, json=body), probe)
        before = bench.Meter(watched)
        for _ in range(count):
            start = time.perf_counter()
            response = client.request(method, path, json=body)
            samples.append(time.perf_counter() - start)
            bench.check_response(response, probe)
        after = bench.Meter(watched)
    return {**after.since(before, count), **bench.percentiles(samples)}


def measure(config: str, headers: dict[str, str], count: int) -> dict[str, Any]:
    port = bench.free_port()
    base = f"http://{bench.HOST}:{port}"
    cmd = bench.serve_command(port, "memory")
    cmd[cmd.index("--config") + 1] = config
    with bench.server(cmd, pin=True) as proc:
        bench.wait_ready(proc, base)
        return {
            "runs": serial(base, bench.Watched(proc.pid), bench.RUN, headers, count),
            "info": serial(base, bench.Watched(proc.pid), INFO, headers, count),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    args = parser.parse_args(argv)
    count = 200 if args.quick else 1000
    token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600}, SECRET, "HS256")
    results = {
        "open": measure(str(bench.CONFIG), {}, count),
        "auth": measure(str(AUTHED), {"Authorization": f"Bearer {token}"}, count),
    }
    rows = [("", "p50 ms", "p99 ms", "server CPU ms/req", "foreign CPU")]
    for name, phases in results.items():
        for probe, f in phases.items():
            rows.append(
                (
                    f"{name} {probe}",
                    f"{f['p50_ms']:.2f}",
                    f"{f['p99_ms']:.2f}",
                    f"{f['server_cpu_ms_per_run']:.2f}",
                    f"{f['foreign_cpu_util']:.2f}",
                )
            )
    bench.print_rows(rows)
    print(json.dumps(results), file=sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
