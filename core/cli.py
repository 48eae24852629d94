"""``triograph dev`` and ``triograph serve``."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence

import attrs
import trio

from triograph.core.errors import TriographError

#: where ``triograph serve`` keeps everything unless told otherwise: under the working directory
SERVE_STORAGE = "file:./triograph.sqlite"


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from hypercorn.utils import LifespanFailureError

    from triograph.core.app import create_app, serve_app
    from triograph.core.settings import load_settings

    try:
        settings = load_settings(args.config, storage=args.storage, max_runs=args.max_runs)
        if args.plugin:
            settings = attrs.evolve(settings, plugins=(*settings.plugins, *args.plugin))
        app = create_app(settings)  # fails here, before serving, on any configuration error
    except TriographError as exc:
        print(f"triograph: {exc.message}", file=sys.stderr)
        return 2

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            start = functools.partial(serve_app, app, host=args.host, port=args.port)
            for url in await nursery.start(start):
                print(f"triograph serving {url}  (storage: {settings.storage})", flush=True)

    refused: list[str] = []
    try:
        trio.run(run)
    except* LifespanFailureError as group:  # start-up failed after all: storage would not open
        refused = [str(exc) for exc in _leaves(group)]
    if refused:
        print(f"triograph: {'; '.join(refused)}", file=sys.stderr)
        return 2
    return 0


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    return [
        e
        for sub in group.exceptions
        for e in (_leaves(sub) if isinstance(sub, BaseExceptionGroup) else [sub])
    ]


if __name__ == "__main__":
    sys.exit(main())
