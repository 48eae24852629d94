"""Fixtures: a real triograph server on 127.0.0.1:0, and the official SDK clients for it.

The server runs in the test's Trio nursery. ``langgraph_sdk`` is asyncio/httpx code, so the
SDK calls run in a worker thread: the sync client directly, the async client under its own
``asyncio.run`` (see ``tests/sdk.py``).

``TRIOGRAPH_TEST_STORAGE`` picks the backend of the servers ``example_settings()`` describes:
``memory`` (the default) or ``file``, a fresh database under the test's ``tmp_path`` for each
call, so the whole suite runs on either: ``TRIOGRAPH_TEST_STORAGE=file pytest``.
"""

from __future__ import annotations

import itertools
import os
import pathlib
from collections.abc import AsyncIterator, Callable, Iterator

import attrs
import pytest
import trio

from tests.sdk import Server
from triograph.core.app import app_core, create_app, serve_app
from triograph.core.context import Core
from triograph.core.settings import Settings, load_settings

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_STORAGE = os.environ.get("TRIOGRAPH_TEST_STORAGE", "memory")
if TEST_STORAGE not in ("memory", "file"):
    raise pytest.UsageError(f"TRIOGRAPH_TEST_STORAGE={TEST_STORAGE!r}: expected memory or file")

#: the storage spec of each ``example_settings()`` call; set per test by ``test_storage``
_storage_specs: Iterator[str] = itertools.repeat("memory")


@pytest.fixture(autouse=True)
def test_storage(request: pytest.FixtureRequest) -> Iterator[None]:
    """On the file backend, each ``example_settings()`` of the test gets a new database."""
    global _storage_specs
    if TEST_STORAGE == "file":
        tmp_path: pathlib.Path = request.getfixturevalue("tmp_path")
        _storage_specs = (f"file:{tmp_path / f'triograph-{n}.sqlite'}" for n in itertools.count())
    try:
        yield
    finally:
        _storage_specs = itertools.repeat("memory")


def example_settings(**overrides: object) -> Settings:
    settings = load_settings(EXAMPLES / "langgraph.json", storage=next(_storage_specs))
    return attrs.evolve(settings, **overrides) if overrides else settings


async def start_server(
    nursery: trio.Nursery, settings: Settings, *, prepare: Callable[[Core], None] | None = None
) -> AsyncIterator[Server]:
    """Serve ``settings`` on 127.0.0.1:0 for the block; ``prepare(core)`` runs before the
    server starts (to register a plugin that must see start-up, say)."""
    app = create_app(settings)
    if prepare is not None:
        prepare(app_core(app))
    stop, stopped = trio.Event(), trio.Event()

    async def run(*, task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve_app(
                app, host="127.0.0.1", port=0, shutdown_trigger=stop.wait, task_status=task_status
            )
        finally:
            stopped.set()

    urls = await nursery.start(run)
    server = Server(url=urls[0], core=app_core(app), stop=stop, stopped=stopped)
    try:
        yield server
    finally:
        stop.set()
        with trio.move_on_after(15):
            await stopped.wait()


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    """The examples' graphs on the test backend, with a short heartbeat for wire tests."""
    async for s in start_server(
        nursery, example_settings(heartbeat_interval=1.0, shutdown_grace=0.5)
    ):
        yield s
