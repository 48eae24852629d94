"""``triograph dev`` and ``triograph serve``.

``serve --workers N`` reserves the port, then starts N worker processes (``serve
--reuse-port``), each a whole server on the shared (Postgres) storage listening on that port
with ``SO_REUSEPORT``, so the kernel spreads the connections over them; the parent forwards
SIGINT/SIGTERM to them and exits with the worst of their exit codes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

import attrs
import trio

from triograph.core.http import logs
from triograph.core.http.logs import LOG_FORMATS
from triograph.core.infra import heap
from triograph.core.infra.errors import TriographError
from triograph.core.infra.storage import backend_name

#: where ``triograph serve`` keeps everything unless told otherwise: under the working directory
SERVE_STORAGE = "file:./triograph.sqlite"
#: backends one process at a time uses (the lifespan refuses any other without a cluster)
SINGLE_PROCESS = ("memory", "file")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triograph", description="Serve LangGraph graphs over the LangGraph Agent Server API."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, storage in (
        ("dev", "serve for development (memory storage by default)", "memory"),
        ("serve", "serve for production (a SQLite file by default)", SERVE_STORAGE),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default="langgraph.json", help="path of langgraph.json")
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=2024)
        cmd.add_argument(
            "--storage",
            default=os.environ.get("TRIOGRAPH_STORAGE", storage),
            help=f"memory | file:PATH | postgresql://... (default: {storage}, or "
            "$TRIOGRAPH_STORAGE)",
        )
        cmd.add_argument("--plugin", action="append", default=[], help="plugin module to load")
        cmd.add_argument("--max-runs", type=int, default=None, help="runs executing at once")
        cmd.add_argument("--log-level", default="INFO")
        cmd.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default="plain",
            help="one line per record: plain text (default) or a JSON object",
        )
        if name == "serve":
            cmd.add_argument(
                "--workers",
                type=int,
                default=1,
                help="worker processes sharing the port (needs postgresql:// storage)",
            )
            cmd.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
            cmd.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    heap.use_c_allocator(argv)  # memory freed after a burst goes back to the system
    args = _parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    # Hypercorn's "Running on ..." comes before the start-up is known to have worked; the
    # "triograph serving ..." line below comes after
    logging.getLogger("hypercorn.error").addFilter(_not_running_on)
    from hypercorn.utils import LifespanFailureError

    from triograph.core.http import server
    from triograph.core.http.app import app_core, create_app, serve_app
    from triograph.core.infra.settings import load_settings

    workers = getattr(args, "workers", 1)
    if workers < 1:
        print("triograph: --workers must be 1 or more", file=sys.stderr)
        return 2
    try:
        settings = load_settings(
            args.config, storage=args.storage, max_runs=args.max_runs, workers=workers
        )
        if args.plugin:
            settings = attrs.evolve(settings, plugins=(*settings.plugins, *args.plugin))
        app = create_app(settings)  # fails here, before serving, on any configuration error
    except TriographError as exc:
        print(f"triograph: {exc.message}", file=sys.stderr)
        return 2
    worker = getattr(args, "reuse_port", False)  # one of the processes of ``--workers``
    ready_fd = getattr(args, "ready_fd", None)
    if workers > 1 and backend_name(settings.storage) in SINGLE_PROCESS:
        print(
            f"triograph: --workers {workers} needs a storage shared by processes "
            f"(--storage postgresql://...); {settings.storage!r} is used by one process only",
            file=sys.stderr,
        )
        return 2
    if workers > 1 and not worker:
        return _supervise_workers(list(argv if argv is not None else sys.argv[1:]), args)
    server.raise_open_file_limit()  # one descriptor per connection

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(
                serve_app, app, host=args.host, port=args.port, reuse_port=worker
            )
            for url in await nursery.start(start):
                if not worker:
                    print(f"triograph serving {url}  (storage: {settings.storage})", flush=True)
            if ready_fd is not None:  # a worker of ``--workers``: tell the parent
                os.write(ready_fd, b".")
                os.close(ready_fd)

    refused: list[str] = []
    try:
        trio.run(run)
    except* TriographError as group:  # refused before serving: the port is in use, ...
        refused = [exc.message for exc in _leaves(group) if isinstance(exc, TriographError)]
    except* LifespanFailureError as group:  # start-up failed after all: storage would not open
        failure = app_core(app).startup_failure
        refused = [failure] if failure else [str(exc) for exc in _leaves(group)]
    if refused:
        # one line, whatever the driver said (psycopg's messages span several)
        print(f"triograph: {' '.join('; '.join(refused).split())}", file=sys.stderr)
        return 2
    return 0


def _supervise_workers(argv: list[str], args: argparse.Namespace) -> int:
    """Reserve ``--host``/``--port`` (a socket bound with ``SO_REUSEPORT`` that does not
    listen: the kernel hands it no connection), start ``--workers`` processes listening
    there, and wait for them. A signal is passed on to every worker; a worker that fails
    stops the others. Returns the worst exit code."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    reserved = socket.socket(family, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((args.host, args.port))
    host, port = reserved.getsockname()[:2]
    ready, told = os.pipe()
    command = [sys.executable, "-m", "triograph.core.http.cli", *argv, "--port", str(port)]
    command += ["--reuse-port", "--ready-fd", str(told)]
    workers = [subprocess.Popen(command, pass_fds=(told,)) for _ in range(args.workers)]
    os.close(told)

    def stop(signum: int, _frame: object = None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with os.fdopen(ready, "rb") as reports:  # a byte from each worker once it serves
        serving = len(reports.read(args.workers))
    reserved.close()  # the workers hold the port now
    if serving < args.workers:  # one exited first (each has said why)
        stop(signal.SIGTERM)
        return max(abs(int(worker.wait())) for worker in workers) or 1
    where = f"[{host}]" if family == socket.AF_INET6 else host
    print(
        f"triograph serving http://{where}:{port}  (storage: {args.storage}, "
        f"{args.workers} workers)",
        flush=True,
    )
    while any(worker.poll() is None for worker in workers):
        if any(worker.returncode for worker in workers):
            stop(signal.SIGTERM)
        time.sleep(0.2)
    return max(abs(int(worker.returncode)) for worker in workers)


def _not_running_on(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Running on ")


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    return [
        e
        for sub in group.exceptions
        for e in (_leaves(sub) if isinstance(sub, BaseExceptionGroup) else [sub])
    ]


if __name__ == "__main__":
    sys.exit(main())
