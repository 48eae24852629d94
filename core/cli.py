"""``triograph dev`` and ``triograph serve``."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence

import trio

from triograph.core.errors import TriographError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="triograph", description="Serve LangGraph graphs over the LangGraph Agent Server API."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("dev", "serve for development (memory storage by default)"),
        ("serve", "serve for production"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", default="langgraph.json", help="path of langgraph.json")
        cmd.add_argument("--host", default="127.0.0.1")
        cmd.add_argument("--port", type=int, default=2024)
        cmd.add_argument(
            "--storage",
            default=os.environ.get("TRIOGRAPH_STORAGE", "memory"),
            help="memory | file:PATH | postgresql://... (default: memory, or $TRIOGRAPH_STORAGE)",
        )
        cmd.add_argument("--plugin", action="append", default=[], help="plugin module to load")
        cmd.add_argument("--max-runs", type=int, default=None, help="runs executing at once")
        cmd.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from triograph.core.app import serve
    from triograph.core.settings import load_settings

    try:
        settings = load_settings(args.config, storage=args.storage, max_runs=args.max_runs)
        if args.plugin:
            import attrs

            settings = attrs.evolve(settings, plugins=(*settings.plugins, *args.plugin))

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                start = functools.partial(serve, settings, host=args.host, port=args.port)
                urls = await nursery.start(start)
                for url in urls:
                    print(f"triograph serving {url}  (storage: {settings.storage})", flush=True)

        trio.run(run)
    except TriographError as exc:
        print(f"triograph: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
